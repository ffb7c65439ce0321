"""Benchmark: the cost of one isolation canary run, and of a sweep over many cells.

Deploys ``--cells`` demo agents (every other one with an egress policy, so it has a
gate) through a real ``agentcell serve``, then times ``DockerDriver.canary``: one cell
at a time (``--rounds`` sweeps), then every cell at once from a thread pool. CPU is
this process's (the canary runs in the control plane's process) and the engine's
(``dockerd``'s, from /proc, less its CPU over an equally long window without the
canary), per run. Every run must pass every check.

    AGENTCELL_TEST_POOL=10.216.0.0/16 .venv/bin/python bench/canary.py [--cells 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from agentcell.runtime import DockerDriver
from livecell import DEMO_IMAGE, Server, free_port, remove_labelled

CLK_TCK = os.sysconf("SC_CLK_TCK")


def spec(tenant: str, cells: int) -> str:
    docs: list[dict[str, object]] = [
        {
            "apiVersion": "agentcell/v1",
            "kind": "Tenant",
            "metadata": {"name": tenant},
            "spec": {"quota": {"agents": cells, "cpus": cells, "memory": f"{cells}Gi"}},
        }
    ]
    for i in range(cells):
        agent: dict[str, object] = {
            "image": DEMO_IMAGE,
            "resources": {"cpus": 0.5, "memory": "128Mi", "pids": 64},
            "health": {"http": {"port": 8080, "path": "/healthz"}, "interval": "10s"},
        }
        if i % 2:
            agent["egress"] = {"allow": [{"host": "api.allowed.test", "ports": [80]}]}
        docs.append(
            {
                "apiVersion": "agentcell/v1",
                "kind": "Agent",
                "metadata": {"name": f"c{i}", "tenant": tenant},
                "spec": agent,
            }
        )
    return yaml.safe_dump_all(docs, sort_keys=False)


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def dockerd_pid() -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == "dockerd":
                        return int(entry)
            except OSError:
                continue
    return None


def cpu_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    tenant = f"bcanary{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    srv = Server(url=f"http://127.0.0.1:{port}", state_dir=tmp / "state", port=port)
    srv.state_dir.mkdir()
    driver = DockerDriver()
    try:
        srv.start()
        (tmp / "spec.yaml").write_text(spec(tenant, args.cells))
        res = srv.cli("deploy", "-f", str(tmp / "spec.yaml"), "--timeout", "300")
        if res.returncode != 0:
            raise SystemExit(f"deploy failed:\n{res.stdout}\n{res.stderr}")
        keys = [(tenant, f"c{i}") for i in range(args.cells)]
        engine = dockerd_pid()
        for key in keys:  # warm-up, and every check must pass
            bad = [d for d in driver.canary(key) if not d.allow]
            if bad:
                raise SystemExit(f"{key}: {bad}")

        walls: list[float] = []
        cpu0, eng0 = cpu_self(), cpu_of(engine)
        for _ in range(args.rounds):
            for key in keys:
                t = time.monotonic()
                driver.canary(key)
                walls.append(time.monotonic() - t)
        runs = len(walls)
        cpu_run = (cpu_self() - cpu0) / runs
        eng_busy = cpu_of(engine) - eng0
        # The engine is shared and the cells' health probes keep it busy too: subtract
        # what it burns over as long a window without the canary.
        idle0 = cpu_of(engine)
        time.sleep(sum(walls))
        eng_run = max(0.0, eng_busy - (cpu_of(engine) - idle0)) / runs

        sweeps: list[float] = []
        cpu0 = cpu_self()
        with ThreadPoolExecutor(max_workers=len(keys)) as pool:
            for _ in range(args.rounds):
                t = time.monotonic()
                results = list(pool.map(driver.canary, keys))
                sweeps.append(time.monotonic() - t)
                assert all(d.allow for ds in results for d in ds)
        cpu_sweep_run = (cpu_self() - cpu0) / (args.rounds * len(keys))

        out = {
            "cells": args.cells,
            "runs": runs,
            "wall_per_run_p50_s": round(statistics.median(walls), 3),
            "wall_per_run_max_s": round(max(walls), 3),
            "cpu_per_run_ms": round(cpu_run * 1000, 1),
            "dockerd_cpu_per_run_ms": round(eng_run * 1000, 1),
            "concurrent_sweep_wall_p50_s": round(statistics.median(sweeps), 3),
            "cpu_per_run_concurrent_ms": round(cpu_sweep_run * 1000, 1),
            "core_share_at_100_cells_every_60s_pct": round(100 * 100 * (cpu_run + eng_run) / 60, 2),
        }
        print(json.dumps(out, indent=2))
        if args.output:
            args.output.write_text(json.dumps(out, indent=2) + "\n")
    finally:
        srv.stop()
        remove_labelled(driver.client, f"agentcell.tenant={tenant}")


if __name__ == "__main__":
    main()
