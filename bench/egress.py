"""Benchmark: the egress gate's CONNECT tunnels versus a direct connection and squid.

One run, one local sink server, the contenders interleaved round by round:

- throughput: one stream of ``--bytes`` from the sink, read directly, through a
  CONNECT tunnel of the gate, and through a CONNECT tunnel of Debian's squid
  configured with the equivalent allowlist (CONNECT to 127.0.0.1 on the sink's
  ports only); median bytes/s and the within-round ratios;
- tunnel setup: open -> CONNECT -> 200 -> read the sink's first byte -> close,
  ``--tunnels`` times one after another and again with ``--workers`` in parallel;
  tunnels/s for the gate and squid (a direct connect+read is shown as the floor);
- memory: the gate's VmRSS idle with its policy loaded, while ``--hold`` tunnels
  are open, idle again after the load, and its peak (VmHWM); squid's for context;
- CPU: user and system time of the sink, the client and the proxy, per GB and per
  tunnel, for each contender (read from /proc around each measurement).

Every process runs apart, so nothing shares a GIL: the sink (sendfile from tmpfs),
the client (recv_into one large buffer), the gate (``python -m
agentcell.gate.egress`` on 127.0.0.2) and squid (``squid -N``, a temporary config).
All traffic stays on 127.0.0.0/8. Prints a markdown report and writes
bench/results/egress.json. squid is the Debian package ``squid``; without it the
squid columns are skipped with a message (``--no-squid`` skips it on purpose).

    .venv/bin/python bench/egress.py [--bytes 1G] [--tunnels 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import http.client
import ipaddress
import json
import os
import platform
import queue
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "egress.json"

SINK_HOST = "127.0.0.1"  # the sink, and squid's listener
GATE_HOST = "127.0.0.2"  # the gate's proxy and control ports (its own address: never a target)
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

SINK_CHUNK = 64 * 1024 * 1024  # the tmpfs file the sink sends from, over and over
CLIENT_BUFFER = 4 * 1024 * 1024  # recv_into target
IO_TIMEOUT = 60.0  # any single socket wait in the helpers
START_TIMEOUT = 30.0  # a process to be ready
STOP_TIMEOUT = 10.0  # a process to exit after it was asked to
WARMUP_BYTES = 64 * 1024 * 1024
WARMUP_TUNNELS = 50
GB = 1e9  # figures are in decimal GB/s (10^9 bytes per second)


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


def check_loopback(host: str) -> str:
    """Every address this benchmark dials passes here: loopback only, never anything else."""
    if ipaddress.ip_address(host) not in LOOPBACK:
        raise BenchError(f"refusing to connect to {host}: this benchmark stays on 127.0.0.0/8")
    return host


def connect(host: str, port: int, timeout: float = IO_TIMEOUT) -> socket.socket:
    return socket.create_connection((check_loopback(host), port), timeout=timeout)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 1G)")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = int(float(match.group(1)) * scale[match.group(2).upper()])
    if value < 1:
        raise argparse.ArgumentTypeError("the size must be at least one byte")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --- the sink: a separate process serving bytes ---------------------------------------------


def sink_main() -> int:
    """``--role sink``: print the ports as one JSON line, serve until stdin closes.

    bulk: read an 8-byte big-endian count, sendfile that many bytes, close.
    small: send one byte, close. hold: send one byte, wait for the peer to close.
    """
    tmpfs = Path("/dev/shm")
    where = tmpfs if tmpfs.is_dir() and os.access(tmpfs, os.W_OK) else None
    with tempfile.TemporaryFile(dir=where) as data:
        remaining = SINK_CHUNK
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            data.write(block)
            remaining -= len(block)
        data.flush()
        source = data.fileno()
        listeners = {}
        for mode in ("bulk", "small", "hold"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((SINK_HOST, 0))
            sock.listen(4096)
            listeners[mode] = sock

        def bulk(conn: socket.socket) -> None:
            with conn:
                conn.settimeout(IO_TIMEOUT)
                head = b""
                while len(head) < 8:
                    chunk = conn.recv(8 - len(head))
                    if not chunk:
                        return
                    head += chunk
                (count,) = struct.unpack("!Q", head)
                conn.setblocking(True)  # os.sendfile needs a blocking descriptor
                out, sent = conn.fileno(), 0
                while sent < count:
                    offset = sent % SINK_CHUNK
                    n = os.sendfile(out, source, offset, min(count - sent, SINK_CHUNK - offset))
                    if n == 0:
                        return
                    sent += n
                conn.shutdown(socket.SHUT_WR)

        def hold(conn: socket.socket) -> None:
            with conn:
                conn.settimeout(3600)
                conn.sendall(b"x")
                while conn.recv(4096):
                    pass

        def serve(sock: socket.socket, mode: str) -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                try:
                    if mode == "small":
                        with conn:
                            conn.sendall(b"x")
                        continue
                    target = bulk if mode == "bulk" else hold
                    threading.Thread(target=target, args=(conn,), daemon=True).start()
                except OSError:
                    conn.close()

        for mode, sock in listeners.items():
            threading.Thread(target=serve, args=(sock, mode), daemon=True).start()
        ports = {mode: sock.getsockname()[1] for mode, sock in listeners.items()}
        print(json.dumps({"ok": True, "ports": ports, "tmpfs": where is not None}), flush=True)
        sys.stdin.read()  # the parent closes our stdin (or dies): stop
    return 0


# --- the client: a separate process, one JSON command per line -----------------------------


def open_stream(proxy: tuple[str, int] | None, port: int) -> tuple[socket.socket, bytes]:
    """A connection to the sink's ``port``: direct, or a CONNECT tunnel through ``proxy``.

    Returns the socket and any payload bytes read with the proxy's answer.
    """
    if proxy is None:
        return connect(SINK_HOST, port), b""
    sock = connect(*proxy)
    try:
        target = f"{SINK_HOST}:{port}"
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                raise BenchError(f"the proxy closed without answering CONNECT {target}")
            answer += chunk
            if len(answer) > 65536:
                raise BenchError("the proxy's answer head is over 64 KiB")
        head, _, rest = answer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if status.split()[1:2] != ["200"]:
            raise BenchError(f"CONNECT {target} refused: {status!r}")
        return sock, rest
    except BaseException:
        sock.close()
        raise


def _proxy(value: list[Any] | None) -> tuple[str, int] | None:
    return None if value is None else (str(value[0]), int(value[1]))


def op_bulk(proxy: list[Any] | None, port: int, nbytes: int) -> dict[str, Any]:
    buffer = bytearray(CLIENT_BUFFER)
    started = time.perf_counter()
    sock, got_bytes = open_stream(_proxy(proxy), port)
    with sock:
        sock.sendall(struct.pack("!Q", nbytes))
        got, calls = len(got_bytes), 0
        while True:
            n = sock.recv_into(buffer)
            if n == 0:
                break
            got += n
            calls += 1
        seconds = time.perf_counter() - started
    if got != nbytes:
        raise BenchError(f"received {got} bytes, expected {nbytes}")
    return {"seconds": seconds, "bytes": got, "recv_calls": calls}


def _one_tunnel(proxy: tuple[str, int] | None, port: int) -> None:
    sock, first = open_stream(proxy, port)
    with sock:
        while not first:
            first = sock.recv(64)
            if not first:
                raise BenchError("the stream closed before its first byte")


def op_setup(proxy: list[Any] | None, port: int, count: int, workers: int) -> dict[str, Any]:
    target = _proxy(proxy)
    errors: list[str] = []
    shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    gate = threading.Barrier(workers + 1)

    def work(n: int) -> None:
        try:
            gate.wait(IO_TIMEOUT)
            for _ in range(n):
                _one_tunnel(target, port)
        except BaseException as e:
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in shares]
    for thread in threads:
        thread.start()
    gate.wait(IO_TIMEOUT)
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise BenchError(f"{len(errors)} of {workers} workers failed; first: {errors[0]}")
    return {"seconds": seconds, "tunnels": count}


_held: list[socket.socket] = []


def op_hold(proxy: list[Any] | None, port: int, count: int) -> dict[str, Any]:
    for _ in range(count):
        sock, first = open_stream(_proxy(proxy), port)
        _held.append(sock)
        while not first:
            first = sock.recv(64)
            if not first:
                raise BenchError("a held tunnel closed before its first byte")
    return {"held": len(_held)}


def op_release() -> dict[str, Any]:
    n = len(_held)
    while _held:
        _held.pop().close()
    return {"released": n}


def op_refused(proxy: list[Any], port: int) -> dict[str, Any]:
    """CONNECT to a port the allowlist does not name: the answer's status line."""
    try:
        sock, _ = open_stream(_proxy(proxy), port)
    except BenchError as e:
        return {"refused": True, "detail": str(e)}
    sock.close()
    return {"refused": False, "detail": "200"}


def client_main() -> int:
    """``--role client``: run one JSON command per stdin line, answer one JSON line each."""
    ops: dict[str, Callable[..., dict[str, Any]]] = {
        "bulk": op_bulk,
        "setup": op_setup,
        "hold": op_hold,
        "release": op_release,
        "refused": op_refused,
    }
    print(json.dumps({"ok": True}), flush=True)
    for line in sys.stdin:
        try:
            command = json.loads(line)
            reply = {"ok": True, **ops[command["op"]](**command.get("args", {}))}
        except Exception as e:
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    op_release()
    return 0


# --- the parent: processes, measurements, report ----------------------------------------------

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a helper role: get SIGTERM when the benchmark dies, whatever kills it."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent is already gone
        raise SystemExit(1)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watchdog_main() -> int:
    """``--role watchdog``: stop the gate and squid if the benchmark dies without doing it.

    Reads ``watch PID`` / ``forget PID`` lines. At end of input (the benchmark closed
    it, or died: its end of the pipe closes either way) it sends SIGTERM to every pid
    still watched, then SIGKILL to what is left after STOP_TIMEOUT. A pdeathsig would
    not do for squid: the kernel clears it when squid drops root for its own user.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group
    watched: set[int] = set()
    for line in sys.stdin:
        verb, _, pid = line.partition(" ")
        (watched.add if verb == "watch" else watched.discard)(int(pid))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in list(watched):
            if not _exists(pid):
                watched.discard(pid)
                continue
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while watched and time.monotonic() < deadline:
            watched = {pid for pid in watched if _exists(pid)}
            if watched:
                time.sleep(0.05)  # polling a non-child, bounded by the deadline
    return 0


class Watchdog:
    """The parent's end of ``--role watchdog``: every outside process is registered here."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--role", "watchdog"],
            stdin=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )

    def tell(self, verb: str, pid: int) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(f"{verb} {pid}\n")
            self.proc.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(2 * STOP_TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


WATCHDOG: Watchdog | None = None


class Process:
    """A child process with a deadline on every wait, stopped for sure by ``stop``."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin: Any = subprocess.DEVNULL,
        stdout: Any = subprocess.DEVNULL,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._on_line = on_line
        try:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                start_new_session=True,  # a Ctrl-C reaches the benchmark only; it stops them
            )
        except OSError as e:
            raise BenchError(f"cannot start {name} ({shlex.join(argv)}): {e}") from e
        self.pid = self.proc.pid
        if WATCHDOG is not None:
            WATCHDOG.tell("watch", self.pid)
        threading.Thread(target=self._drain_stderr, name=f"{name}-stderr", daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip("\n"))
            if self._on_line is not None:
                self._on_line(line)

    def why_dead(self) -> str:
        tail = "\n    ".join(list(self.stderr_tail)[-15:]) or "(no stderr)"
        return f"{self.name} exited with status {self.proc.returncode}; stderr:\n    {tail}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                sys.stderr.write(f"bench: {self.name} ignored signal {sig}: killing it\n")
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        if WATCHDOG is not None:
            WATCHDOG.tell("forget", self.pid)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Helper(Process):
    """One of this script's own roles (sink, client): JSON lines both ways."""

    def __init__(self, role: str) -> None:
        self._answers: queue.Queue[str | None] = queue.Queue()
        super().__init__(
            role,
            [sys.executable, str(Path(__file__).resolve()), "--role", role],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        threading.Thread(target=self._read, name=f"{role}-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def answer(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name}: no answer within {timeout:.0f} s") from None
        if line is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT)
            raise BenchError(self.why_dead())
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise BenchError(f"{self.name}: {reply.get('error')}")
        return reply

    def call(self, op: str, timeout: float, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise BenchError(f"{self.name}: cannot send {op}: {e}") from e
        return self.answer(timeout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.stdin is not None:  # closing stdin is how a helper is told to stop
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT)
        super().stop(sig)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((check_loopback(host), 0))
        return int(sock.getsockname()[1])


def wait_listening(process: Process, host: str, port: int, log: Path | None) -> None:
    """Until ``host:port`` accepts a connection, or the process dies, or the deadline."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if not process.alive():
            extra = ""
            if log is not None and log.exists():
                extra = "\n  " + "\n  ".join(log.read_text(errors="replace").splitlines()[-15:])
            raise BenchError(process.why_dead() + extra)
        try:
            with connect(host, port, timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(
                f"{process.name} did not listen on {host}:{port} within {START_TIMEOUT:.0f} s"
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.proc.wait(0.05)  # returns at once if it dies


# --- the gate ------------------------------------------------------------------------------


class Gate(Process):
    def __init__(self, records: TextIO) -> None:
        self.token = secrets.token_urlsafe(24)
        self._started = threading.Event()
        self.proxy: tuple[str, int] | None = None
        self.control: tuple[str, int] | None = None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONDONTWRITEBYTECODE": "1",
            # Control on the proxy's address: 127.0.0.1 must stay a target, and every
            # listen address joins the gate's own (always denied) addresses.
            "AGENTCELL_PROXY_LISTEN": f"{GATE_HOST}:0",
            "AGENTCELL_CONTROL_LISTEN": f"{GATE_HOST}:0",
            "AGENTCELL_GATE_TOKEN": self.token,
            "AGENTCELL_OWN_NETWORKS": f"{GATE_HOST}/32",
            "AGENTCELL_TENANT": "bench",
            "AGENTCELL_CELL": "bench",
        }
        super().__init__(
            "gate",
            [sys.executable, "-m", "agentcell.gate.egress"],
            env=env,
            stdout=records,
            on_line=self._line,
        )
        if not self._started.wait(START_TIMEOUT) or self.proxy is None:
            if not self.alive():
                raise BenchError(self.why_dead())
            raise BenchError(f"the gate did not report 'started:' within {START_TIMEOUT:.0f} s")

    def _line(self, line: str) -> None:
        match = re.search(r"started: proxy=([\d.]+):(\d+) control=([\d.]+):(\d+)", line)
        if match:
            self.proxy = (match.group(1), int(match.group(2)))
            self.control = (match.group(3), int(match.group(4)))
            self._started.set()

    def load_policy(self, policy: dict[str, Any]) -> str:
        assert self.control is not None
        host, port = self.control
        conn = http.client.HTTPConnection(check_loopback(host), port, timeout=IO_TIMEOUT)
        try:
            conn.request(
                "PUT",
                "/v1/policy",
                body=json.dumps(policy),
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/json",
                },
            )
            response = conn.getresponse()
            body = response.read().decode("utf-8", "replace")
        except OSError as e:
            raise BenchError(f"loading the gate's policy failed: {e}") from e
        finally:
            conn.close()
        if response.status != 200:
            raise BenchError(f"the gate refused the policy: {response.status} {body}")
        return str(json.loads(body).get("digest", ""))


# --- squid ---------------------------------------------------------------------------------

SQUID_CONF = """\
# agentcell bench: the gate's allowlist, squid-style. CONNECT to the sink only.
http_port {listen}
acl bench_sink dst 127.0.0.1/32
acl bench_ports port {ports}
acl CONNECT method CONNECT
http_access allow CONNECT bench_sink bench_ports
http_access deny all
cache deny all
cache_mem 0 MB
pid_filename {dir}/squid.pid
access_log stdio:{dir}/access.log
cache_log {dir}/cache.log
cache_store_log none
logfile_rotate 0
coredump_dir {dir}
shutdown_lifetime 1 seconds
# stay on loopback: no resolver but this host's, no ICMP pinger, no ICP/HTCP
dns_nameservers 127.0.0.1
pinger_enable off
netdb_filename none
icp_port 0
htcp_port 0
visible_hostname agentcell-bench
max_filedescriptors 8192
"""


def squid_binary() -> str | None:
    return shutil.which("squid") or next(
        (p for p in ("/usr/sbin/squid", "/usr/local/sbin/squid") if os.access(p, os.X_OK)), None
    )


def squid_version(binary: str) -> str:
    out = subprocess.run(
        [binary, "-v"], capture_output=True, text=True, timeout=START_TIMEOUT, check=False
    )
    first = out.stdout.splitlines()[0] if out.stdout else ""
    match = re.search(r"Version (\S+)", first)
    return match.group(1) if match else first


class Squid(Process):
    def __init__(self, binary: str, workdir: Path, sink_ports: list[int]) -> None:
        workdir.mkdir(mode=0o777)
        workdir.chmod(0o777)  # squid drops root for its cache_effective_user (Debian: proxy)
        self.port = free_port(SINK_HOST)
        self.conf = workdir / "squid.conf"
        self.log = workdir / "cache.log"
        self.conf.write_text(
            SQUID_CONF.format(
                listen=f"{SINK_HOST}:{self.port}",
                ports=" ".join(map(str, sink_ports)),
                dir=workdir,
            )
        )
        check = subprocess.run(
            [binary, "-k", "parse", "-f", str(self.conf)],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        if check.returncode != 0:
            raise BenchError(f"squid refused its config:\n{check.stdout}{check.stderr}")
        super().__init__("squid", [binary, "-N", "-f", str(self.conf)])
        wait_listening(self, SINK_HOST, self.port, self.log)
        self.proxy = (SINK_HOST, self.port)


# --- /proc -----------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children[ppid].append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def memory(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (bytes) and thread count, summed over ``pid`` and its descendants."""
    total = {"rss": 0, "hwm": 0, "threads": 0, "processes": 0}
    for p in process_tree(pid):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        total["rss"] += int(fields["VmRSS"].split()[0]) * 1024
        total["hwm"] += int(fields["VmHWM"].split()[0]) * 1024
        total["threads"] += int(fields["Threads"])
        total["processes"] += 1
    return total


def cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` and its descendants (exited threads included)."""
    user = system = 0.0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / _TICK
        system += int(fields[12]) / _TICK
    return user, system


# --- the run ---------------------------------------------------------------------------------


def rotated(items: list[str], by: int) -> list[str]:
    by %= len(items)
    return items[by:] + items[:by]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every ``finally`` stops its processes."""

    def raise_exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, raise_exit) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    squid_path = None if args.no_squid else squid_binary()
    squid_note = ""
    if args.no_squid:
        squid_note = "skipped (--no-squid)"
    elif squid_path is None:
        squid_note = (
            "skipped: squid is not installed (Debian package 'squid': apt-get install -y squid)"
        )
        print(f"bench: {squid_note}; the squid columns stay empty", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentcell-bench-")))
        tmp.chmod(0o711)
        started: list[Process] = []

        def stop_all() -> None:
            for process in reversed(started):
                process.stop()

        stack.callback(stop_all)

        def progress(message: str) -> None:
            print(
                f"bench: [{time.monotonic() - began:6.1f} s] {message}", file=sys.stderr, flush=True
            )

        sink = Helper("sink")
        started.append(sink)
        ports = sink.answer(START_TIMEOUT)["ports"]
        client = Helper("client")
        started.append(client)
        client.answer(START_TIMEOUT)
        sink_ports = [ports["bulk"], ports["small"], ports["hold"]]

        records_path = tmp / "gate-records.jsonl"
        records = stack.enter_context(records_path.open("w"))
        gate = Gate(records)
        started.append(gate)
        assert gate.proxy is not None
        assert gate.control is not None
        unlisted_port = gate.control[1]  # not in the allowlist (and nothing on 127.0.0.1)
        policy = {"allow": [{"cidr": f"{SINK_HOST}/32", "ports": sink_ports}]}
        digest = gate.load_policy(policy)
        progress(f"gate pid {gate.pid} on {gate.proxy[0]}:{gate.proxy[1]}, policy {digest}")

        squid: Squid | None = None
        version = ""
        if squid_path is not None:
            version = squid_version(squid_path)
            squid = Squid(squid_path, tmp / "squid", sink_ports)
            started.append(squid)
            progress(f"squid {version} pid {squid.pid} on {SINK_HOST}:{squid.port}")

        proxies: dict[str, list[Any] | None] = {"direct": None, "gate": list(gate.proxy)}
        pids = {"gate": gate.pid}
        if squid is not None:
            proxies["squid"] = list(squid.proxy)
            pids["squid"] = squid.pid
        proxied = [name for name in proxies if name != "direct"]

        # Both proxies must refuse what the allowlist does not name (the control port here).
        refused = {}
        for name in proxied:
            answer = client.call("refused", IO_TIMEOUT, proxy=proxies[name], port=unlisted_port)
            if not answer["refused"]:
                raise BenchError(f"{name} allowed a CONNECT the allowlist does not name")
            refused[name] = answer["detail"]

        mem: dict[str, dict[str, Any]] = {name: {} for name in pids}
        for name, pid in pids.items():
            mem[name]["idle"] = memory(pid)

        bulk_timeout = max(IO_TIMEOUT, args.bytes / 20e6)
        setup_timeout = max(IO_TIMEOUT, args.tunnels * 0.05)
        warm = min(args.bytes, WARMUP_BYTES)
        for proxy in proxies.values():
            client.call("bulk", bulk_timeout, proxy=proxy, port=ports["bulk"], nbytes=warm)
            client.call(
                "setup",
                setup_timeout,
                proxy=proxy,
                port=ports["small"],
                count=WARMUP_TUNNELS,
                workers=1,
            )
        for name, pid in pids.items():
            mem[name]["idle_after_warmup"] = memory(pid)
        progress("warmed up; measuring")

        throughput: dict[str, list[float]] = {name: [] for name in proxies}
        setup: dict[str, dict[str, list[float]]] = {
            mode: {name: [] for name in proxies} for mode in ("sequential", "parallel")
        }
        # CPU seconds (user, system) by contender, kind of measurement and process.
        spent: dict[str, dict[str, dict[str, list[float]]]] = {
            name: {kind: {} for kind in ("bulk", "setup")} for name in proxies
        }
        tunnels_done = dict.fromkeys(proxies, 0)

        def measured(name: str, kind: str, timeout: float, **call: Any) -> dict[str, Any]:
            """Run ``kind`` through ``name``; charge the CPU time of every process to it."""
            watched = {"sink": sink.pid, "client": client.pid}
            if name in pids:
                watched["proxy"] = pids[name]
            before = {proc: cpu(pid) for proc, pid in watched.items()}
            answer = client.call(kind, timeout, proxy=proxies[name], **call)
            for proc, pid in watched.items():
                after = cpu(pid)
                total = spent[name][kind].setdefault(proc, [0.0, 0.0])
                total[0] += after[0] - before[proc][0]
                total[1] += after[1] - before[proc][1]
            return answer

        names = list(proxies)
        for r in range(args.rounds):
            line = []
            for name in rotated(names, r):
                answer = measured(name, "bulk", bulk_timeout, port=ports["bulk"], nbytes=args.bytes)
                rate = answer["bytes"] / answer["seconds"]
                throughput[name].append(rate)
                line.append(f"{name} {rate / GB:.2f} GB/s")
            for mode, workers in (("sequential", 1), ("parallel", args.workers)):
                for name in rotated(names, r):
                    answer = measured(
                        name,
                        "setup",
                        setup_timeout,
                        port=ports["small"],
                        count=args.tunnels,
                        workers=workers,
                    )
                    setup[mode][name].append(answer["tunnels"] / answer["seconds"])
                    tunnels_done[name] += answer["tunnels"]
                line.append(f"{mode} " + " ".join(f"{n} {setup[mode][n][-1]:.0f}/s" for n in names))
            progress(f"round {r + 1}/{args.rounds}: " + "; ".join(line))

        # Memory while --hold tunnels stay open, one proxy at a time.
        for name in proxied:
            client.call(
                "hold", setup_timeout, proxy=proxies[name], port=ports["hold"], count=args.hold
            )
            mem[name]["holding"] = memory(pids[name])
            client.call("release", IO_TIMEOUT)
        # Let each proxy notice the closes before its idle figure: wait for its threads
        # (gate) to drop back, bounded.
        deadline = time.monotonic() + STOP_TIMEOUT
        while (
            time.monotonic() < deadline
            and memory(gate.pid)["threads"] > mem["gate"]["idle"]["threads"]
        ):
            with contextlib.suppress(subprocess.TimeoutExpired):
                gate.proc.wait(0.05)
        for name, pid in pids.items():
            mem[name]["idle_after_load"] = memory(pid)
            # VmHWM is synced lazily: never report a peak below a figure we saw ourselves.
            mem[name]["peak_rss"] = max(
                [mem[name]["idle_after_load"]["hwm"]] + [f["rss"] for f in mem[name].values()]
            )
        progress("measured memory with open tunnels")

        parsed = [json.loads(line) for line in records_path.read_text().splitlines()]
        decisions = collections.Counter(f"{r.get('decision')}:{r.get('reason')}" for r in parsed)
        gate_errors = sum(1 for line in gate.stderr_tail if "failed" in line)
        expected_allows = 1 + WARMUP_TUNNELS + args.rounds * (1 + 2 * args.tunnels) + args.hold
        allowed = decisions.get("allow:allowed", 0)
        if allowed != expected_allows:
            print(
                f"bench: warning: the gate wrote {allowed} 'allowed' records, "
                f"expected {expected_allows}: {dict(decisions)}",
                file=sys.stderr,
            )

    # --- figures -----------------------------------------------------------------------------
    tput = {name: median(values) for name, values in throughput.items()}

    def paired(a: str, b: str, series: dict[str, list[float]]) -> float | None:
        if a not in series or b not in series:
            return None
        return median([x / y for x, y in zip(series[a], series[b], strict=True)])

    rates = {mode: {n: median(v) for n, v in by.items()} for mode, by in setup.items()}
    gigabytes = args.bytes * args.rounds / GB
    cpu_figures = {
        name: {
            "bulk_s_per_gb": {
                proc: {"user": u / gigabytes, "system": k / gigabytes}
                for proc, (u, k) in spent[name]["bulk"].items()
            },
            "setup_us_per_tunnel": {
                proc: {"user": u / tunnels_done[name] * 1e6, "system": k / tunnels_done[name] * 1e6}
                for proc, (u, k) in spent[name]["setup"].items()
            },
        }
        for name in proxies
    }
    result: dict[str, Any] = {
        "command": shlex.join([".venv/bin/python", "bench/egress.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "squid": {"version": version, "note": squid_note} if squid_path else {"note": squid_note},
        "parameters": {
            "bytes": args.bytes,
            "tunnels": args.tunnels,
            "rounds": args.rounds,
            "workers": args.workers,
            "hold": args.hold,
        },
        "throughput_bytes_per_s": {"median": tput, "rounds": throughput},
        "throughput_ratio": {
            "gate/direct": paired("gate", "direct", throughput),
            "squid/direct": paired("squid", "direct", throughput),
            "gate/squid": paired("gate", "squid", throughput),
        },
        "setup_tunnels_per_s": {
            mode: {"median": rates[mode], "rounds": setup[mode]} for mode in setup
        },
        "setup_ratio_gate/squid": {mode: paired("gate", "squid", setup[mode]) for mode in setup},
        "memory_bytes": mem,
        "cpu": cpu_figures,
        "refused_unlisted_port": refused,
        "gate_records": dict(decisions),
        "gate_records_expected_allowed": expected_allows,
        "gate_error_lines": gate_errors,
        "seconds": round(time.monotonic() - began, 1),
    }
    return result


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    p = result["parameters"]
    tput = result["throughput_bytes_per_s"]["median"]
    ratio = result["throughput_ratio"]
    setup = result["setup_tunnels_per_s"]
    sratio = result["setup_ratio_gate/squid"]
    mem = result["memory_bytes"]
    has_squid = "squid" in tput

    def r(x: float | None) -> str:
        return "—" if x is None else f"{x:.2f}"

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else ("met" if ok else "**not met**")

    squid_label = f"squid {result['squid'].get('version', '')}".strip() if has_squid else "squid"
    out = [
        "## Egress gate benchmark",
        "",
        f"- machine: {m['cores']} cores ({m['cpu']}, {m['arch']}), Linux {m['kernel']}, "
        f"Python {m['python']}; {squid_label if has_squid else result['squid']['note']}",
        f"- command: `{result['command']}` ({result['seconds']} s, {result['date']})",
        f"- {p['rounds']} rounds, contenders interleaved (order rotated each round); one stream "
        f"of {p['bytes']} bytes per contender per round; {p['tunnels']} tunnels sequential and "
        f"with {p['workers']} workers; ratios are the median of within-round ratios",
        "",
        "| throughput, one stream | direct | gate | squid "
        "| gate/direct | squid/direct | gate/squid |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        "| median GB/s | "
        + " | ".join(
            f"{tput[n] / GB:.2f}" if n in tput else "—" for n in ("direct", "gate", "squid")
        )
        + " | "
        + " | ".join(r(ratio[k]) for k in ("gate/direct", "squid/direct", "gate/squid"))
        + " |",
    ]
    out += [
        "",
        "| new tunnels per second | direct (floor) | gate | squid | gate/squid |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode in ("sequential", "parallel"):
        label = mode if mode == "sequential" else f"parallel ({p['workers']} workers)"
        sq = f"{setup[mode]['median']['squid']:.0f}" if has_squid else "—"
        out.append(
            f"| {label} | {setup[mode]['median']['direct']:.0f} | "
            f"{setup[mode]['median']['gate']:.0f} | {sq} | {r(sratio[mode])} |"
        )
    out += [
        "",
        "| memory (VmRSS; threads) | gate | squid |",
        "| --- | --- | --- |",
    ]
    for key, label in (
        ("idle", "idle, policy loaded"),
        ("holding", f"{p['hold']} tunnels open"),
        ("idle_after_load", "idle after the load"),
    ):
        row = [label]
        for name in ("gate", "squid"):
            figure = mem.get(name, {}).get(key)
            row.append("—" if figure is None else f"{mb(figure['rss'])}; {figure['threads']}")
        out.append("| " + " | ".join(row) + " |")
    out.append(
        "| peak (VmHWM) | "
        + " | ".join(mb(mem[n]["peak_rss"]) if n in mem else "—" for n in ("gate", "squid"))
        + " |"
    )
    cpu_rows = result["cpu"]
    for key, title, fmt in (
        ("bulk_s_per_gb", "CPU s per GB streamed (user + system)", "{:.2f} + {:.2f}"),
        ("setup_us_per_tunnel", "CPU µs per tunnel (user + system)", "{:.0f} + {:.0f}"),
    ):
        out += ["", f"| {title} | sink | client | proxy | all |", "| --- | --- | --- | --- | --- |"]
        for name in ("direct", "gate", "squid"):
            if name not in cpu_rows:
                continue
            figures = cpu_rows[name][key]
            cells = [
                fmt.format(figures[proc]["user"], figures[proc]["system"])
                if proc in figures
                else "—"
                for proc in ("sink", "client", "proxy")
            ]
            total = sum(f["user"] + f["system"] for f in figures.values())
            out.append(
                f"| {name} | " + " | ".join(cells) + f" | {fmt.split(' ')[0].format(total)} |"
            )
    idle_mb = mem["gate"]["idle"]["rss"]
    out += [
        "",
        "| goal | figure | verdict |",
        "| --- | --- | --- |",
        f"| tunnel throughput ≥ 80% of direct | {r(ratio['gate/direct'])} | "
        f"{verdict(ratio['gate/direct'] >= 0.8)} |",
        f"| tunnel throughput ≥ squid's | {r(ratio['gate/squid'])} | "
        f"{verdict(None if ratio['gate/squid'] is None else ratio['gate/squid'] >= 1.0)} |",
    ]
    for mode in ("sequential", "parallel"):
        value = sratio[mode]
        out.append(
            f"| tunnel setup rate ≥ squid's ({mode}) | {r(value)} | "
            f"{verdict(None if value is None else value >= 1.0)} |"
        )
    out.append(f"| gate RSS < 30 MB idle | {mb(idle_mb)} | {verdict(idle_mb < 30e6)} |")
    allowed = result["gate_records"].get("allow:allowed", 0)
    out += [
        "",
        f"Checks: both proxies refused a CONNECT to a port outside the allowlist; the gate wrote "
        f"{allowed} 'allowed' decision records for {result['gate_records_expected_allowed']} "
        f"tunnels opened through it; {result['gate_error_lines']} error lines on its stderr.",
    ]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bytes",
        type=parse_size,
        default=parse_size("1G"),
        help="bytes per throughput stream (K/M/G binary suffixes; default 1G)",
    )
    parser.add_argument(
        "--tunnels",
        type=positive,
        default=500,
        help="tunnels per setup-rate measurement (default 500)",
    )
    parser.add_argument("--rounds", type=positive, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--workers",
        type=positive,
        default=4,
        help="parallel workers for the second setup measurement (default 4)",
    )
    parser.add_argument(
        "--hold",
        type=positive,
        default=100,
        help="tunnels held open for the memory-under-load figure (default 100)",
    )
    parser.add_argument("--no-squid", action="store_true", help="do not run squid")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON (default {RESULTS})")
    parser.add_argument("--role", choices=("sink", "client", "watchdog"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "watchdog":
        return watchdog_main()
    if args.role is not None:
        die_with_parent()
        return sink_main() if args.role == "sink" else client_main()
    global WATCHDOG
    WATCHDOG = Watchdog()
    with signals_raise():
        try:
            result = run(args)
        except BenchError as e:
            print(f"bench: error: {e}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, SystemExit) as e:
            print("bench: interrupted; the processes it started are stopped", file=sys.stderr)
            return e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 130
        finally:
            WATCHDOG.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"JSON: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
