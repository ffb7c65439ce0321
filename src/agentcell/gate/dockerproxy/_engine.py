"""Talking to the Docker Engine over its unix socket: raw HTTP/1.1 with h11.

One connection per request (``Connection: close``): a unix-socket connect costs tens of
microseconds, and no state of one client's request can leak into another's. ``ask`` is
for the proxy's own questions (resolve, count, create a volume): a small JSON answer,
read whole. ``EngineStream`` is for forwarding a client's request: the head, then the
response as events, relayed by the caller.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import h11

from agentcell.gate._http import MAX_HEAD, receive_event
from agentcell.gate._relay import shutdown_quietly

__all__ = ["ASK_TIMEOUT", "MAX_ANSWER", "EngineError", "EngineStream", "ask"]

MAX_ANSWER = 32 * 1024 * 1024
"""The largest engine answer the proxy reads whole (an inspect, a list)."""
ASK_TIMEOUT = 30.0
_HOST = b"docker"  # what the docker CLI sends over a unix socket


class EngineError(Exception):
    """The engine could not be reached, or answered outside HTTP/1.1 or the size bounds."""


async def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, path)
    except OSError as e:
        sock.close()
        raise EngineError(f"cannot connect to the engine: {e}") from e
    return sock


class EngineStream:
    """One request to the engine and its response, on a connection of its own."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=4 * MAX_HEAD)

    @classmethod
    async def open(cls, path: str) -> EngineStream:
        """Connect to the engine's socket at ``path``."""
        return cls(await _connect(path))

    async def send(self, event: h11.Event) -> None:
        """Send one h11 event (request head, data, end of message)."""
        data = self.conn.send(event)
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def request(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        content_type: bytes = b"application/json",
        extra: list[tuple[bytes, bytes]] | None = None,
        close: bool = True,
    ) -> None:
        """Send a request head and a whole body (or none)."""
        headers: list[tuple[bytes, bytes]] = [(b"Host", _HOST)]
        if body is not None:
            headers += [(b"Content-Type", content_type), (b"Content-Length", b"%d" % len(body))]
        headers += extra or []
        if close:
            headers.append((b"Connection", b"close"))
        await self.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        """The next response event (h11.RemoteProtocolError on a malformed answer)."""
        return await receive_event(self.conn, self.sock)

    async def read_response(self, limit: int = MAX_ANSWER) -> tuple[h11.Response, bytes]:
        """The (final) response head and its whole body, at most ``limit`` bytes."""
        head: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                event = await self.next_event()
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    head = event
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > limit:
                        raise EngineError("engine answer too large")
                    chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage) and head is not None:
                    return head, b"".join(chunks)
                else:
                    raise EngineError(f"unexpected engine event {type(event).__name__}")
        except (h11.RemoteProtocolError, OSError) as e:
            raise EngineError(f"bad engine answer: {e}") from e

    def close(self) -> None:
        """Close the connection (idempotent)."""
        shutdown_quietly(self.sock)
        self.sock.close()


async def ask(path: str, method: str, target: str, body: bytes | None = None) -> tuple[int, Any]:
    """The proxy's own question: (status, JSON answer or None if it is not JSON)."""
    stream = await EngineStream.open(path)
    try:
        async with asyncio.timeout(ASK_TIMEOUT):
            await stream.request(method, target, body=body)
            head, raw = await stream.read_response()
    except TimeoutError as e:
        raise EngineError("engine did not answer in time") from e
    finally:
        stream.close()
    try:
        return head.status_code, json.loads(raw) if raw else None
    except ValueError:
        return head.status_code, None
