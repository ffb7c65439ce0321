"""Relaying an open tunnel both ways on the event loop, kernel-side where the kernel allows.

Each direction waits for its source to be readable, then moves bytes with ``os.splice``
(socket -> pipe -> socket: the payload never enters Python) and keeps going until the
source has nothing more (or a burst is done, so one stream cannot starve the others):
a busy stream costs two splices per chunk and few wake-ups.
When the destination cannot take more, the direction stops reading until it can
(back-pressure). Pipes come from a small shared pool: a direction holds one only while
bytes sit in it, so a thousand idle tunnels need no pipe at all. Where splice is refused
the same loop copies through a buffer (``recv_into``/``send``).

End of stream in one direction is passed on as a half-close (``shutdown(SHUT_WR)``); an
error in either direction shuts both sockets down and ends the tunnel. The relay never
closes the sockets: their owner does, once ``relay`` has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket

__all__ = ["CHUNK", "PipePool", "relay", "shutdown_quietly"]

CHUNK = 256 * 1024
"""Bytes moved per splice call, and the pipe size asked for (64 pages).

Pipe pages count against a per-user quota (``/proc/sys/fs/pipe-user-pages-soft``) shared
by every process of the gate's uid on the host; past it, new pipes get a page or two.
Hence a moderate size and a small pool. 1 MiB measured only ~5-10% faster on loopback.
"""

_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if hasattr(os, "splice") else 0
_NO_SPLICE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}
_COPY_BUFFER = 64 * 1024
_BURST = 16  # chunks moved per wake-up before the loop serves others again


def shutdown_quietly(sock: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    """Shut ``sock`` down (its peer and any waiter see the end); errors mean it already is."""
    with contextlib.suppress(OSError):
        sock.shutdown(how)


class PipePool:
    """Empty pipes for splicing, reused; at most ``keep`` are kept when nobody needs them."""

    def __init__(self, keep: int = 2) -> None:
        self._free: list[tuple[int, int]] = []
        self._keep = keep
        self.splice = hasattr(os, "splice")  # turned off for good if the kernel refuses

    def take(self) -> tuple[int, int]:
        if self._free:
            return self._free.pop()
        read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        with contextlib.suppress(OSError):  # over the user's pipe quota: the default size
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, CHUNK)
        return read_end, write_end

    def give(self, pipe: tuple[int, int], *, empty: bool) -> None:
        """Return a pipe; one that may still hold bytes is closed, never reused."""
        if empty and len(self._free) < self._keep:
            self._free.append(pipe)
        else:
            for fd in pipe:
                os.close(fd)

    def close(self) -> None:
        while self._free:
            for fd in self._free.pop():
                os.close(fd)


class _SpliceRefused(Exception):
    """splice refused these descriptors before moving a byte."""


class _Direction:
    """One way of a tunnel: src -> dst, driven by readiness callbacks."""

    def __init__(self, tunnel: _Tunnel, src: socket.socket, dst: socket.socket) -> None:
        self.tunnel = tunnel
        self.loop = tunnel.loop
        self.src, self.dst = src, dst
        self.s, self.d = src.fileno(), dst.fileno()
        self.pipe: tuple[int, int] | None = None
        self.buffer: memoryview | None = None  # the copy fallback's pending bytes
        self.pending = 0
        self.offset = 0  # into ``buffer``
        self.count = 0
        self.eof = False
        self.done = False
        self.reading = False
        self.writing = False

    # -- registration -----------------------------------------------------------------

    def start(self) -> None:
        self._read_on()

    def _read_on(self) -> None:
        if not self.reading:
            self.loop.add_reader(self.s, self._readable)
            self.reading = True

    def _read_off(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.s)
            self.reading = False

    def _write_on(self) -> None:
        if not self.writing:
            self.loop.add_writer(self.d, self._writable)
            self.writing = True

    def _write_off(self) -> None:
        if self.writing:
            self.loop.remove_writer(self.d)
            self.writing = False

    # -- moving bytes --------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            for _ in range(_BURST):
                n = self._read()
                if n is None:
                    break  # nothing more to read now
                if n == 0:
                    self.eof = True
                    self._read_off()
                    break
                self.pending += n
                if not self._drain():
                    return  # waiting for dst: reading resumes when it drains
            self._settle()
        except OSError:
            self.tunnel.abort()

    def _writable(self) -> None:
        try:
            if not self._drain():
                return
            self._write_off()
            self._settle()
            if not self.done:
                self._read_on()
        except OSError:
            self.tunnel.abort()

    def _settle(self) -> None:
        """Nothing pending: hand the pipe back; at end of stream, pass the half-close on."""
        if self.pending:
            return
        if self.pipe is not None:
            self.tunnel.pipes.give(self.pipe, empty=True)
            self.pipe = None
        if self.eof and not self.done:
            shutdown_quietly(self.dst, socket.SHUT_WR)
            self.finish()

    def _read(self) -> int | None:
        """Bytes read from src into the pipe (or buffer); None when it would block."""
        pipes = self.tunnel.pipes
        if pipes.splice:
            if self.pipe is None:
                self.pipe = pipes.take()
            try:
                return os.splice(self.s, self.pipe[1], CHUNK, flags=_FLAGS)
            except BlockingIOError:
                return None
            except OSError as e:
                if e.errno not in _NO_SPLICE or self.count or self.pending:
                    raise
                pipes.splice = False  # this kernel or socket type: copy from now on
                pipes.give(self.pipe, empty=True)
                self.pipe = None
        if self.buffer is None:
            self.buffer = memoryview(bytearray(_COPY_BUFFER))
        try:
            n = self.src.recv_into(self.buffer)
        except BlockingIOError:
            return None
        self.offset = 0
        return n

    def _drain(self) -> bool:
        """Write what is pending to dst; False (and waiting for writability) if it blocks."""
        while self.pending:
            try:
                if self.pipe is not None:
                    moved = os.splice(self.pipe[0], self.d, self.pending, flags=_FLAGS)
                else:
                    assert self.buffer is not None
                    moved = self.dst.send(self.buffer[self.offset : self.offset + self.pending])
                    self.offset += moved
            except BlockingIOError:
                self._read_off()
                self._write_on()
                return False
            self.pending -= moved
            self.count += moved
        return True

    def finish(self) -> None:
        """Stop: unregister, drop the pipe (closed if it may hold bytes)."""
        if self.done:
            return
        self.done = True
        self._read_off()
        self._write_off()
        if self.pipe is not None:
            self.tunnel.pipes.give(self.pipe, empty=self.pending == 0)
            self.pipe = None
        self.tunnel.direction_done()


class _Tunnel:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, pipes: PipePool, a: socket.socket, b: socket.socket
    ) -> None:
        self.loop = loop
        self.pipes = pipes
        self.a, self.b = a, b
        self.up = _Direction(self, a, b)
        self.down = _Direction(self, b, a)
        self.finished: asyncio.Future[None] = loop.create_future()

    def direction_done(self) -> None:
        if self.up.done and self.down.done and not self.finished.done():
            self.finished.set_result(None)

    def abort(self) -> None:
        shutdown_quietly(self.a)
        shutdown_quietly(self.b)
        self.up.finish()
        self.down.finish()


async def relay(client: socket.socket, upstream: socket.socket, pipes: PipePool) -> tuple[int, int]:
    """Copy both ways until both directions end; returns (bytes up, bytes down)."""
    client.setblocking(False)
    upstream.setblocking(False)
    tunnel = _Tunnel(asyncio.get_running_loop(), pipes, client, upstream)
    tunnel.up.start()
    tunnel.down.start()
    try:
        await tunnel.finished
    finally:
        tunnel.up.finish()  # on cancellation: unregister before the sockets close
        tunnel.down.finish()
    return tunnel.up.count, tunnel.down.count
