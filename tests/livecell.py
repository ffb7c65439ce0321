"""Helpers for live tests: a real `agentcell serve` process, spec text, waiting on conditions."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    import docker

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
AGENTCELL = [sys.executable, "-m", "agentcell.cli.main"]
TEST_POOL = os.environ.get("AGENTCELL_TEST_POOL", "10.214.0.0/16")
"""Where test servers allocate cell subnets; runs side by side each take their own."""
DEMO_IMAGE = "agentcell/demo-agent:latest"


def wait_for(cond: Callable[[], T | None], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll ``cond`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def remove_labelled(client: docker.DockerClient, label: str) -> None:
    """Remove every container, network and volume carrying ``label`` (``key`` or ``key=value``)."""
    flt = {"label": [label]}
    for c in client.containers.list(all=True, filters=flt, ignore_removed=True):
        c.remove(force=True)
    for n in client.networks.list(filters=flt):
        n.remove()
    for v in client.volumes.list(filters=flt):
        v.remove(force=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A real `agentcell serve` process on a free port with its own state directory."""

    url: str
    state_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    pool: str = TEST_POOL
    extra_env: dict[str, str] | None = None
    log_path: Path | None = None
    """Where the server's output goes (default: serve.log in the state directory)."""
    command: tuple[str, ...] = tuple(AGENTCELL)
    """How to run the agentcell CLI for ``serve``."""

    def env(self) -> dict[str, str]:
        """The CLI's environment: this server, its admin token, no user config or token."""
        inherited = {k: v for k, v in os.environ.items() if k != "AGENTCELL_TOKEN"}
        return {
            **inherited,
            "AGENTCELL_URL": self.url,
            "AGENTCELL_STATE_DIR": str(self.state_dir),
            "AGENTCELL_CONFIG": str(self.state_dir / "cli-config.yaml"),
            **(self.extra_env or {}),
        }

    def start(self) -> None:
        self.log = self.log_path or self.state_dir / "serve.log"
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                *self.command,
                "serve",
                "--port",
                str(self.port),
                "--state-dir",
                str(self.state_dir),
                "--subnet-pool",
                self.pool,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env(),
        )
        import httpx

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"agentcell serve exited: {self.log_text()}")
            try:
                return httpx.get(f"{self.url}/v1/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 20, "agentcell serve to answer")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log else ""

    def cli(
        self, *args: str, check: bool = False, timeout: float = 180, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*AGENTCELL, *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            input=input,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"agentcell {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout}\n{proc.stderr}\nserver log:\n{self.log_text()}"
            )
        return proc

    def token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    def api(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> Any:
        """One API call with ``token`` (default: the admin token); the response (any status)."""
        import httpx

        headers = {"Authorization": f"Bearer {token or self.token()}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=120, **kw)


def cell(server: Server, tenant: str, name: str) -> dict[str, Any]:
    """The cell as ``GET /v1/cells/<tenant>/<name>`` shows it."""
    r = server.api("GET", f"/v1/cells/{tenant}/{name}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def apply_and_wait(server: Server, text: str, *, timeout: float = 90) -> None:
    """Apply through the API, then wait until every agent in ``text`` runs its generation
    (and is healthy, when it has a health check)."""
    r = server.api("POST", "/v1/apply", json={"yaml": text, "source": "test.yaml"})
    assert r.status_code == 200, r.text
    for applied in r.json()["cells"]:
        tenant, name, gen = applied["tenant"], applied["name"], applied["generation"]

        def ready(tenant: str = tenant, name: str = name, gen: int = gen) -> bool:
            c = cell(server, tenant, name)
            assert c["state"] != "failed", c["reason"]
            ok = is_healthy(c) if c["spec"]["spec"].get("health") else is_back(c)
            return ok and c["observed_generation"] >= gen

        try:
            wait_for(ready, timeout, f"{tenant}/{name} to be deployed")
        except BaseException:
            print(server.log_text())
            raise


def is_back(cell: Mapping[str, Any]) -> bool:
    """The cell runs again: state "running" or "healthy" (either status model)."""
    return cell.get("state") in ("running", "healthy")


def is_healthy(cell: Mapping[str, Any]) -> bool:
    """The cell runs and passes its health check (state "healthy", or running + health)."""
    state = cell.get("state")
    return state == "healthy" or (state == "running" and cell.get("health") == "healthy")


def spec_text(tenant: str, cell: str = "agent", **spec: object) -> str:
    """A Tenant document and one Agent document running the demo image."""
    import yaml

    agent_spec: dict[str, object] = {
        "image": DEMO_IMAGE,
        "health": {"http": {"port": 8080, "path": "/healthz"}, "interval": "2s", "timeout": "1s"},
    }
    agent_spec.update(spec)
    docs = [
        {
            "apiVersion": "agentcell/v1",
            "kind": "Tenant",
            "metadata": {"name": tenant},
            "spec": {"quota": {"agents": 20, "cpus": 20, "memory": "20Gi"}},
        },
        {
            "apiVersion": "agentcell/v1",
            "kind": "Agent",
            "metadata": {"name": cell, "tenant": tenant},
            "spec": agent_spec,
        },
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)
