"""What the benchmarks that start `agentcell serve` share: waiting for it to answer."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


def wait_serving(url: str, proc: subprocess.Popen[bytes], state: Path, timeout: float = 30) -> str:
    """Poll ``url``/v1/healthz until it answers 200, then return the admin token from
    ``state``. Exits the benchmark if the process ends or the deadline passes first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/v1/healthz").status_code == 200:
                return (state / "admin.token").read_text().strip()
        except httpx.HTTPError:
            pass
        log = state / "serve.log"
        where = f"; see {log}" if log.exists() else ""
        if proc.poll() is not None:
            raise SystemExit(f"agentcell serve exited ({proc.returncode}) before answering{where}")
        if time.monotonic() > deadline:
            raise SystemExit(f"agentcell serve did not answer within {timeout:g} s{where}")
        time.sleep(0.05)  # a benchmark's setup, not a test: polling is the point
