"""The gate's event loop: its two listeners, their accept loops, signals and shutdown.

One thread serves everything: every connection is a task, every tunnel a pair of
readiness callbacks (``_relay``). Only name lookups run in threads (``_state``).
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from agentcell.gate._config import GateConfig
from agentcell.gate._control import Control
from agentcell.gate._proxy import Proxy
from agentcell.gate._records import RecordWriter, log
from agentcell.gate._state import GateState
from agentcell.policy._egress import IPAddress

__all__ = ["serve"]

Handler = Callable[[socket.socket], Coroutine[Any, Any, None]]

_STOP_GRACE = 5.0  # seconds the open connections get to finish at stop


def _listen(address: IPAddress, port: int) -> socket.socket:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(address), port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _where(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Acceptor:
    """Accepts on a listening socket from a readiness callback, a burst at a time."""

    def __init__(
        self, sock: socket.socket, handler: Handler, name: str, tasks: set[asyncio.Task[None]]
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock, self.handler, self.name, self.tasks = sock, handler, name, tasks
        self.loop.add_reader(sock.fileno(), self._acceptable)

    def _acceptable(self) -> None:
        for _ in range(64):
            try:
                client, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                log(f"{self.name}: accept failed: {e}")
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: pause accepting until some are free again.
                    self.loop.remove_reader(self.sock.fileno())
                    self.loop.call_later(0.05, self._resume)
                return
            task = self.loop.create_task(self.handler(client))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _resume(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._acceptable)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


async def serve(config: GateConfig) -> int:
    """Run the gate until SIGTERM/SIGINT; 0 on a clean stop, 2 if it cannot start."""
    loop = asyncio.get_running_loop()
    try:
        proxy_sock = _listen(*config.proxy_listen)
    except OSError as e:
        log(f"cannot start: proxy port {config.proxy_listen}: {e}")
        return 2
    try:
        control_sock = _listen(*config.control_listen)
    except OSError as e:
        proxy_sock.close()
        log(f"cannot start: control port {config.control_listen}: {e}")
        return 2
    state = GateState(config.own_networks, cells=config.cell_networks)
    proxy = Proxy(state, RecordWriter(config.tenant, config.cell), config.tls_ports)
    control = Control(state, config.token)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks: set[asyncio.Task[None]] = set()
    acceptors = [
        _Acceptor(proxy_sock, proxy.handle, "proxy", tasks),
        _Acceptor(control_sock, control.handle, "control", tasks),
    ]
    log(
        f"started: proxy={_where(proxy_sock)} control={_where(control_sock)} "
        f"tenant={config.tenant} cell={config.cell} tls_ports={sorted(config.tls_ports)} "
        f"own={','.join(map(str, config.own_networks))} "
        f"cells={','.join(map(str, config.cell_networks))}; no policy yet, denying everything"
    )
    await stop.wait()
    log("stopping")
    for acceptor in acceptors:
        acceptor.close()
    state.close_all("gate stopping")  # tunnels end, their records are written
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=_STOP_GRACE)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    proxy.close()
    return 0
