"""Listening sockets and their accept loops, for both sidecars' event loops."""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from agentcell.gate._records import log
from agentcell.policy._egress import IPAddress

__all__ = ["STOP_GRACE", "Acceptor", "Handler", "drain", "listen", "stop_on_signals", "where"]

Handler = Callable[[socket.socket], Coroutine[Any, Any, None]]
STOP_GRACE = 5.0
"""Seconds the open connections get to finish at stop."""


def listen(address: IPAddress, port: int) -> socket.socket:
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


def where(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Acceptor:
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


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def drain(tasks: set[asyncio.Task[None]], grace: float = STOP_GRACE) -> None:
    """Let the connections' tasks finish for ``grace`` seconds, then cancel the rest."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
