"""The tunnel relay over real loopback TCP: splice, its fallback, half-close, errors, counts.

The relay runs on an event loop in a helper thread; the test plays client and upstream
with ordinary blocking sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from agentcell.gate import _relay
from agentcell.gate._relay import PipePool, relay


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    return a, b


@pytest.fixture(params=["splice", "copy", "splice refused"])
def pipes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipePool]:
    pool = PipePool(keep=2)
    if request.param == "copy":
        pool.splice = False
    elif request.param == "splice refused":
        real = os.splice

        def refuse(src: int, dst: int, count: int, **kw: object) -> int:
            if dst in taken:  # socket -> pipe: the kernel says no
                raise OSError(errno.EINVAL, "Invalid argument")
            return real(src, dst, count, **kw)  # type: ignore[arg-type]

        taken: set[int] = set()
        original_take = pool.take

        def take() -> tuple[int, int]:
            pipe = original_take()
            taken.add(pipe[1])
            return pipe

        monkeypatch.setattr(pool, "take", take)
        monkeypatch.setattr(os, "splice", refuse)
    yield pool
    pool.close()
    if request.param == "splice refused":
        assert pool.splice is False


class Tunnel:
    """client <-> [gate: c_side | u_side] <-> upstream, relayed on a loop in a thread."""

    def __init__(self, pipes: PipePool) -> None:
        self.client, self.c_side = tcp_pair()
        self.u_side, self.upstream = tcp_pair()
        self.result: tuple[int, int] | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, args=(pipes,), daemon=True)
        self.thread.start()

    def _run(self, pipes: PipePool) -> None:
        self.result = self.loop.run_until_complete(relay(self.c_side, self.u_side, pipes))
        self.loop.close()

    def finish(self) -> tuple[int, int]:
        self.thread.join(10)
        assert not self.thread.is_alive()
        assert self.result is not None
        for s in (self.client, self.c_side, self.u_side, self.upstream):
            s.close()
        return self.result


def read_all(s: socket.socket) -> bytes:
    out = b""
    s.settimeout(10)
    while chunk := s.recv(1 << 20):
        out += chunk
    return out


def test_bytes_flow_both_ways_and_are_counted(pipes: PipePool) -> None:
    t = Tunnel(pipes)
    up = os.urandom(3 * 1024 * 1024 + 5)
    down = os.urandom(1024 * 1024 + 3)

    def send_up() -> None:
        t.client.sendall(up)
        t.client.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send_up)
    sender.start()
    t.upstream.sendall(down)
    t.upstream.shutdown(socket.SHUT_WR)
    assert read_all(t.upstream) == up
    assert read_all(t.client) == down
    sender.join(10)
    assert t.finish() == (len(up), len(down))


def test_a_slow_reader_gets_everything_back_pressure(pipes: PipePool) -> None:
    """The upstream sends far more than the buffers hold while the client is not reading."""
    t = Tunnel(pipes)
    data = os.urandom(16 * 1024 * 1024)

    def send() -> None:
        t.upstream.sendall(data)
        t.upstream.close()

    sender = threading.Thread(target=send)
    sender.start()
    assert read_all(t.client) == data
    sender.join(10)
    t.client.shutdown(socket.SHUT_WR)
    assert t.finish() == (0, len(data))


def test_a_half_close_is_passed_on_and_the_other_way_keeps_flowing(pipes: PipePool) -> None:
    t = Tunnel(pipes)
    t.client.sendall(b"request")
    t.client.shutdown(socket.SHUT_WR)
    assert read_all(t.upstream) == b"request"  # EOF reached the upstream
    t.upstream.sendall(b"late answer")
    t.upstream.close()
    assert read_all(t.client) == b"late answer"
    assert t.finish() == (7, 11)


def test_a_reset_on_one_side_ends_both_directions(pipes: PipePool) -> None:
    t = Tunnel(pipes)
    t.client.sendall(b"x")
    t.upstream.settimeout(10)
    assert t.upstream.recv(1) == b"x"
    t.upstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    t.upstream.close()  # RST
    t.client.settimeout(10)
    with contextlib.suppress(ConnectionResetError):
        assert t.client.recv(10) == b""
    t.thread.join(10)
    assert not t.thread.is_alive()
    for s in (t.client, t.c_side, t.u_side):
        s.close()


def test_shutting_the_gate_side_down_ends_the_relay(pipes: PipePool) -> None:
    t = Tunnel(pipes)
    t.loop.call_soon_threadsafe(_relay.shutdown_quietly, t.c_side)
    t.loop.call_soon_threadsafe(_relay.shutdown_quietly, t.u_side)
    t.finish()


def test_the_pipe_pool_reuses_empty_pipes_and_closes_the_rest() -> None:
    pool = PipePool(keep=1)
    a, b = pool.take(), pool.take()
    pool.give(a, empty=True)
    pool.give(b, empty=True)  # over the limit: closed
    with pytest.raises(OSError):
        os.fstat(b[0])
    assert pool.take() == a
    pool.give(a, empty=False)  # may hold bytes: closed, never reused
    with pytest.raises(OSError):
        os.fstat(a[0])
    pool.close()
