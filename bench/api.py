"""Benchmark: API read latency at 100 tenants / 1,000 stored cells, against healthz, same run.

A real control plane (`ControlPlane` + `create_app`, uvicorn on 127.0.0.1, in its own
process) with the real store and the real engine driver, but the reconciler not started:
the 1,000 cells are applied through the real API and *stored*, never deployed (deploying
them would put 1,000 cells on a shared engine and measure the engine, not the API). A
keep-alive httpx client in this process measures, interleaved round by round:

- `GET /v1/healthz` (the baseline: routing, JSON, HTTP, no auth, no store),
- `GET /v1/cells` (all 1,000), `GET /v1/cells?tenant=T` (10), `GET /v1/cells/{t}/{n}`
  (one cell: also asks the engine for the cell's containers), `GET /v1/tenants` (100).

    .venv/bin/python bench/api.py [--tenants 100] [--per-tenant 10] [--requests 200] \
        [--rounds 5] [--profile PATH] [--output FILE]

`--profile PATH` runs the server under pyinstrument (a dev tool, not a dependency:
`pip install pyinstrument`) and writes its HTML report to PATH when the run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _serve import wait_serving

POOL = "10.216.0.0/16"
ENDPOINTS = ("healthz", "cells_all", "cells_tenant", "cell_one", "tenants")


def spec(tenant: str, cells: int) -> str:
    docs = [
        f"apiVersion: agentcell/v1\nkind: Tenant\nmetadata: {{name: {tenant}}}\n"
        f"spec: {{quota: {{agents: {cells}, cpus: {cells}, memory: {cells}Gi}}}}\n"
    ]
    for i in range(cells):
        docs.append(
            f"apiVersion: agentcell/v1\nkind: Agent\n"
            f"metadata: {{name: agent{i:02d}, tenant: {tenant}}}\n"
            "spec:\n  image: agentcell/demo-agent:latest\n"
            "  resources: {cpus: 0.5, memory: 256Mi, pids: 128}\n"
            "  health: {http: {port: 8080, path: /healthz}, interval: 10s, timeout: 2s}\n"
            "  egress: {allow: [{host: api.example.com, ports: [443]}]}\n"
        )
    return "---\n".join(docs)


def serve(state: Path, port: int, profile: str | None) -> None:
    """The server process: a control plane whose reconciler never starts."""
    import uvicorn

    from agentcell.api import create_app
    from agentcell.control import ControlPlane, PlaneConfig

    plane = ControlPlane(PlaneConfig(state, subnet_pool=POOL))  # no plane.start(): nothing deploys
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # uvicorn re-raises SIGTERM after its shutdown: end here

    signal.signal(signal.SIGTERM, interrupted)
    try:
        uvicorn.run(create_app(plane), host="127.0.0.1", port=port, log_level="warning")
    finally:
        if profiler is not None:
            profiler.stop()
            Path(profile or "").write_text(profiler.output_html())
        plane.store.close()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--per-tenant", type=int, default=10)
    ap.add_argument("--requests", type=int, default=200, help="per endpoint per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", help="pyinstrument HTML report of the server")
    ap.add_argument("--output", default=str(Path(__file__).parent / "results" / "api.json"))
    ap.add_argument("--serve", nargs=2, metavar=("STATE", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]), args.profile)
        return

    state = Path(tempfile.mkdtemp(prefix="agentcell-bench-api-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, __file__, "--serve", str(state), str(port)]
    if args.profile:
        cmd += ["--profile", str(Path(args.profile).resolve())]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    try:
        token = wait_serving(url, server, state)
        result = run(url, token, args)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        shutil.rmtree(state, ignore_errors=True)
    out = Path(args.output)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    report(result)


def run(url: str, token: str, args: argparse.Namespace) -> dict[str, object]:
    tenants = [f"t{i:03d}" for i in range(args.tenants)]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as api:
        t0 = time.perf_counter()
        for t in tenants:
            r = api.post("/v1/apply", json={"yaml": spec(t, args.per_tenant), "source": "bench"})
            r.raise_for_status()
        applied = time.perf_counter() - t0
        total = len(api.get("/v1/cells").json())
        assert total == args.tenants * args.per_tenant, total

        def path(endpoint: str, i: int) -> str:
            t = tenants[i % len(tenants)]
            return {
                "healthz": "/v1/healthz",
                "cells_all": "/v1/cells",
                "cells_tenant": f"/v1/cells?tenant={t}",
                "cell_one": f"/v1/cells/{t}/agent{i % args.per_tenant:02d}",
                "tenants": "/v1/tenants",
            }[endpoint]

        for e in ENDPOINTS:  # warm-up
            for i in range(20):
                api.get(path(e, i)).raise_for_status()
        times: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
        p50s: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
        sizes: dict[str, int] = {}
        for rnd in range(args.rounds):
            order = ENDPOINTS[rnd % len(ENDPOINTS) :] + ENDPOINTS[: rnd % len(ENDPOINTS)]
            for e in order:
                mine = []
                for i in range(args.requests):
                    p = path(e, i)
                    s = time.perf_counter()
                    r = api.get(p)
                    mine.append(time.perf_counter() - s)
                    if r.status_code != 200:
                        raise SystemExit(f"GET {p}: {r.status_code} {r.text[:200]}")
                    sizes[e] = len(r.content)
                times[e] += mine
                p50s[e].append(statistics.median(mine))
    figures = {
        e: {
            "p50_ms": statistics.median(times[e]) * 1000,
            "p99_ms": pct(times[e], 99) * 1000,
            "ratio_p50_to_healthz": statistics.median(
                a / b for a, b in zip(p50s[e], p50s["healthz"], strict=True)
            ),
            "bytes": sizes[e],
        }
        for e in ENDPOINTS
    }
    return {
        "tenants": args.tenants,
        "cells": total,
        "apply_seconds": applied,
        "requests_per_endpoint": args.requests * args.rounds,
        "figures": figures,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.release()}",
        "python": platform.python_version(),
    }


def report(result: dict[str, object]) -> None:
    print(
        f"{result['tenants']} tenants, {result['cells']} stored cells "
        f"(applied in {result['apply_seconds']:.1f} s), "
        f"{result['requests_per_endpoint']} requests per endpoint, {result['machine']}"
    )
    labels = {
        "healthz": "GET /v1/healthz (baseline)",
        "cells_all": "GET /v1/cells (all)",
        "cells_tenant": "GET /v1/cells?tenant=T",
        "cell_one": "GET /v1/cells/{t}/{n}",
        "tenants": "GET /v1/tenants",
    }
    figures = result["figures"]
    assert isinstance(figures, dict)
    for e, f in figures.items():
        print(
            f"{labels[e]:<30} p50 {f['p50_ms']:8.2f} ms  p99 {f['p99_ms']:8.2f} ms  "
            f"x{f['ratio_p50_to_healthz']:6.1f} healthz  {f['bytes']:>8} bytes"
        )


if __name__ == "__main__":
    main()
