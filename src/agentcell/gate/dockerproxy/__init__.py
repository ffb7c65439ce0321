"""The docker proxy process: ``python3 -m agentcell.gate.dockerproxy``.

Present in a cell only when its agent may manage containers: it stands between the
agent (``DOCKER_HOST=tcp://<proxy>:2375``) and the engine's socket, and lets the agent
run, inspect, exec into and remove its own children and nothing else. Every request is
decided by ``agentcell.policy`` (``_dockerapi``, ``_enginejson``, ``_childbody``); the
IO and the order of the steps are in ``_proxy``. One JSON decision record per
request on stdout; lifecycle messages on stderr. Settings: ``_config``.
SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import asyncio
import os
import sys

from agentcell.gate._listen import SidecarConfigError
from agentcell.gate._records import log
from agentcell.gate.dockerproxy._config import DockerProxyConfig

__all__ = ["main", "serve"]


async def serve(config: DockerProxyConfig) -> int:
    """Run the proxy until SIGTERM/SIGINT; 0 on a clean stop, 2 if it cannot start."""
    from agentcell.gate._acceptor import Acceptor, drain, listen, stop_on_signals, where
    from agentcell.gate.dockerproxy._proxy import DockerProxy
    from agentcell.gate.dockerproxy._records import DockerRecordWriter

    try:
        sock = listen(*config.listen)
    except OSError as e:
        log(f"cannot start: docker proxy port {config.listen}: {e}")
        return 2
    proxy = DockerProxy(config, DockerRecordWriter(config.tenant, config.cell))
    stop = stop_on_signals()
    tasks: set[asyncio.Task[None]] = set()
    acceptor = Acceptor(sock, proxy.handle, "dockerproxy", tasks)
    log(
        f"docker proxy started: listen={where(sock)} engine={config.engine_socket} "
        f"tenant={config.tenant} cell={config.cell} network={config.network}"
    )
    await stop.wait()
    log("docker proxy stopping")
    acceptor.close()
    await drain(tasks)
    proxy.close()
    return 0


def main() -> int:
    """Run the docker proxy; 0 on a clean stop, 2 if it cannot start."""
    try:
        config = DockerProxyConfig.from_env(os.environ)
    except SidecarConfigError as e:
        log(f"cannot start: {e}")
        return 2
    if "ssl" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # no TLS here: keep RSS down
    return asyncio.run(serve(config))
