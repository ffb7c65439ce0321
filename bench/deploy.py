"""Benchmark: a full cell deploy through the API versus a bare container start, same run.

Baseline: the demo image started directly through the engine with the same hardening
flags (the body `container_body` produces) on an existing internal network, timed until
its /healthz answers. Cell: POST /v1/apply of a new agent to a real `agentcell serve`,
timed until the API reports it running with its health check passed (this includes
creating the cell's network and workspace volume). Reports p50/p95 and their ratio.

    .venv/bin/python bench/deploy.py [--runs 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import httpx
from _serve import wait_serving

from agentcell.plan import spec_hash
from agentcell.policy import CellNames, container_body
from agentcell.spec import Agent, load_text

IMAGE = "agentcell/demo-agent:latest"
POOL = "10.215.0.0/16"


def spec(tenant: str, name: str) -> str:
    return f"""
apiVersion: agentcell/v1
kind: Tenant
metadata: {{name: {tenant}}}
spec: {{quota: {{agents: 1000}}}}
---
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: {name}, tenant: {tenant}}}
spec:
  image: {IMAGE}
  resources: {{cpus: 1.0, memory: 256Mi, pids: 128}}
  health: {{http: {{port: 8080, path: /healthz}}, interval: 10s, timeout: 2s}}
"""


def healthy(ip: str) -> bool:
    conn = http.client.HTTPConnection(ip, 8080, timeout=1)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bare_runs(client: docker.DockerClient, runs: int, tenant: str) -> list[float]:
    """The floor: create + start the same hardened container, wait for /healthz."""
    net = client.networks.create(
        f"bench-{tenant}",
        internal=True,
        labels={"agentcell.bench": tenant},
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.216.0.0/24")]),
    )
    agent = load_text(spec(tenant, "bare"))[1]
    assert isinstance(agent, Agent)
    times = []
    try:
        for i in range(runs):
            names = CellNames(container=f"bench-{tenant}-{i}", network=net.name, volume=None)
            body = container_body(
                agent,
                names=names,
                spec_hash=spec_hash(agent),
                generation=1,
            )
            body["Labels"] = {"agentcell.bench": tenant}
            t0 = time.perf_counter()
            cid = client.api.create_container_from_config(body, name=names.container)["Id"]
            client.api.start(cid)
            ip = client.api.inspect_container(cid)["NetworkSettings"]["Networks"][net.name][
                "IPAddress"
            ]
            while not healthy(ip):
                time.sleep(0.005)
            times.append(time.perf_counter() - t0)
            client.api.remove_container(cid, force=True)
    finally:
        net.remove()
    return times


def cell_runs(url: str, token: str, runs: int, tenant: str) -> list[float]:
    h = {"Authorization": f"Bearer {token}"}
    times = []
    with httpx.Client(base_url=url, headers=h, timeout=60) as api:
        for i in range(runs):
            name = f"c{i}"
            t0 = time.perf_counter()
            res = api.post("/v1/apply", json={"yaml": spec(tenant, name), "source": "bench"})
            res.raise_for_status()
            version = 0
            while True:
                st = api.get(
                    f"/v1/cells/{tenant}/{name}/wait", params={"after": version, "timeout": 30}
                ).json()
                version = st["version"]
                if st["state"] == "healthy":
                    break
                if st["state"] == "failed":
                    raise SystemExit(f"deploy failed: {st['reason']}")
            times.append(time.perf_counter() - t0)
            api.delete(f"/v1/cells/{tenant}/{name}").raise_for_status()
            while True:
                st = api.get(
                    f"/v1/cells/{tenant}/{name}/wait", params={"after": version, "timeout": 30}
                ).json()
                if st["gone"]:
                    break
                version = st["version"]
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="at least 5: runs go in groups of 5")
    args = ap.parse_args()
    if args.runs < 5:
        ap.error(f"--runs {args.runs}: at least 5 (bare and cell runs interleave in groups of 5)")
    client = docker.from_env()
    client.images.get(IMAGE)
    tenant = f"bench{secrets.token_hex(3)}"
    state = Path(tempfile.mkdtemp(prefix="agentcell-bench-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentcell.cli.main",
            "serve",
            "--port",
            str(port),
            "--state-dir",
            str(state),
            "--subnet-pool",
            POOL,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        token = wait_serving(url, server, state, timeout=20)
        # Interleave the two so machine noise hits both alike.
        bare: list[float] = []
        cell: list[float] = []
        for _ in range(args.runs // 5):
            bare += bare_runs(client, 5, tenant)
            cell += cell_runs(url, token, 5, tenant)
    finally:
        server.terminate()
        server.wait(15)
        for c in client.containers.list(
            all=True, filters={"label": f"agentcell.tenant={tenant}"}, ignore_removed=True
        ):
            c.remove(force=True)
    result = {
        "runs": len(cell),
        "bare_p50": statistics.median(bare),
        "bare_p95": pct(bare, 95),
        "cell_p50": statistics.median(cell),
        "cell_p95": pct(cell, 95),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.release()}",
        "engine": client.version()["Version"],
    }
    result["ratio_p50"] = result["cell_p50"] / result["bare_p50"]
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "deploy.json").write_text(json.dumps(result, indent=2))
    print(f"runs: {result['runs']} each, engine {result['engine']}, {result['machine']}")
    print(
        f"bare docker create+start until healthy: p50 {result['bare_p50'] * 1000:.0f} ms, "
        f"p95 {result['bare_p95'] * 1000:.0f} ms"
    )
    print(
        f"cell deploy via API until healthy:       p50 {result['cell_p50'] * 1000:.0f} ms, "
        f"p95 {result['cell_p95'] * 1000:.0f} ms"
    )
    print(f"ratio cell/bare p50: {result['ratio_p50']:.2f}")


if __name__ == "__main__":
    main()
