"""The ClientHello parser: hand-built tables, real hellos from Python's ssl, and properties."""

from __future__ import annotations

import functools
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentcell.gate.egress._tls import MAX_HELLO_BYTES, ClientHello, HelloStatus, parse_client_hello

NEED_MORE = ClientHello(HelloStatus.NEED_MORE)
NOT_TLS = ClientHello(HelloStatus.NOT_TLS)


def hello_ok(sni: str | None) -> ClientHello:
    return ClientHello(HelloStatus.HELLO, sni)


# -- building hellos by hand ---------------------------------------------------------------


def u8(n: int) -> bytes:
    return n.to_bytes(1, "big")


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def vec8(b: bytes) -> bytes:
    return u8(len(b)) + b


def vec16(b: bytes) -> bytes:
    return u16(len(b)) + b


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(u8(name_type) + vec16(n) for n in names)
    return u16(0) + vec16(vec16(entries))


def ext(kind: int, body: bytes = b"") -> bytes:
    return u16(kind) + vec16(body)


def body(
    extensions: bytes | None,
    *,
    version: bytes = b"\x03\x03",
    session: bytes = b"\x00" * 32,
    suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
) -> bytes:
    out = version + b"\x11" * 32 + vec8(session) + vec16(suites) + vec8(compression)
    if extensions is not None:
        out += vec16(extensions)
    return out


def handshake(message: bytes, kind: int = 1) -> bytes:
    return u8(kind) + len(message).to_bytes(3, "big") + message


def records(payload: bytes, sizes: list[int] | None = None, content_type: int = 22) -> bytes:
    """Wrap ``payload`` in TLS records, fragmenting it at ``sizes``."""
    out = b""
    pos = 0
    for size in [*(sizes or []), len(payload)]:
        chunk = payload[pos : pos + size]
        if not chunk:
            break
        out += u8(content_type) + b"\x03\x01" + vec16(chunk)
        pos += len(chunk)
    return out


def client_hello(sni: bytes | None = b"api.allowed.test", **kw: object) -> bytes:
    exts = (sni_ext(sni) if sni is not None else b"") + ext(43, b"\x02\x03\x04")
    return records(handshake(body(exts, **kw)))  # type: ignore[arg-type]


# -- tables ----------------------------------------------------------------------------------

TABLE = [
    ("nothing yet", b"", NEED_MORE),
    ("one byte of a handshake record", b"\x16", NEED_MORE),
    ("a record header only", b"\x16\x03\x01\x00\x50", NEED_MORE),
    ("a hello with its server name", client_hello(), hello_ok("api.allowed.test")),
    ("a hello without server_name", client_hello(None), hello_ok(None)),
    (
        "a hello with no extensions block at all",
        records(handshake(body(None))),
        hello_ok(None),
    ),
    ("an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", NOT_TLS),
    ("an SSLv2-style hello", b"\x80\x2e\x01\x00\x02", NOT_TLS),
    ("an alert record first", records(b"\x02\x28", content_type=21), NOT_TLS),
    ("application data first", records(b"hello", content_type=23), NOT_TLS),
    ("record version major 2", b"\x16\x02\x00\x00\x05" + b"\x01" * 5, NOT_TLS),
    ("an empty record", b"\x16\x03\x01\x00\x00", NOT_TLS),
    ("an over-long record", b"\x16\x03\x01\x40\x01", NOT_TLS),
    ("a ServerHello instead", records(handshake(body(b""), kind=2)), NOT_TLS),
    (
        "a handshake type seen before the record is complete",
        b"\x16\x03\x01\x01\x00\x02",
        NOT_TLS,
    ),
    ("a hello of absurd length", records(b"\x01\xff\xff\xff" + b"\x00" * 10), NOT_TLS),
    ("client version 2.0", client_hello(version=b"\x02\x00"), NOT_TLS),
    ("session id over 32 bytes", client_hello(session=b"\x00" * 33), NOT_TLS),
    ("no cipher suites", client_hello(suites=b""), NOT_TLS),
    ("odd cipher suite bytes", client_hello(suites=b"\x13\x01\x13"), NOT_TLS),
    ("no compression methods", client_hello(compression=b""), NOT_TLS),
    (
        "two server_name extensions",
        records(handshake(body(sni_ext(b"a.test") + sni_ext(b"b.test")))),
        NOT_TLS,
    ),
    (
        "two host names in one extension",
        records(handshake(body(sni_ext(b"a.test", b"b.test")))),
        NOT_TLS,
    ),
    ("an empty host name", records(handshake(body(sni_ext(b"")))), NOT_TLS),
    ("a non-ASCII host name", records(handshake(body(sni_ext("ü.test".encode())))), NOT_TLS),
    ("a host name with a NUL", records(handshake(body(sni_ext(b"a.test\x00.evil")))), NOT_TLS),
    ("an empty server name list", records(handshake(body(u16(0) + vec16(vec16(b""))))), NOT_TLS),
    (
        "only an unknown name type",
        records(handshake(body(sni_ext(b"a.test", name_type=7)))),
        NOT_TLS,
    ),
    (
        "an extension longer than its block",
        records(handshake(body(b"\x00\x00\x00\x10\x00"))),
        NOT_TLS,
    ),
    (
        "bytes after the extensions block",
        records(handshake(body(ext(43, b"\x02\x03\x04")) + b"\x00")),
        NOT_TLS,
    ),
    (
        "a server name list shorter than its extension",
        records(handshake(body(u16(0) + vec16(vec16(u8(0) + vec16(b"a.test")) + b"\x00")))),
        NOT_TLS,
    ),
    (
        "the hello fragmented over three records",
        records(handshake(body(sni_ext(b"frag.test"))), sizes=[3, 40]),
        hello_ok("frag.test"),
    ),
    (
        "the hello in its first record, more records after",
        client_hello(b"x.test") + records(b"\x00" * 8, content_type=23),
        hello_ok("x.test"),
    ),
    (
        "a record header cut after the first record",
        records(handshake(body(sni_ext(b"frag.test"))), sizes=[10])[:17],
        NEED_MORE,
    ),
    (
        "a non-handshake record in the middle of the hello",
        records(handshake(body(sni_ext(b"frag.test"))), sizes=[10])[:15]
        + records(b"x", content_type=23),
        NOT_TLS,
    ),
    (
        "the server name kept as sent (case, trailing dot): the gate normalises",
        client_hello(b"API.Allowed.Test."),
        hello_ok("API.Allowed.Test."),
    ),
]


@pytest.mark.parametrize(("case", "data", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_parse_table(case: str, data: bytes, expected: ClientHello) -> None:
    assert parse_client_hello(data) == expected


def test_every_proper_prefix_of_a_hello_needs_more() -> None:
    data = records(handshake(body(sni_ext(b"api.allowed.test"))), sizes=[7, 30])
    for cut in range(len(data)):
        assert parse_client_hello(data[:cut]) == NEED_MORE, cut
    assert parse_client_hello(data) == hello_ok("api.allowed.test")


def test_the_gate_buffers_at_most_a_bounded_hello() -> None:
    assert 16 * 1024 <= MAX_HELLO_BYTES <= 1024 * 1024


# -- real hellos from Python's ssl -------------------------------------------------------------


@functools.cache
def real_hello(server_hostname: str | None) -> bytes:
    """The bytes an SSLContext client sends first (captured from a memory BIO, no network)."""
    ctx = ssl.create_default_context()
    if server_hostname is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        return outgoing.read()
    raise AssertionError("the handshake cannot finish without a server")


@pytest.mark.parametrize("name", ["api.allowed.test", "a.b.c.example", "xn--mnchen-3ya.test"])
def test_a_real_hello_parses_to_its_server_hostname(name: str) -> None:
    data = real_hello(name)
    assert parse_client_hello(data) == hello_ok(name)


def test_a_real_hello_without_server_hostname_has_no_sni() -> None:
    assert parse_client_hello(real_hello(None)) == hello_ok(None)


def test_a_real_hello_read_one_byte_at_a_time() -> None:
    data = real_hello("api.allowed.test")
    seen = b""
    for i in range(len(data)):
        seen += data[i : i + 1]
        result = parse_client_hello(seen)
        if i < len(data) - 1:
            assert result == NEED_MORE, i
    assert result == hello_ok("api.allowed.test")


# -- properties ----------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    result = parse_client_hello(data)
    assert isinstance(result.status, HelloStatus)
    assert result.sni is None or result.status is HelloStatus.HELLO


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=512))
def test_bytes_behind_a_handshake_header_never_raise(tail: bytes) -> None:
    data = b"\x16\x03\x01" + u16(len(tail)) + tail
    assert isinstance(parse_client_hello(data).status, HelloStatus)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_real_hello_survives_any_record_fragmentation(data: st.DataObject) -> None:
    raw = real_hello("frag.allowed.test")
    message = b""
    pos = 0
    while pos < len(raw):  # unwrap the records ssl wrote
        length = int.from_bytes(raw[pos + 3 : pos + 5], "big")
        message += raw[pos + 5 : pos + 5 + length]
        pos += 5 + length
    sizes = data.draw(st.lists(st.integers(1, 300), max_size=20))
    refragmented = records(message, sizes)
    assert parse_client_hello(refragmented) == hello_ok("frag.allowed.test")
    cut = data.draw(st.integers(0, len(refragmented) - 1))
    assert parse_client_hello(refragmented[:cut]) == NEED_MORE


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupting_one_byte_of_a_hello_never_raises(data: st.DataObject) -> None:
    raw = bytearray(real_hello("api.allowed.test"))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    result = parse_client_hello(bytes(raw))
    assert isinstance(result.status, HelloStatus)
