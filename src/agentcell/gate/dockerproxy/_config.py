"""The docker proxy's configuration: read once from the environment, validated at start.

The variables, their formats and defaults: ``policy._sidecar_env.DockerProxyVar``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from agentcell.gate._listen import SidecarConfigError, parse_listen
from agentcell.policy._childbody import ChildContext, ChildLimits, ChildUsage
from agentcell.policy._egress import IPAddress
from agentcell.policy._sidecar_env import DockerProxyVar as Var

__all__ = ["DockerProxyConfig", "parse_cpus", "parse_memory"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_MEMORY = re.compile(r"([0-9]{1,20})([kKmMgG]?)[bB]?")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
DEFAULT_CHILD_USER = "10001:10001"


def parse_cpus(var: str, raw: str) -> int:
    """A CPU count (``2``, ``0.5``) as nano-CPUs."""
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise SidecarConfigError(f"{var}: not a number: {raw!r}") from None
    nano = value * 1_000_000_000
    if not value.is_finite() or nano <= 0 or nano != int(nano):
        raise SidecarConfigError(f"{var}: not a positive CPU count: {raw!r}")
    return int(nano)


def parse_memory(var: str, raw: str) -> int:
    """A memory size in bytes: digits, optionally ``k``, ``m`` or ``g`` (binary units)."""
    m = _MEMORY.fullmatch(raw.strip())
    if m is None or int(m[1]) <= 0:
        raise SidecarConfigError(f"{var}: not a memory size: {raw!r}")
    return int(m[1]) * _UNITS[m[2].lower()]


def _positive_int(var: str, raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise SidecarConfigError(f"{var}: not a positive integer: {raw!r}")
    return int(raw)


def _required_name(env: Mapping[str, str], var: str) -> str:
    value = env.get(var, "")
    if not value:
        raise SidecarConfigError(f"{var} is required")
    if not _NAME.fullmatch(value):
        raise SidecarConfigError(f"{var}: not a valid name: {value!r}")
    return value


@dataclass(frozen=True)
class DockerProxyConfig:
    """Everything the docker proxy needs to start, from ``AGENTCELL_*`` variables."""

    listen: tuple[IPAddress, int]
    engine_socket: str
    tenant: str
    cell: str
    network: str
    seccomp: str | None
    limits: ChildLimits
    child_user: str
    runtimes: tuple[str, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DockerProxyConfig:
        """Read and check the environment; the error names the variable."""
        listen = parse_listen(Var.PROXY_LISTEN, env.get(Var.PROXY_LISTEN, "0.0.0.0:2375"))
        engine = env.get(Var.ENGINE_SOCKET, "/var/run/docker.sock")
        if not engine.startswith("/"):
            raise SidecarConfigError(f"{Var.ENGINE_SOCKET}: not an absolute path: {engine!r}")
        seccomp: str | None = None
        seccomp_path = env.get(Var.SECCOMP, "")
        if seccomp_path:
            try:
                seccomp = Path(seccomp_path).read_text(encoding="utf-8")
                json.loads(seccomp)
            except (OSError, ValueError) as e:
                raise SidecarConfigError(f"{Var.SECCOMP}: cannot read {seccomp_path}: {e}") from e
        for var in (
            Var.LIMIT_CONTAINERS,
            Var.LIMIT_CPUS,
            Var.LIMIT_MEMORY,
        ):
            if not env.get(var, ""):
                raise SidecarConfigError(f"{var} is required")
        limits = ChildLimits(
            containers=_positive_int(Var.LIMIT_CONTAINERS, env[Var.LIMIT_CONTAINERS]),
            nano_cpus=parse_cpus(Var.LIMIT_CPUS, env[Var.LIMIT_CPUS]),
            memory=parse_memory(Var.LIMIT_MEMORY, env[Var.LIMIT_MEMORY]),
            pids=_positive_int(Var.LIMIT_PIDS, env.get(Var.LIMIT_PIDS, "256")),
        )
        runtimes = tuple(r.strip() for r in env.get(Var.RUNTIMES, "").split(",") if r.strip())
        config = cls(
            listen=listen,
            engine_socket=engine,
            tenant=_required_name(env, Var.TENANT),
            cell=_required_name(env, Var.CELL),
            network=_required_name(env, Var.NETWORK),
            seccomp=seccomp,
            limits=limits,
            child_user=env.get(Var.CHILD_USER, DEFAULT_CHILD_USER),
            runtimes=runtimes,
        )
        try:
            config.context(ChildUsage())
        except ValueError as e:
            raise SidecarConfigError(f"{Var.CHILD_USER}: {e}") from e
        return config

    def context(self, used: ChildUsage) -> ChildContext:
        """What a child's body is hardened against, given what the cell's children hold."""
        return ChildContext(
            tenant=self.tenant,
            cell=self.cell,
            network=self.network,
            user=self.child_user,
            limits=self.limits,
            used=used,
            seccomp=self.seccomp,
            runtimes=self.runtimes,
        )
