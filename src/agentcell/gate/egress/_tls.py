"""Reading the server name (SNI) out of a TLS ClientHello, without terminating TLS.

Pure and total: ``parse_client_hello`` takes every byte the client has sent so far and
answers NEED_MORE, NOT_TLS or HELLO (with the SNI, or None when the hello names
none). It never raises. The hello may be split across TLS records and across reads;
the caller keeps the bytes, appends what arrives and asks again. Anything ambiguous
(a second server_name extension, two host names, lengths that do not add up) is
NOT_TLS: the gate refuses what it cannot read one way only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["MAX_HELLO_BYTES", "ClientHello", "HelloStatus", "parse_client_hello"]

MAX_HELLO_BYTES = 64 * 1024
"""The most the gate buffers while waiting for a complete ClientHello."""

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_RECORD_HEADER = 5
_MAX_RECORD = 1 << 14  # TLSPlaintext.length limit (RFC 8446 5.1)
_EXT_SERVER_NAME = 0
_HOST_NAME = 0


class HelloStatus(Enum):
    """How far the bytes seen so far get."""

    NEED_MORE = "need more"
    NOT_TLS = "not tls"
    HELLO = "hello"


@dataclass(frozen=True)
class ClientHello:
    """The parse result; ``sni`` is set only for HELLO with a server_name."""

    status: HelloStatus
    sni: str | None = None


_NEED_MORE = ClientHello(HelloStatus.NEED_MORE)
_NOT_TLS = ClientHello(HelloStatus.NOT_TLS)


class _Bad(Exception):
    """Internal: the bytes are not a well-formed ClientHello."""


def parse_client_hello(data: bytes) -> ClientHello:
    """Parse the client's first bytes; see the module docstring."""
    try:
        message = _handshake_message(data)
        if message is None:
            return _NEED_MORE
        return ClientHello(HelloStatus.HELLO, _server_name(message))
    except _Bad:
        return _NOT_TLS
    except Exception:  # total by contract: any surprise is "not tls"
        return _NOT_TLS


def _handshake_message(data: bytes) -> bytes | None:
    """Reassemble the first handshake message from the records; None if incomplete."""
    payload = bytearray()
    pos = 0
    while True:
        if len(payload) >= 4:
            if payload[0] != _CLIENT_HELLO:
                raise _Bad
            length = int.from_bytes(payload[1:4], "big")
            if length > MAX_HELLO_BYTES:
                raise _Bad
            if len(payload) >= 4 + length:
                return bytes(payload[4 : 4 + length])
        elif payload and payload[0] != _CLIENT_HELLO:
            raise _Bad
        header = data[pos : pos + _RECORD_HEADER]
        # Check what we have of the header as soon as we have it.
        if header and header[0] != _HANDSHAKE:
            raise _Bad
        if len(header) >= 2 and header[1] != 3:
            raise _Bad
        if len(header) < _RECORD_HEADER:
            return None
        length = int.from_bytes(header[3:5], "big")
        if length == 0 or length > _MAX_RECORD:
            raise _Bad
        body = data[pos + _RECORD_HEADER : pos + _RECORD_HEADER + length]
        if len(body) < length:
            # Check the handshake header early, so garbage is refused without waiting.
            if len(payload) + len(body) >= 1 and (payload + body)[0] != _CLIENT_HELLO:
                raise _Bad
            return None
        payload += body
        pos += _RECORD_HEADER + length


class _Reader:
    """Bounds-checked reads over one byte string."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _Bad
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.uint(length_bytes))

    def done(self) -> bool:
        return self.pos == len(self.data)


def _server_name(message: bytes) -> str | None:
    r = _Reader(message)
    version = r.uint(2)
    if version >> 8 != 3:
        raise _Bad
    r.take(32)  # random
    if len(r.vector(1)) > 32:  # legacy_session_id
        raise _Bad
    suites = r.vector(2)
    if not suites or len(suites) % 2:
        raise _Bad
    if not r.vector(1):  # legacy_compression_methods
        raise _Bad
    if r.done():
        return None  # no extensions at all (old clients): no SNI
    extensions = _Reader(r.vector(2))
    if not r.done():
        raise _Bad
    seen: set[int] = set()
    sni: str | None = None
    while not extensions.done():
        kind = extensions.uint(2)
        body = extensions.vector(2)
        if kind in seen:
            raise _Bad  # RFC 8446 4.2: no extension type twice
        seen.add(kind)
        if kind == _EXT_SERVER_NAME:
            sni = _host_name(body)
    return sni


def _host_name(body: bytes) -> str:
    outer = _Reader(body)
    names = _Reader(outer.vector(2))
    if not outer.done() or names.done():
        raise _Bad
    host: str | None = None
    while not names.done():
        kind = names.uint(1)
        name = names.vector(2)
        if kind != _HOST_NAME:
            continue  # unknown name types are skipped (RFC 6066 3)
        if host is not None or not name:
            raise _Bad  # RFC 6066 3: at most one host_name, never empty
        try:
            host = name.decode("ascii")
        except UnicodeDecodeError:
            raise _Bad from None
        if not host.isprintable():
            raise _Bad
    if host is None:
        raise _Bad
    return host
