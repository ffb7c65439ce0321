"""HTTP/1.1 plumbing shared by the proxy and control ports: h11 over event-loop sockets.

Owns reading h11 events, the gate's own short responses, the hop-by-hop header list,
authority parsing and closing a client connection so that it still reads the last
response. Callers bound every wait with ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import socket

import h11

from agentcell.gate._relay import shutdown_quietly

__all__ = [
    "HOP_BY_HOP",
    "MAX_HEAD",
    "BadAuthority",
    "close_gracefully",
    "end_to_end_headers",
    "receive_event",
    "simple_response",
    "split_authority",
]

MAX_HEAD = 16 * 1024
"""The largest request head (start line and headers) accepted from a client."""

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
"""Headers that describe one hop: never forwarded (RFC 9110 7.6.1), nor what Connection names."""

_RECV = 64 * 1024

_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    502: "Bad Gateway",
}


class BadAuthority(ValueError):
    """An authority (``host[:port]``) that cannot be split."""


async def receive_event(conn: h11.Connection, sock: socket.socket) -> h11.Event | type[h11.PAUSED]:
    """The next h11 event, reading from ``sock`` as needed.

    Raises h11.RemoteProtocolError on malformed input; end of stream is passed to h11,
    which turns it into ConnectionClosed or an error.
    """
    loop = asyncio.get_running_loop()
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event  # type: ignore[return-value]
        conn.receive_data(await loop.sock_recv(sock, _RECV))


def simple_response(status: int, body: str, *, content_type: str = "text/plain") -> bytes:
    """A complete ``Connection: close`` response the gate writes itself (fixed phrases only)."""
    payload = body.encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + payload


def end_to_end_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` without hop-by-hop ones, including any named by ``Connection``.

    Names are compared case-insensitively and kept as the peer wrote them.
    """
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    drop = HOP_BY_HOP | named
    return [(name, value) for name, value in headers if name.lower() not in drop]


def split_authority(text: str, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` -> (host as written, port). The host is not judged.

    The decision function judges the host (userinfo, encodings, literals); this only
    splits, and refuses what has no port when one is required, or a bad port.
    """
    if not text or not text.isascii() or not text.isprintable() or " " in text:
        raise BadAuthority(text)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadAuthority(text)
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise BadAuthority(text)
        port_text = rest[1:] if rest else None
    else:
        host, sep, tail = text.rpartition(":")
        if not sep:
            host, port_text = text, None
        else:
            port_text = tail
    if not host:
        raise BadAuthority(text)
    if port_text is None:
        if default_port is None:
            raise BadAuthority(text)
        return host, default_port
    if not port_text.isdigit() or len(port_text) > 5 or not 1 <= int(port_text) <= 65535:
        raise BadAuthority(text)
    return host, int(port_text)


async def close_gracefully(sock: socket.socket, linger: float = 1.0) -> None:
    """Close after a half-close and a short drain, so the peer reads our last bytes."""
    loop = asyncio.get_running_loop()
    try:
        sock.shutdown(socket.SHUT_WR)
        drained = 0
        async with asyncio.timeout(linger):
            while drained < 256 * 1024:
                chunk = await loop.sock_recv(sock, _RECV)
                if not chunk:
                    break
                drained += len(chunk)
    except (OSError, TimeoutError):
        pass
    finally:
        shutdown_quietly(sock)
        sock.close()
