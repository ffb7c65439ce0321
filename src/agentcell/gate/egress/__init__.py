"""The egress gate process: ``python3 -m agentcell.gate.egress``.

A cell's only way out. It listens on two ports:

- the proxy port (``AGENTCELL_PROXY_LISTEN``, default ``0.0.0.0:3128``): plain HTTP
  proxying and CONNECT tunnels, each decided by ``agentcell.policy`` (see
  ``_proxy``); one JSON decision record per request on stdout;
- the control port (``AGENTCELL_CONTROL_LISTEN``, ``IP:PORT`` or
  ``subnet:CIDR:PORT``): ``PUT /v1/policy`` with a bearer token
  (``AGENTCELL_GATE_TOKEN``) loads a policy live (see ``_control``).

It starts with no policy and denies everything until one is loaded. Other settings:
``AGENTCELL_TENANT`` and ``AGENTCELL_CELL`` (for records), ``AGENTCELL_OWN_NETWORKS``
(CIDRs that are the gate's or the cell's own: always denied), ``AGENTCELL_CELL_NETWORKS``
(the subnet pool, where only other cells live: always denied), ``AGENTCELL_TLS_PORTS``
(default ``443``: CONNECTs to these must carry a ClientHello whose SNI names the
CONNECT host). Lifecycle messages go to stderr. SIGTERM or SIGINT stops it.

Concurrency: one event loop (``_server``): a task per connection, tunnels relayed by
readiness callbacks with ``os.splice`` (``_relay``); name lookups in a few threads.
"""

from __future__ import annotations

import os
import resource
import sys

from agentcell.gate._listen import SidecarConfigError
from agentcell.gate._records import log
from agentcell.gate.egress._config import GateConfig

__all__ = ["main"]


def _raise_fd_limit() -> None:
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass


def main() -> int:
    """Run the gate until SIGTERM/SIGINT; 0 on a clean stop, 2 if it cannot start."""
    try:
        config = GateConfig.from_env(os.environ)
    except SidecarConfigError as e:
        log(f"cannot start: {e}")
        return 2
    _raise_fd_limit()
    if "ssl" not in sys.modules:
        # The gate never terminates TLS: keep OpenSSL out of the process (about 6 MB of
        # RSS). asyncio runs without it, as it does on builds that have no ssl module.
        sys.modules["ssl"] = None  # type: ignore[assignment]
    import asyncio

    from agentcell.gate.egress._server import serve

    return asyncio.run(serve(config))
