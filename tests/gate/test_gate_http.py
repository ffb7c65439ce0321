"""HTTP plumbing (authority splitting, hop-by-hop headers, own responses) and record writing."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.gate._http import (
    BadAuthority,
    end_to_end_headers,
    simple_response,
    split_authority,
)
from agentcell.gate._records import Record, RecordWriter


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("api.allowed.test:443", None, ("api.allowed.test", 443)),
        ("api.allowed.test", 80, ("api.allowed.test", 80)),
        ("127.0.0.1:8080", None, ("127.0.0.1", 8080)),
        ("[::1]:443", None, ("[::1]", 443)),
        ("[::ffff:127.0.0.1]", 80, ("[::ffff:127.0.0.1]", 80)),
        # The host is only split here; the decision function judges it:
        ("user:pw@api.allowed.test:443", None, ("user:pw@api.allowed.test", 443)),
        ("api%2eallowed.test:443", None, ("api%2eallowed.test", 443)),
        ("::1:443", None, ("::1", 443)),
    ],
)
def test_split_authority(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split_authority(text, default) == expected


@pytest.mark.parametrize(
    ("text", "default"),
    [
        ("", 80),
        ("api.allowed.test", None),
        ("api.allowed.test:", 80),
        ("api.allowed.test:0", 80),
        ("api.allowed.test:65536", 80),
        ("api.allowed.test:+443", 80),
        ("api.allowed.test:4 43", 80),
        ("api.allowed.test:٤٤٣", 80),  # non-ASCII digits
        ("[::1", 80),
        ("[::1]x", 80),
        (":443", 80),
        ("a\tb:443", 80),
    ],
)
def test_split_authority_refuses(text: str, default: int | None) -> None:
    with pytest.raises(BadAuthority):
        split_authority(text, default)


@given(st.text(max_size=80), st.one_of(st.none(), st.integers(1, 65535)))
def test_split_authority_only_ever_raises_bad_authority(text: str, default: int | None) -> None:
    try:
        host, port = split_authority(text, default)
    except BadAuthority:
        return
    assert host
    assert 1 <= port <= 65535


def test_hop_by_hop_headers_and_those_named_by_connection_are_dropped() -> None:
    headers = [
        (b"Host", b"a.test"),
        (b"Connection", b"keep-alive, X-Secret"),
        (b"x-secret", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Authorization", b"Basic Zm9vOmJhcg=="),
        (b"Proxy-Connection", b"keep-alive"),
        (b"TE", b"trailers"),
        (b"Trailer", b"Expires"),
        (b"Upgrade", b"websocket"),
        (b"Accept", b"*/*"),
    ]
    assert end_to_end_headers(headers) == [(b"Host", b"a.test"), (b"Accept", b"*/*")]


def test_the_gates_own_responses_close_and_carry_the_reason() -> None:
    data = simple_response(403, "sni mismatch\n")
    assert data == (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 13\r\nConnection: close\r\n\r\nsni mismatch\n"
    )


def test_a_record_is_one_json_line_written_once() -> None:
    out = io.StringIO()
    writer = RecordWriter("acme", "researcher", out)
    record = Record(method="CONNECT", host="a.test", port=443)
    record.allow("allowed", "allow[0] host a.test ports 443")
    writer.write(record)
    writer.write(record)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["tenant"] == "acme"
    assert doc["decision"] == "allow"
    assert doc["time"].endswith("Z")


def test_a_broken_stdout_is_logged_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    out.close()
    RecordWriter("t", "c", out).write(Record())
    assert "cannot write a decision record" in capsys.readouterr().err
