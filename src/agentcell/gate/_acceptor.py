"""Listening sockets and their accept loops, for both sidecars' event loops."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from agentcell.gate._records import log
from agentcell.policy._egress import IPAddress

__all__ = ["Acceptor", "Handler", "listen", "where"]

Handler = Callable[[socket.socket], Coroutine[Any, Any, None]]


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
