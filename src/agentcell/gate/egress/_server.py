"""The gate's event loop: its two listeners, their accept loops, signals and shutdown.

One thread serves everything: every connection is a task, every tunnel a pair of
readiness callbacks (``_relay``). Only name lookups run in threads (``_state``).
"""

from __future__ import annotations

import asyncio

from agentcell.gate._acceptor import Acceptor, drain, listen, stop_on_signals, where
from agentcell.gate._records import RecordWriter, log
from agentcell.gate.egress._config import GateConfig
from agentcell.gate.egress._control import Control
from agentcell.gate.egress._proxy import Proxy
from agentcell.gate.egress._state import GateState

__all__ = ["serve"]


async def serve(config: GateConfig) -> int:
    """Run the gate until SIGTERM/SIGINT; 0 on a clean stop, 2 if it cannot start."""
    try:
        proxy_sock = listen(*config.proxy_listen)
    except OSError as e:
        log(f"cannot start: proxy port {config.proxy_listen}: {e}")
        return 2
    try:
        control_sock = listen(*config.control_listen)
    except OSError as e:
        proxy_sock.close()
        log(f"cannot start: control port {config.control_listen}: {e}")
        return 2
    state = GateState(config.own_networks, cells=config.cell_networks)
    proxy = Proxy(state, RecordWriter(config.tenant, config.cell), config.tls_ports)
    control = Control(state, config.token)
    stop = stop_on_signals()
    tasks: set[asyncio.Task[None]] = set()
    acceptors = [
        Acceptor(proxy_sock, proxy.handle, "proxy", tasks),
        Acceptor(control_sock, control.handle, "control", tasks),
    ]
    log(
        f"started: proxy={where(proxy_sock)} control={where(control_sock)} "
        f"tenant={config.tenant} cell={config.cell} tls_ports={sorted(config.tls_ports)} "
        f"own={','.join(map(str, config.own_networks))} "
        f"cells={','.join(map(str, config.cell_networks))}; no policy yet, denying everything"
    )
    await stop.wait()
    log("stopping")
    for acceptor in acceptors:
        acceptor.close()
    state.close_all("gate stopping")  # tunnels end, their records are written
    await drain(tasks)
    proxy.close()
    return 0
