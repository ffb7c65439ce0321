"""The docker proxy's configuration: read once from the environment, validated at start.

Variables (all ``AGENTCELL_*``):

- ``PROXY_LISTEN``: ``IP:PORT`` or ``subnet:CIDR:PORT`` (default ``0.0.0.0:2375``); port 0
  asks the kernel for one (tests);
- ``ENGINE_SOCKET``: the engine's unix socket (default ``/var/run/docker.sock``);
- ``TENANT``, ``CELL``: the cell whose children this proxy serves (required);
- ``NETWORK``: the cell's internal network, the only one a child joins (required);
- ``SECCOMP``: path of the cell's seccomp profile (JSON); unset: the engine's default;
- ``LIMIT_CONTAINERS``, ``LIMIT_CPUS`` (a decimal, ``1.5``), ``LIMIT_MEMORY`` (bytes, or
  with a ``k``/``m``/``g`` suffix, binary units): the cell's docker limits (required);
- ``LIMIT_PIDS``: per child (default 256);
- ``CHILD_USER``: the numeric ``uid:gid`` a child runs as when its body names none
  (default ``10001:10001``, the agent's);
- ``RUNTIMES``: comma-separated runtimes a child may ask for besides the default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from agentcell.gate._config import GateConfigError, parse_listen
from agentcell.policy._childbody import ChildContext, ChildLimits, ChildUsage
from agentcell.policy._egress import IPAddress

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
        raise GateConfigError(f"{var}: not a number: {raw!r}") from None
    nano = value * 1_000_000_000
    if not value.is_finite() or nano <= 0 or nano != int(nano):
        raise GateConfigError(f"{var}: not a positive CPU count: {raw!r}")
    return int(nano)


def parse_memory(var: str, raw: str) -> int:
    """A memory size in bytes: digits, optionally ``k``, ``m`` or ``g`` (binary units)."""
    m = _MEMORY.fullmatch(raw.strip())
    if m is None or int(m[1]) <= 0:
        raise GateConfigError(f"{var}: not a memory size: {raw!r}")
    return int(m[1]) * _UNITS[m[2].lower()]


def _positive_int(var: str, raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise GateConfigError(f"{var}: not a positive integer: {raw!r}")
    return int(raw)


def _required_name(env: Mapping[str, str], var: str) -> str:
    value = env.get(var, "")
    if not value:
        raise GateConfigError(f"{var} is required")
    if not _NAME.fullmatch(value):
        raise GateConfigError(f"{var}: not a valid name: {value!r}")
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
        listen = parse_listen(
            "AGENTCELL_PROXY_LISTEN", env.get("AGENTCELL_PROXY_LISTEN", "0.0.0.0:2375")
        )
        engine = env.get("AGENTCELL_ENGINE_SOCKET", "/var/run/docker.sock")
        if not engine.startswith("/"):
            raise GateConfigError(f"AGENTCELL_ENGINE_SOCKET: not an absolute path: {engine!r}")
        seccomp: str | None = None
        seccomp_path = env.get("AGENTCELL_SECCOMP", "")
        if seccomp_path:
            try:
                seccomp = Path(seccomp_path).read_text(encoding="utf-8")
                json.loads(seccomp)
            except (OSError, ValueError) as e:
                raise GateConfigError(f"AGENTCELL_SECCOMP: cannot read {seccomp_path}: {e}") from e
        for var in ("AGENTCELL_LIMIT_CONTAINERS", "AGENTCELL_LIMIT_CPUS", "AGENTCELL_LIMIT_MEMORY"):
            if not env.get(var, ""):
                raise GateConfigError(f"{var} is required")
        limits = ChildLimits(
            containers=_positive_int(
                "AGENTCELL_LIMIT_CONTAINERS", env["AGENTCELL_LIMIT_CONTAINERS"]
            ),
            nano_cpus=parse_cpus("AGENTCELL_LIMIT_CPUS", env["AGENTCELL_LIMIT_CPUS"]),
            memory=parse_memory("AGENTCELL_LIMIT_MEMORY", env["AGENTCELL_LIMIT_MEMORY"]),
            pids=_positive_int("AGENTCELL_LIMIT_PIDS", env.get("AGENTCELL_LIMIT_PIDS", "256")),
        )
        runtimes = tuple(
            r.strip() for r in env.get("AGENTCELL_RUNTIMES", "").split(",") if r.strip()
        )
        config = cls(
            listen=listen,
            engine_socket=engine,
            tenant=_required_name(env, "AGENTCELL_TENANT"),
            cell=_required_name(env, "AGENTCELL_CELL"),
            network=_required_name(env, "AGENTCELL_NETWORK"),
            seccomp=seccomp,
            limits=limits,
            child_user=env.get("AGENTCELL_CHILD_USER", DEFAULT_CHILD_USER),
            runtimes=runtimes,
        )
        try:
            config.context(ChildUsage())
        except ValueError as e:
            raise GateConfigError(f"AGENTCELL_CHILD_USER: {e}") from e
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
