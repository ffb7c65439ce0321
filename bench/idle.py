"""Benchmark: 100 idle cells on one host: host memory per cell and the control plane's CPU.

One run: start `agentcell serve`, let it settle, sample host memory in use
(MemTotal - MemAvailable from /proc/meminfo); deploy ``--cells`` cells
(demo agent, an egress policy so each has its gate, an http health check every 10 s;
``--per-tenant`` cells per tenant; a tenant's egress network holds up to 253 gates)
and wait until the API reports every one healthy; let them settle; then over
``--window`` seconds with no API traffic sample host memory again and take the CPU
(utime + stime from /proc/PID/stat) of the control plane, dockerd, containerd and the
cells' containerd-shims.

Host memory per cell = (in use after - in use before) / cells. "Beyond the agent" subtracts
the agent processes' own memory (summed over each agent container's processes), given
as PSS (shared pages divided among their users: each agent's fair share) and as RSS.
The gates', shims', the control plane's and the engine's memory are shown beside it, the
rest is the kernel's (network namespaces, veths, cgroups, page tables).

    .venv/bin/python bench/idle.py [--cells 100] [--settle 30] [--window 60] \\
        [--profile]

``--profile`` adds a second window in which a sampler inside the server charges each
thread's CPU time (its thread CPU clock) to its current Python stack every 10 ms, and
prints the hot spots (the whole profile goes into the JSON). The server runs from a
small bootstrap (``BOOT``) that adds the two debug signals; either way the server's CPU
per thread over the first window is reported, threads grouped by name.

Runs its own `agentcell serve` (subnet pool 10.218.0.0/16, a free port, a temporary
state directory) and removes everything it made on exit, Ctrl-C and SIGTERM included.
Hold `flock -x /tmp/agentcell-engine.lock` while it runs, so that no other test run
moves the memory figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from recovery import IMAGE, RESULTS, Harness, healthy_status, machine

TICK = os.sysconf("SC_CLK_TCK")

# Runs `agentcell serve` with two debug signals. SIGUSR1 starts a window: each thread's CPU
# clock is read and, when the control file says "profile", a sampler thread starts: every
# 10 ms it charges the CPU time each thread used since the last sample to that thread's
# current stack. SIGUSR2 ends the window and writes per-thread CPU (and the profile).
BOOT = r"""
import json, os, re, signal, sys, threading, time, traceback
from collections import Counter

OUT = os.environ["AGENTCELL_BENCH_OUT"]
CONTROL = os.environ["AGENTCELL_BENCH_CONTROL"]
base = {}
sampler = {}


def clock(ident):
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (OSError, OverflowError):
        return None


def group(name):
    return re.sub(r"_\d+$", "", name)


def where(code):
    path = code.co_filename
    for root in sys.path[1:]:
        if root and path.startswith(root + "/"):
            path = path[len(root) + 1:]
            break
    return f"{path}:{code.co_firstlineno} {code.co_name}"


def sample(stop, every=0.01):
    me = threading.get_ident()
    last = {}
    own, inclusive, stacks, threads = Counter(), Counter(), Counter(), Counter()
    samples = 0
    while not stop.wait(every):
        samples += 1
        frames = sys._current_frames()
        names = {t.ident: group(t.name) for t in threading.enumerate()}
        for ident, frame in frames.items():
            if ident == me:
                continue
            now = clock(ident)
            if now is None:
                continue
            used = now - last.get(ident, now)
            last[ident] = now
            if used <= 0:
                continue
            stack = []
            f = frame
            while f is not None:
                stack.append(where(f.f_code))
                f = f.f_back
            threads[names.get(ident, "?")] += used
            own[stack[0]] += used
            for w in set(stack):
                inclusive[w] += used
            stacks[" <- ".join(stack[:12])] += used
    sampler["result"] = {
        "samples": samples,
        "own": own.most_common(40),
        "inclusive": inclusive.most_common(60),
        "stacks": stacks.most_common(25),
        "threads": threads.most_common(),
        "sampler_cpu": time.thread_time(),
    }


def begin(*_):
    base.clear()
    base.update({t.ident: clock(t.ident) or 0.0 for t in threading.enumerate()})
    if open(CONTROL).read().strip() == "profile":
        stop = threading.Event()
        t = threading.Thread(target=sample, args=(stop,), name="bench-sampler", daemon=True)
        sampler.clear()
        sampler.update(stop=stop, thread=t)
        t.start()


def end(*_):
    groups = {}
    for t in threading.enumerate():
        if t.name == "bench-sampler":
            continue
        g = groups.setdefault(group(t.name), {"threads": 0, "cpu": 0.0})
        g["threads"] += 1
        g["cpu"] += (clock(t.ident) or 0.0) - base.get(t.ident, 0.0)
    out = {"threads": groups}
    if "stop" in sampler:
        sampler["stop"].set()
        sampler["thread"].join()
        out["profile"] = sampler.pop("result", None)
        sampler.clear()
    with open(OUT, "w") as f:
        json.dump(out, f)


def safely(f):
    def run(*args):
        try:
            f()
        except Exception:
            traceback.print_exc()
    return run


signal.signal(signal.SIGUSR1, safely(begin))
signal.signal(signal.SIGUSR2, safely(end))
sys.argv[0] = "agentcell"
from agentcell.cli.main import main
main()
"""


def spec(cells: list[tuple[str, str]]) -> str:
    docs = []
    for tenant in dict.fromkeys(t for t, _ in cells):
        names = [n for t, n in cells if t == tenant]
        docs.append(
            f"""apiVersion: agentcell/v1
kind: Tenant
metadata: {{name: {tenant}}}
spec: {{quota: {{agents: {len(names)}, cpus: 1000, memory: 1000Gi}}}}
"""
        )
        for name in names:
            docs.append(
                f"""apiVersion: agentcell/v1
kind: Agent
metadata: {{name: {name}, tenant: {tenant}}}
spec:
  image: {IMAGE}
  env: {{AGENT_PROBE_SECONDS: "86400"}}
  resources: {{cpus: 0.5, memory: 128Mi, pids: 64}}
  health: {{http: {{port: 8080, path: /healthz}}, interval: 10s, timeout: 2s}}
  egress:
    allow:
      - {{host: api.allowed.test, ports: [443]}}
"""
            )
    return "---\n".join(docs)


# -- /proc -------------------------------------------------------------------------------------


def mem_in_use() -> int:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, _, v = line.partition(":")
        info[k] = int(v.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def by_name(comm: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == comm:
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(ppid(int(p.name)), []).append(int(p.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def memory(pids: list[int]) -> dict[str, float]:
    """Summed RSS, PSS and anonymous RSS of ``pids``, in MB (10^6 bytes)."""
    total = {"rss": 0.0, "pss": 0.0, "anon": 0.0}
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in rollup:
            k, _, v = line.partition(":")
            key = {"Rss": "rss", "Pss": "pss", "Anonymous": "anon"}.get(k)
            if key:
                total[key] += int(v.split()[0]) * 1024 / 1e6
    return total


# -- the run -----------------------------------------------------------------------------------


def wait_all_healthy(h: Harness, cells: int, timeout: float) -> None:
    assert h.api is not None
    t0 = time.monotonic()
    while True:
        listed = h.api.get("/v1/cells").json()
        ok = sum(1 for c in listed if healthy_status(c))
        failed = [
            f"{c['tenant']}/{c['name']}: {c['reason']}" for c in listed if c["state"] == "failed"
        ]
        if failed:
            raise SystemExit(f"{len(failed)} cells failed, e.g. {failed[0]}")
        if ok == cells:
            return
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"only {ok} of {cells} cells healthy after {timeout:g}s")
        time.sleep(2)


def sample_memory(seconds: float, every: float = 1.0) -> float:
    values = []
    deadline = time.monotonic() + seconds
    while True:
        values.append(mem_in_use())
        if time.monotonic() >= deadline:
            return statistics.median(values)
        time.sleep(every)


class EventCount:
    """Engine events that wake the server's reconciler (its rule: an agentcell label or
    name, or any network event), split into this run's tenants and everyone else's."""

    def __init__(self, h: Harness) -> None:
        self.counts: Counter[str] = Counter()
        self._mine = {h.tenant, *h.tenants}
        self._stream = h.client.events(
            decode=True, filters={"type": ["container", "network", "volume"]}
        )
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # ends when the stream is closed
            for ev in self._stream:
                attrs = (ev.get("Actor") or {}).get("Attributes") or {}
                tenant = attrs.get("agentcell.tenant")
                wakes = (
                    tenant is not None
                    or str(attrs.get("name", "")).startswith("agentcell-")
                    or ev.get("Type") == "network"
                )
                if wakes:
                    whose = "this run's" if tenant in self._mine else "others'"
                    action = str(ev.get("Action", "")).split(":")[0]
                    self.counts[f"{whose} {action}"] += 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()


def window(
    h: Harness, out: Path, control: Path, mode: str, seconds: float, watched: dict[str, list[int]]
) -> tuple[float, dict[str, float], dict[str, Any]]:
    """One measurement window with no API traffic: memory in use (median), CPU, threads."""
    control.write_text(mode)
    out.write_text("")
    events = EventCount(h)
    os.kill(h.pid, signal.SIGUSR1)
    cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in watched.items()}
    w0 = time.monotonic()
    mem = sample_memory(seconds)
    cpu1 = {k: sum(cpu_seconds(p) for p in v) for k, v in watched.items()}
    elapsed = time.monotonic() - w0
    os.kill(h.pid, signal.SIGUSR2)
    events.close()
    deadline = time.monotonic() + 30
    while not out.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    inside: dict[str, Any] = json.loads(out.read_text() or "{}")
    percent = {k: 100 * (cpu1[k] - cpu0[k]) / elapsed for k in cpu0}
    inside["seconds"] = elapsed
    inside["engine_events"] = dict(events.counts)
    return mem, percent, inside


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument(
        "--per-tenant",
        type=int,
        default=25,
        help="cells per tenant (a tenant's egress network, a /24, holds up to 253 gates)",
    )
    ap.add_argument("--settle", type=float, default=30, help="seconds after all are healthy")
    ap.add_argument("--window", type=float, default=60, help="seconds of measurement")
    ap.add_argument("--profile", action="store_true", help="a second window, sampled")
    ap.add_argument("--output", type=Path, default=RESULTS / "idle.json")
    ap.add_argument("--serve-log", type=Path, help="keep the server's log here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agentcell-idle-"))
    out, control = tmp / "out.json", tmp / "control"
    os.environ["AGENTCELL_BENCH_OUT"] = str(out)
    os.environ["AGENTCELL_BENCH_CONTROL"] = str(control)
    h = Harness("benchidle", keep_log=args.serve_log)
    r: dict[str, Any] = {"cells": args.cells, "per_tenant": args.per_tenant}
    try:
        with h.running([sys.executable, "-c", BOOT]):
            time.sleep(5)
            engine = {"dockerd": by_name("dockerd"), "containerd": by_name("containerd")}
            before = sample_memory(5)
            mem_before = {k: memory(v) for k, v in {**engine, "serve": [h.pid]}.items()}
            per = args.per_tenant
            h.tenants = [f"{h.tenant}x{j}" for j in range(-(-args.cells // per))]
            cells = [(t, f"c{i:03d}") for t in h.tenants for i in range(per)][: args.cells]
            t0 = time.monotonic()
            # A tenant's first cell alone, then the rest of it, one tenant after another:
            # the server allocates a tenant's egress network while deploying, and that can
            # race with the subnets an apply allocates ("Pool overlaps"), failing the cell.
            done = 0
            for tenant in h.tenants:
                mine = [c for c in cells if c[0] == tenant]
                h.apply(spec(mine[:1]))
                wait_all_healthy(h, done + 1, 1200)
                h.apply(spec(mine))
                done += len(mine)
                wait_all_healthy(h, done, 1200)
            r["deploy_seconds"] = time.monotonic() - t0
            print(f"{args.cells} cells healthy in {r['deploy_seconds']:.0f} s", flush=True)
            time.sleep(args.settle)

            agents = [h.container(name, "agent", tenant) for tenant, name in cells]
            gates = [h.container(name, "egress", tenant) for tenant, name in cells]
            agent_pids = [p for c in agents for p in tree(int(c.attrs["State"]["Pid"]))]
            gate_pids = [p for c in gates for p in tree(int(c.attrs["State"]["Pid"]))]
            shims = sorted({ppid(int(c.attrs["State"]["Pid"])) for c in agents + gates})
            watched = {**engine, "shims": shims, "serve": [h.pid]}

            after, percent, inside = window(h, out, control, "plain", args.window, watched)
            mem_after = {k: memory(v) for k, v in {**engine, "serve": [h.pid]}.items()}
            mem_agents = memory(agent_pids)
            mem_gates = memory(gate_pids)
            mem_shims = memory(shims)
            if args.profile:
                print("second window, sampled", flush=True)
                _, p_percent, p_inside = window(h, out, control, "profile", args.window, watched)
                r["profiled_window"] = {"percent_of_one_core": p_percent, **p_inside}
            assert h.api is not None
            listed = h.api.get("/v1/cells").json()
            r["healthy_at_end"] = sum(1 for c in listed if healthy_status(c))
            r.update(machine(h.client))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = args.cells
    per_cell = (after - before) / n / 1e6
    r["memory"] = {
        "host_in_use_before_mb": before / 1e6,
        "host_in_use_after_mb": after / 1e6,
        "per_cell_mb": per_cell,
        "agent_per_cell_mb": {k: v / n for k, v in mem_agents.items()},
        "beyond_agent_per_cell_mb": {
            "pss": per_cell - mem_agents["pss"] / n,
            "rss": per_cell - mem_agents["rss"] / n,
        },
        "gate_per_cell_mb": {k: v / n for k, v in mem_gates.items()},
        "shims_per_cell_mb": {k: v / n for k, v in mem_shims.items()},
        "agent_processes": len(agent_pids),
        "gate_processes": len(gate_pids),
        "shims": len(shims),
        "growth_mb": {
            k: {m: mem_after[k][m] - mem_before[k][m] for m in ("rss", "pss", "anon")}
            for k in mem_after
        },
    }
    threads = inside.get("threads", {})
    r["cpu"] = {
        "window_seconds": inside["seconds"],
        "engine_events_waking_the_server": inside["engine_events"],
        "percent_of_one_core": percent,
        "serve_threads": {
            k: {"threads": v["threads"], "percent": 100 * v["cpu"] / inside["seconds"]}
            for k, v in sorted(threads.items(), key=lambda kv: -kv[1]["cpu"])
        },
    }
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(r, indent=2))
    report(r)


def report(r: dict[str, Any]) -> None:
    m, c = r["memory"], r["cpu"]
    print(f"{r['machine']}, Python {r['python']}, engine {r['engine']}")
    print(
        f"{r['cells']} cells deployed and healthy in {r['deploy_seconds']:.0f} s; "
        f"{r['healthy_at_end']} healthy after the window"
    )
    print(
        f"host memory in use: {m['host_in_use_before_mb']:.0f} MB before, "
        f"{m['host_in_use_after_mb']:.0f} MB after: {m['per_cell_mb']:.1f} MB per cell"
    )
    for what, key in (("agent", "agent_per_cell_mb"), ("gate", "gate_per_cell_mb")):
        v = m[key]
        print(
            f"  {what} processes per cell: PSS {v['pss']:.1f}  RSS {v['rss']:.1f}  "
            f"anon {v['anon']:.1f} MB"
        )
    v = m["shims_per_cell_mb"]
    print(f"  containerd-shims per cell (2 each): PSS {v['pss']:.1f}  RSS {v['rss']:.1f} MB")
    for k, g in m["growth_mb"].items():
        print(f"  {k} grew: RSS {g['rss']:+.0f}  PSS {g['pss']:+.0f} MB")
    known = sum(m[k]["pss"] for k in ("agent_per_cell_mb", "gate_per_cell_mb", "shims_per_cell_mb"))
    known += sum(g["pss"] for g in m["growth_mb"].values()) / r["cells"]
    print(
        f"  rest (kernel: namespaces, veths, cgroups, page tables ...): "
        f"{m['per_cell_mb'] - known:.1f} MB per cell"
    )
    b = m["beyond_agent_per_cell_mb"]
    print(f"beyond the agent: {b['pss']:.1f} MB per cell (agent PSS), {b['rss']:.1f} (agent RSS)")
    print(f"CPU over {c['window_seconds']:.0f} s idle, % of one core:")
    for k, v in c["percent_of_one_core"].items():
        print(f"  {k:12} {v:6.2f}")
    ev = c["engine_events_waking_the_server"]
    if ev:
        top = ", ".join(f"{v} {k}" for k, v in sorted(ev.items(), key=lambda kv: -kv[1])[:6])
        print(f"engine events that wake the reconciler in the window: {top}")
    print("control plane by thread:")
    for k, v in list(c["serve_threads"].items())[:8]:
        print(f"  {k:28} x{v['threads']:<4} {v['percent']:6.2f}")
    cp = c["percent_of_one_core"]["serve"]
    print(
        f"goals: <= 40 MB per cell beyond the agent: {b['pss']:.1f} MB; "
        f"control plane < 5% of one core: {cp:.2f}%"
    )
    pw = r.get("profiled_window")
    if pw and pw.get("profile"):
        prof, secs = pw["profile"], pw["seconds"]
        print(
            f"second window, sampled every 10 ms: control plane "
            f"{pw['percent_of_one_core']['serve']:.2f}% of one core (sampler's own CPU "
            f"{100 * prof['sampler_cpu'] / secs:.2f}%); hot spots, % of one core:"
        )
        print("  where the CPU is spent (innermost Python frame):")
        for where, used in prof["own"][:12]:
            print(f"    {100 * used / secs:6.2f}  {where}")
        print("  inclusive (any frame on the stack):")
        for where, used in prof["inclusive"][:25]:
            print(f"    {100 * used / secs:6.2f}  {where}")


if __name__ == "__main__":
    main()
