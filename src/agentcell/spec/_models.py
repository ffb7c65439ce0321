"""Typed models of the user's YAML (``apiVersion: agentcell/v1``).

The whole v1 model is here, including parts that later releases implement; a field
that is not implemented yet is refused by ``unsupported()`` rather than ignored.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from agentcell.spec._units import ByteSize, Duration

__all__ = [
    "API_VERSION",
    "DEFAULT_USER",
    "NAME_PATTERN",
    "Agent",
    "AgentSpec",
    "DockerAccess",
    "DockerLimits",
    "Egress",
    "EgressRule",
    "ExecProbe",
    "Health",
    "HttpProbe",
    "LocatedError",
    "Metadata",
    "Name",
    "Resources",
    "Restart",
    "TcpProbe",
    "Tenant",
    "TenantQuota",
    "TenantSpec",
    "Workspace",
    "unsupported",
]

API_VERSION = "agentcell/v1"
DEFAULT_USER = "10001:10001"

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
"""Names of tenants, agents and secrets."""
Name = Annotated[
    str,
    StringConstraints(pattern=NAME_PATTERN),
    Field(
        description="lowercase letters, digits and '-', 1 to 40 characters, "
        "starting and ending with a letter or digit",
    ),
]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_ENV = {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "DOCKER_HOST"}
_IMAGE_RE = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
Port = Annotated[int, Field(ge=1, le=65535)]
_HOST_RE = re.compile(r"^(\*\.)?[^\s@%/:*\\\[\]]+$")


class LocatedError(ValueError):
    """A model-level error that belongs to one field, so the loader can point at its line."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=False,
        frozen=True,
        validate_default=True,
    )


class Metadata(_Model):
    name: Name
    tenant: Name | None = Field(default=None, description="the tenant the agent belongs to")
    labels: dict[str, str] = Field(default_factory=dict)


class TenantQuota(_Model):
    agents: int | None = Field(default=None, ge=0, description="most cells the tenant may run")
    cpus: float | None = Field(default=None, gt=0, description="CPUs summed over its cells")
    memory: ByteSize | None = Field(default=None, description="memory summed over its cells")


class EgressRule(_Model):
    host: str | None = Field(default=None, description="exact name, or *.name for subdomains")
    cidr: str | None = None
    ports: list[Port] | None = Field(
        default=None,
        min_length=1,
        description="allow rules: 80 and 443 when left out; deny rules: every port",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ipaddress.ip_address(v.strip("[]"))
        except ValueError:
            pass
        else:
            raise ValueError(f"{v!r} is an address: write it as a cidr rule, e.g. {{cidr: {v}/32}}")
        if not _HOST_RE.match(v) or len(v) > 253:
            raise ValueError(
                f"{v!r} is not a host name: write a name such as api.example.com, or *.example.com "
                "for its subdomains (no scheme, port, path, user or wildcard elsewhere)"
            )
        return v

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return str(ipaddress.ip_network(v, strict=True))
        except ValueError as e:
            raise ValueError(f"not a CIDR such as 198.51.100.0/24: {e}") from None

    @model_validator(mode="after")
    def _one_target(self) -> EgressRule:
        if (self.host is None) == (self.cidr is None):
            raise ValueError("give exactly one of 'host' or 'cidr'")
        return self


class Egress(_Model):
    allow: list[EgressRule] = Field(default_factory=list)
    deny: list[EgressRule] = Field(default_factory=list)
    resolve: dict[str, list[str]] = Field(
        default_factory=dict, description="static answers: name -> addresses"
    )

    @field_validator("resolve")
    @classmethod
    def _addresses(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, addrs in v.items():
            for a in addrs:
                try:
                    ipaddress.ip_address(a)
                except ValueError:
                    raise ValueError(f"{name}: {a!r} is not an IP address") from None
        return v

    def is_empty(self) -> bool:
        return not (self.allow or self.deny or self.resolve)


class TenantSpec(_Model):
    quota: TenantQuota = Field(default_factory=TenantQuota)
    egress: Egress = Field(default_factory=Egress, description="defaults merged into each agent")


class Tenant(_Model):
    api_version: Literal["agentcell/v1"]
    kind: Literal["Tenant"]
    metadata: Metadata
    spec: TenantSpec = Field(default_factory=TenantSpec)

    @model_validator(mode="after")
    def _no_tenant(self) -> Tenant:
        if self.metadata.tenant is not None:
            raise LocatedError(("metadata", "tenant"), "a Tenant's metadata has no 'tenant' field")
        return self


def _user(v: str) -> str:
    parts = v.split(":")
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise ValueError(f"{v!r} is not 'uid:gid' with numeric ids, e.g. {DEFAULT_USER!r}")
    if any(int(p) == 0 for p in parts):
        raise ValueError("root (uid or gid 0) is refused; use a non-root id such as 10001:10001")
    if any(int(p) > 2**31 - 1 for p in parts):
        raise ValueError("ids must be below 2147483648")
    return v if len(parts) == 2 else f"{v}:{v}"


class Workspace(_Model):
    access: Literal["rw", "ro", "none"] = Field(
        default="rw", description="rw | ro | none; mounted at /workspace"
    )
    size: ByteSize | None = None


class Resources(_Model):
    cpus: float = Field(default=1.0, gt=0, le=256)
    memory: ByteSize = Field(default=512 * 1024**2, ge=16 * 1024**2, description="at least 16Mi")
    pids: int = Field(default=256, ge=16, le=65536)


class DockerLimits(_Model):
    containers: int = Field(default=5, ge=0)
    cpus: float = Field(default=1.0, gt=0)
    memory: ByteSize = 1024**3


class DockerAccess(_Model):
    access: Literal["none", "own"] = Field(default="none", description="none | own")
    limits: DockerLimits = Field(default_factory=DockerLimits)


class HttpProbe(_Model):
    port: Port
    path: str = Field(default="/", pattern=r"^/[^\s]*$")


class TcpProbe(_Model):
    port: Port


class ExecProbe(_Model):
    command: list[str] = Field(min_length=1)


class Health(_Model):
    http: HttpProbe | None = None
    tcp: TcpProbe | None = None
    exec: ExecProbe | None = None
    interval: Duration = Field(default=10.0, ge=0.1)
    timeout: Duration = Field(default=2.0, gt=0)
    retries: int = Field(default=3, ge=1, le=100)
    start_period: Duration = 0.0

    @model_validator(mode="after")
    def _one_probe(self) -> Health:
        given = [k for k in ("http", "tcp", "exec") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one probe: 'http', 'tcp' or 'exec'")
        if self.timeout > self.interval:
            raise ValueError("timeout must not exceed interval")
        return self


class Restart(_Model):
    max_restarts: int = Field(default=5, ge=0)
    window: Duration = Field(default=600.0, gt=0)


class AgentSpec(_Model):
    image: str = Field(description="an image present on the engine, e.g. agentcell/demo-agent")
    command: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    user: Annotated[str, AfterValidator(_user)] = DEFAULT_USER
    workspace: Workspace = Field(default_factory=Workspace)
    resources: Resources = Field(default_factory=Resources)
    egress: Egress = Field(default_factory=Egress)
    docker: DockerAccess = Field(default_factory=DockerAccess)
    health: Health | None = None
    secrets: list[Name] = Field(default_factory=list)
    restart: Restart = Field(default_factory=Restart)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not _IMAGE_RE.match(v):
            raise ValueError(f"{v!r} is not an image reference such as agentcell/demo-agent:latest")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not _ENV_NAME.match(k):
                raise ValueError(f"{k!r} is not a variable name (letters, digits, '_')")
            if k.upper() in _RESERVED_ENV or k.upper().startswith("AGENTCELL_"):
                raise ValueError(f"{k!r} is set by agentcell itself and cannot be given")
        return v


class Agent(_Model):
    api_version: Literal["agentcell/v1"]
    kind: Literal["Agent"]
    metadata: Metadata
    spec: AgentSpec

    @model_validator(mode="after")
    def _tenant(self) -> Agent:
        if self.metadata.tenant is None:
            raise LocatedError(("metadata", "tenant"), "required: the tenant this agent belongs to")
        return self

    @property
    def tenant(self) -> str:
        assert self.metadata.tenant is not None
        return self.metadata.tenant

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def ref(self) -> str:
        """``tenant/name``: how the CLI and the API name this cell."""
        return f"{self.tenant}/{self.name}"


def unsupported(doc: Tenant | Agent) -> list[tuple[str, str]]:
    """Fields this release parses but does not implement yet, as (field path, why)."""
    out: list[tuple[str, str]] = []
    later = "not supported yet: "
    if isinstance(doc, Tenant):
        return out
    s = doc.spec
    if s.workspace.size is not None:
        out.append(
            (
                "spec.workspace.size",
                later + "this engine's volume driver cannot enforce a size; omit it",
            )
        )
    return out
