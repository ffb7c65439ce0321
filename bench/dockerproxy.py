"""Benchmark: the docker proxy versus the engine socket and a Tecnativa-style haproxy.

One run, the contenders interleaved round by round (their order rotated every round):

- **direct**: the engine's unix socket (``/var/run/docker.sock``);
- **proxy**: ``python -m agentcell.gate.dockerproxy`` on 127.0.0.1 for a test
  tenant/cell/network (the way tests/gate/test_dockerproxy_support.py starts it);
- **haproxy**: Debian's haproxy in front of the unix socket with the configuration
  docker-socket-proxy (Tecnativa) uses: ``mode http``, ``option http-server-close``,
  ``http-request deny unless METH_GET``, an ``allow`` ACL on
  ``^(/v[\\d.]+)?/_ping`` and ``^(/v[\\d.]+)?/containers``, ``deny`` otherwise.

For each of ``GET /_ping`` and ``GET /v1.41/containers/json?all=1`` (``all``: the
fixture is created, not started) at each concurrency (``--concurrency 1,4,16``):
``--seconds`` of closed-loop load (each worker one keep-alive connection, one request
at a time), requests/s and p50/p99 latency. The client runs in its own process
(asyncio, raw HTTP/1.1), apart from every server.
Figures are medians over rounds; a ratio to direct is the median of the within-round
ratios. The proxy's VmRSS is read idle after start (before any traffic), sampled
under load (max), and idle after the load; VmHWM is its peak.

The fixture: an internal network and 10 containers created (not started) through the
proxy, so they carry the owner labels, plus 10 foreign ones made directly on the
engine; what each path returns for containers/json is counted. Everything created
carries ``agentcell.test=bench-dockerproxy`` (the proxy's children, which may not carry
``agentcell.*`` labels of the client's choosing, are found by their bench tenant) and
is removed at the end. Every wait has a deadline; every process started is killed on
exit. Prints a markdown report and writes bench/results/dockerproxy.json.

    .venv/bin/python bench/dockerproxy.py [--rounds 3] [--seconds 2] \
        [--concurrency 1,4,16] [--no-haproxy] [--output FILE]

haproxy is the Debian package ``haproxy``; without it the haproxy columns are skipped
with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "dockerproxy.json"
ENGINE = "/var/run/docker.sock"
IMAGE = "agentcell/demo-agent:latest"
LABEL = "agentcell.test=bench-dockerproxy"
PATHS = {"ping": "/_ping", "list": "/v1.41/containers/json?all=1"}
OWNED = 10
FOREIGN = 10
WAIT = 20.0  # deadline for a server to start, an answer from the client process, a stop

# ---------------------------------------------------------------- client process


async def _open(target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if target.startswith("unix:"):
        return await asyncio.open_unix_connection(target[5:])
    host, _, port = target.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = -1
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers from any contender
                break
            parts.append(await reader.readexactly(size + 2))
        body = b"".join(p[:-2] for p in parts)
    elif length >= 0:
        body = await reader.readexactly(length)
    else:
        raise ValueError("response without framing")
    return status, body


async def _load(target: str, path: str, workers: int, seconds: float) -> dict[str, Any]:
    request = f"GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n".encode()
    latencies: list[float] = []
    errors: list[str] = []
    statuses: dict[int, int] = {}
    reconnects = 0
    start = time.perf_counter()
    stop_at = start + seconds

    async def worker() -> None:
        nonlocal reconnects
        conn = await _open(target)
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                status, _ = await asyncio.wait_for(_exchange(*conn, request), 30)
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as e:
                errors.append(repr(e))
                conn[1].close()
                conn = await _open(target)
                reconnects += 1
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
        conn[1].close()

    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] * 1000 if n else float("nan")

    return {
        "requests": n,
        "elapsed": elapsed,
        "rps": n / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": len(errors),
        "first_errors": errors[:3],
        "reconnects": reconnects,
    }


async def _once(target: str, path: str) -> dict[str, Any]:
    conn = await _open(target)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode()
        status, body = await asyncio.wait_for(_exchange(*conn, request), 30)
    finally:
        conn[1].close()
    doc = json.loads(body) if body[:1] in (b"[", b"{") else body.decode(errors="replace")
    return {"status": status, "body": doc}


def client_main() -> int:
    """Serve jobs from stdin (one JSON a line), answer on stdout; CPU times included."""
    for line in sys.stdin:
        job = json.loads(line)
        before = os.times()
        try:
            if job["op"] == "load":
                out = asyncio.run(_load(job["target"], job["path"], job["workers"], job["seconds"]))
            else:
                out = asyncio.run(_once(job["target"], job["path"]))
        except Exception as e:  # reported to the parent, which decides
            out = {"failed": repr(e)}
        after = os.times()
        out["client_cpu_s"] = (after.user - before.user) + (after.system - before.system)
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


# ---------------------------------------------------------------- parent: processes


_PR_SET_PDEATHSIG = 1
_STARTED: list[subprocess.Popen[Any]] = []


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(argv, preexec_fn=_die_with_parent, **kw)  # noqa: PLW1509 (no threads yet)
    _STARTED.append(proc)
    return proc


def kill_all() -> None:
    for proc in _STARTED:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    for proc in _STARTED:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Client:
    """The client process: one job at a time, every answer awaited with a deadline."""

    def __init__(self) -> None:
        self.proc = spawn(
            [sys.executable, __file__, "--client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.answers.put(line)

    def run(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        try:
            answer: dict[str, Any] = json.loads(self.answers.get(timeout=timeout))
        except queue.Empty:
            raise RuntimeError(f"client did not answer within {timeout}s: {job}") from None
        if "failed" in answer:
            raise RuntimeError(f"client failed on {job}: {answer['failed']}")
        return answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def memory(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "Threads"):
                fields[name] = int(value.split()[0]) * (1 if name == "Threads" else 1024)
    return {"rss": fields["VmRSS"], "hwm": fields["VmHWM"], "threads": fields["Threads"]}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """Max VmRSS of a process, sampled every 50 ms while load runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, memory(self.pid)["rss"])

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=2)
        return self.peak


# ---------------------------------------------------------------- fixture on the engine


def docker(*args: str, check: bool = True) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    done = subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.returncode} {done.stderr}")
    return done.stdout


def cleanup(tenant: str | None) -> None:
    labels = [LABEL] + ([f"agentcell.tenant={tenant}"] if tenant else [])
    for label in labels:
        ids = docker("ps", "-aq", "--filter", f"label={label}", check=False).split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False)
    for label in labels:
        nets = docker("network", "ls", "-q", "--filter", f"label={label}", check=False).split()
        if nets:
            docker("network", "rm", *nets, check=False)


def start_proxy(
    tmp: Path, tenant: str, cell: str, network: str
) -> tuple[subprocess.Popen[Any], int]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AGENTCELL_PROXY_LISTEN": "127.0.0.1:0",
        "AGENTCELL_ENGINE_SOCKET": ENGINE,
        "AGENTCELL_TENANT": tenant,
        "AGENTCELL_CELL": cell,
        "AGENTCELL_NETWORK": network,
        "AGENTCELL_LIMIT_CONTAINERS": str(OWNED + 5),
        "AGENTCELL_LIMIT_CPUS": "4",
        "AGENTCELL_LIMIT_MEMORY": "4g",
    }
    records = open(tmp / "proxy.records", "wb")  # noqa: SIM115  # the proxy's stdout
    errlog = tmp / "proxy.log"
    proc = spawn(
        [sys.executable, "-m", "agentcell.gate.dockerproxy"],
        env=env,
        stdout=records,
        stderr=open(errlog, "wb"),  # noqa: SIM115
        cwd=ROOT,
    )

    def started() -> int | None:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited {proc.returncode}: {errlog.read_text()}")
        for line in errlog.read_text().splitlines():
            if "docker proxy started: listen=" in line:
                return int(line.split("listen=")[1].split()[0].rpartition(":")[2])
        return None

    return proc, wait_until(started, WAIT, "the docker proxy to start")


HAPROXY_CFG = """\
# Tecnativa docker-socket-proxy's haproxy.cfg, with CONTAINERS=1 PING=1 and POST=0
global
    maxconn 4000

defaults
    mode http
    option http-server-close
    option redispatch
    retries 3
    timeout http-request 10s
    timeout queue 1m
    timeout connect 10s
    timeout client 10m
    timeout server 10m
    timeout http-keep-alive 10s
    timeout check 10s
    maxconn 3000

backend dockerbackend
    server dockersocket {socket}

frontend dockerfrontend
    bind 127.0.0.1:{port}
    http-request deny unless METH_GET
    http-request allow if {{ path,url_dec -m reg -i ^(/v[\\d\\.]+)?/_ping }}
    http-request allow if {{ path,url_dec -m reg -i ^(/v[\\d\\.]+)?/containers }}
    http-request deny
    default_backend dockerbackend
"""


def start_haproxy(tmp: Path, binary: str) -> tuple[subprocess.Popen[Any], int]:
    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(socket=ENGINE, port=port))
    check = subprocess.run(
        [binary, "-c", "-f", str(cfg)], check=False, capture_output=True, text=True, timeout=WAIT
    )
    if check.returncode != 0:
        raise RuntimeError(f"haproxy config refused: {check.stdout}{check.stderr}")
    with (tmp / "haproxy.log").open("wb") as log:
        proc = spawn([binary, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=log)

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"haproxy exited {proc.returncode}: {(tmp / 'haproxy.log').read_text()}"
            )
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, WAIT, "haproxy to listen")
    return proc, port


def raw_request(port: int, method: str, target: str, body: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


# ---------------------------------------------------------------- the run


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    engine = docker("version", "--format", "{{.Server.Version}}", check=False).strip()
    hap = ""
    if shutil.which("haproxy"):
        hap = subprocess.run(
            ["haproxy", "-v"], check=False, capture_output=True, text=True, timeout=10
        ).stdout
        hap = hap.splitlines()[0] if hap else ""
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "engine": engine,
        "haproxy": hap,
    }


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--no-haproxy", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.client:
        return client_main()
    levels = [int(c) for c in args.concurrency.split(",")]
    command = "python bench/dockerproxy.py " + " ".join(sys.argv[1:])

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    tenant = "bdp" + uuid.uuid4().hex[:8]
    cell = "bench"
    network = f"bdp-{tenant}-{cell}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-dockerproxy-"))
    try:
        cleanup(None)  # leftovers of an earlier run that died
        return run(args, levels, command, tenant, cell, network, tmp)
    finally:
        kill_all()
        cleanup(tenant)
        shutil.rmtree(tmp, ignore_errors=True)


def run(
    args: argparse.Namespace,
    levels: list[int],
    command: str,
    tenant: str,
    cell: str,
    network: str,
    tmp: Path,
) -> int:
    docker(
        "network", "create", "--internal", "--label", LABEL,
        "--label", f"agentcell.tenant={tenant}", "--label", f"agentcell.cell={cell}",
        "--label", "agentcell.role=network", network,
    )  # fmt: skip
    proxy, proxy_port = start_proxy(tmp, tenant, cell, network)
    time.sleep(0.5)  # let start-up allocations settle before "idle"
    rss_idle_start = memory(proxy.pid)

    contenders: dict[str, str] = {"direct": f"unix:{ENGINE}", "proxy": f"127.0.0.1:{proxy_port}"}
    haproxy_note = ""
    binary = shutil.which("haproxy")
    if args.no_haproxy:
        haproxy_note = "haproxy skipped (--no-haproxy)"
    elif binary is None:
        haproxy_note = "haproxy skipped: not installed (apt-get install -y haproxy)"
    else:
        _, hport = start_haproxy(tmp, binary)
        contenders["haproxy"] = f"127.0.0.1:{hport}"
    if haproxy_note:
        print(haproxy_note, file=sys.stderr)

    # the fixture: owned children through the proxy, foreign containers on the engine
    for i in range(OWNED):
        body = json.dumps(
            {
                "Image": IMAGE,
                "Cmd": ["true"],
                "HostConfig": {"Memory": 64 * 1024**2, "NanoCpus": 100_000_000},
            }
        ).encode()
        status, answer = raw_request(
            proxy_port, "POST", f"/v1.41/containers/create?name={tenant}-own{i}", body
        )
        if status != 201:
            raise RuntimeError(f"create through the proxy: {status} {answer[:300]!r}")
    for i in range(FOREIGN):
        docker(
            "create", "--name", f"{tenant}-foreign{i}", "--network", "none", "--label", LABEL, IMAGE
        )
    rss_after_fixture = memory(proxy.pid)

    client = Client()
    timeout = args.seconds + 60
    counts = {}
    for name, target in contenders.items():
        once = client.run({"op": "once", "target": target, "path": PATHS["list"]}, timeout)
        counts[name] = {
            "status": once["status"],
            "containers": len(once["body"]) if isinstance(once["body"], list) else None,
        }
        ping = client.run({"op": "once", "target": target, "path": PATHS["ping"]}, timeout)
        counts[name]["ping"] = f"{ping['status']} {ping['body']!r}"
    # warm-up: every contender, every path, briefly
    for target in contenders.values():
        for path in PATHS.values():
            client.run(
                {"op": "load", "target": target, "path": path, "workers": 4, "seconds": 0.5},
                timeout,
            )

    names = list(contenders)
    samples: dict[str, list[dict[str, Any]]] = {}
    rss_under_load = 0
    proxy_cpu: dict[str, list[float]] = {}
    for rnd in range(args.rounds):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for ep, path in PATHS.items():
            for c in levels:
                for name in order:
                    sampler = Sampler(proxy.pid) if name == "proxy" else None
                    cpu0 = cpu_seconds(proxy.pid) if name == "proxy" else 0.0
                    res = client.run(
                        {"op": "load", "target": contenders[name], "path": path,
                         "workers": c, "seconds": args.seconds},
                        timeout,
                    )  # fmt: skip
                    if sampler is not None:
                        rss_under_load = max(rss_under_load, sampler.stop())
                        cpu = cpu_seconds(proxy.pid) - cpu0
                        proxy_cpu.setdefault(f"{ep}/{c}", []).append(
                            cpu / max(res["requests"], 1) * 1e6
                        )
                    res["round"] = rnd
                    samples.setdefault(f"{name}/{ep}/{c}", []).append(res)
                    print(
                        f"round {rnd} {name:8} {ep:4} c={c:<3} {res['rps']:8.0f} req/s "
                        f"p50 {res['p50_ms']:.3f} ms p99 {res['p99_ms']:.3f} ms "
                        f"errors {res['errors']} statuses {res['statuses']}",
                        file=sys.stderr,
                        flush=True,
                    )
    time.sleep(1.0)
    rss_idle_after = memory(proxy.pid)

    # summary
    table: dict[str, dict[str, Any]] = {}
    for key, runs in samples.items():
        table[key] = {
            "rps": median([r["rps"] for r in runs]),
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
            "errors": sum(r["errors"] for r in runs),
            "non_200": sum(v for r in runs for k, v in r["statuses"].items() if k != "200"),
            "client_cpu_us_per_req": median(
                [r["client_cpu_s"] / max(r["requests"], 1) * 1e6 for r in runs]
            ),
        }

    def ratio(name: str, ep: str, c: int, field: str, op: Any) -> float:
        a = samples.get(f"{name}/{ep}/{c}", [])
        b = samples.get(f"direct/{ep}/{c}", [])
        return median([op(x[field], y[field]) for x, y in zip(a, b, strict=True)])

    ratios: dict[str, Any] = {}
    for name in names[1:]:
        for c in levels:
            ratios[f"{name}/list/{c}"] = ratio(name, "list", c, "rps", lambda x, y: x / y)
            ratios[f"{name}/ping/{c}/added_p50_ms"] = ratio(
                name, "ping", c, "p50_ms", lambda x, y: x - y
            )
            ratios[f"{name}/ping/{c}"] = ratio(name, "ping", c, "rps", lambda x, y: x / y)

    mb = 1e6
    goal_tp = min(ratios[f"proxy/list/{c}"] for c in levels)
    goal_ping = max(ratios[f"proxy/ping/{c}/added_p50_ms"] for c in levels)
    goal_ping_c1 = ratios["proxy/ping/1/added_p50_ms"]
    goals = {
        "list_throughput_ge_85pct": {
            "worst": goal_tp,
            "per_c": {c: ratios[f"proxy/list/{c}"] for c in levels},
            "met": goal_tp >= 0.85,
        },
        "ping_added_p50_le_1ms": {
            "c1": goal_ping_c1,
            "worst": goal_ping,
            "per_c": {c: ratios[f"proxy/ping/{c}/added_p50_ms"] for c in levels},
            "met_c1": goal_ping_c1 <= 1.0,
            "met_all": goal_ping <= 1.0,
        },
        "rss_idle_lt_30mb": {
            "mb": rss_idle_start["rss"] / mb,
            "met": rss_idle_start["rss"] < 30 * mb,
        },
    }
    mem = {
        "idle_start": rss_idle_start,
        "after_fixture": rss_after_fixture,
        "under_load_max_rss": rss_under_load,
        "idle_after": rss_idle_after,
    }
    report = {
        "command": command,
        "machine": machine(),
        "settings": {"rounds": args.rounds, "seconds": args.seconds, "concurrency": levels},
        "haproxy": haproxy_note or "included",
        "containers_json_counts": counts,
        "figures": table,
        "ratios_to_direct": ratios,
        "proxy_cpu_us_per_req": {k: median(v) for k, v in proxy_cpu.items()},
        "proxy_memory": mem,
        "goals": goals,
        "samples": samples,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_markdown(report, names, levels)
    return 0


def print_markdown(r: dict[str, Any], names: list[str], levels: list[int]) -> None:
    m = r["machine"]
    out = [
        "### docker proxy benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['arch']}, Linux {m['kernel']}, "
        f"Python {m['python']}, Docker Engine {m['engine']}, {m['haproxy'] or 'no haproxy'}",
        "",
        f"Command: `{r['command']}` ({r['settings']['rounds']} rounds x "
        f"{r['settings']['seconds']} s per cell; medians over rounds)",
        "",
    ]
    if r["haproxy"] != "included":
        out += [f"**{r['haproxy']}**", ""]
    out += [
        "| path | c | " + " | ".join(f"{n} req/s | {n} p50 ms | {n} p99 ms" for n in names) + " |"
    ]
    out += ["|---|---|" + "---|---|---|" * len(names)]
    for ep, path in PATHS.items():
        for c in levels:
            cells = []
            for n in names:
                f = r["figures"][f"{n}/{ep}/{c}"]
                cells.append(f"{f['rps']:.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f}")
            out.append(f"| {path} | {c} | " + " | ".join(cells) + " |")
    out += [
        "",
        "| path | c | "
        + " | ".join(f"{n}/direct req/s" for n in names[1:])
        + " | "
        + " | ".join(f"{n} added p50 ms" for n in names[1:])
        + " |",
    ]
    out += ["|---|---|" + "---|" * (2 * len(names[1:]))]
    for ep, path in PATHS.items():
        for c in levels:
            rs = [f"{r['ratios_to_direct'][f'{n}/{ep}/{c}']:.0%}" for n in names[1:]]
            added = []
            for n in names[1:]:
                a = (
                    r["figures"][f"{n}/{ep}/{c}"]["p50_ms"]
                    - r["figures"][f"direct/{ep}/{c}"]["p50_ms"]
                )
                added.append(f"{a:+.2f}")
            out.append(f"| {path} | {c} | " + " | ".join(rs) + " | " + " | ".join(added) + " |")
    counts = r["containers_json_counts"]
    out += [
        "",
        "containers/json returns: "
        + ", ".join(f"{n} {counts[n]['containers']} (status {counts[n]['status']})" for n in names)
        + f" — fixture: {OWNED} owned (created through the proxy) + {FOREIGN} foreign, "
        "plus whatever else is on the engine.",
    ]
    errs = {
        k: (v["errors"], v["non_200"])
        for k, v in r["figures"].items()
        if v["errors"] or v["non_200"]
    }
    out += ["", f"Errors / non-200 answers: {errs or 'none'}"]
    mem = r["proxy_memory"]
    out += [
        "",
        "Proxy memory (VmRSS, MB of 10^6 B): idle after start "
        f"{mem['idle_start']['rss'] / 1e6:.1f}, "
        f"after the fixture {mem['after_fixture']['rss'] / 1e6:.1f}, under load (max sampled) "
        f"{mem['under_load_max_rss'] / 1e6:.1f}, idle after load "
        f"{mem['idle_after']['rss'] / 1e6:.1f}, "
        f"peak VmHWM {mem['idle_after']['hwm'] / 1e6:.1f}.",
        "",
        "Proxy CPU per request (µs, user+sys): "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["proxy_cpu_us_per_req"].items()),
        "",
        "| goal | figure | verdict |",
        "|---|---|---|",
    ]
    g = r["goals"]
    tp = g["list_throughput_ge_85pct"]
    out.append(
        "| containers/json throughput ≥ 85% of direct | "
        + ", ".join(f"c={c}: {v:.0%}" for c, v in tp["per_c"].items())
        + f" | {'met' if tp['met'] else 'NOT met'} |"
    )
    pg = g["ping_added_p50_le_1ms"]
    out.append(
        "| _ping adds ≤ 1 ms p50 | "
        + ", ".join(f"c={c}: {v:+.2f} ms" for c, v in pg["per_c"].items())
        + f" | c=1: {'met' if pg['met_c1'] else 'NOT met'}; "
        f"all c: {'met' if pg['met_all'] else 'NOT met'} |"
    )
    rs = g["rss_idle_lt_30mb"]
    out.append(f"| RSS < 30 MB idle | {rs['mb']:.1f} MB | {'met' if rs['met'] else 'NOT met'} |")
    print("\n".join(out))


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
