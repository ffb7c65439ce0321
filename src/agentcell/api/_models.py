"""The API's answers as typed models: the OpenAPI document describes each, and a field
the control plane renames or drops fails validation instead of changing the public API
without a word (every model forbids fields it does not declare)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Applied",
    "AuditEntry",
    "CellDetail",
    "CellStatusView",
    "CellSummary",
    "Check",
    "GcAnswer",
    "Healthz",
    "IssuedToken",
    "Paused",
    "Removing",
    "Revoked",
    "TokenInfo",
    "Verified",
    "Whoami",
]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Healthz(_Answer):
    status: Literal["ok"]
    version: str


class Whoami(_Answer):
    admin: bool
    tenant: str | None = Field(description="the tenant of a tenant token; none for the admin")
    token_id: str | None


class AppliedTenant(_Answer):
    name: str
    changed: bool


class AppliedCell(_Answer):
    tenant: str
    name: str
    generation: int = Field(description="the stored generation; a changed spec is the next")
    changed: bool
    policy_digest: str = Field(description="the egress policy the gate must hold; empty: none")
    version: int = Field(description="the status version now: wait for one above it")


class Applied(_Answer):
    tenants: list[AppliedTenant]
    cells: list[AppliedCell]


class IssuedToken(_Answer):
    """A token just issued: the only answer that ever carries it."""

    tenant: str
    token_id: str
    token: str
    expires: float | None = Field(description="unix time; none: until revoked")
    replaces: str | None = Field(default=None, description="the token a rotation replaced")


class TokenInfo(_Answer):
    id: str
    tenant: str
    created: float
    revoked: float | None
    expires: float | None
    state: str = Field(description="live, revoked or expired")


class Revoked(_Answer):
    token_id: str
    revoked: bool = Field(description="false: it was revoked or expired already")


class Attempt(_Answer):
    time: float
    step: str = Field(description="restart or recreate")


class Restart(_Answer):
    requested: int
    honoured: int


class Recovery(_Answer):
    max_restarts: int
    window: float
    rung: int = Field(description="recoveries since the cell was last well")
    attempts: list[Attempt]


class Limits(_Answer):
    cpus: float
    memory: int
    pids: int


class CellSummary(_Answer):
    """One cell as ``GET /v1/cells`` lists it."""

    tenant: str
    name: str
    generation: int
    state: str = Field(description="pending, running, healthy, unhealthy, recovering, ...")
    health: str = Field(description="none, starting, healthy or unhealthy")
    reason: str
    since: float
    paused: bool
    restart: Restart
    recovery: Recovery
    breach: str = Field(description="what the isolation canary last found wrong")
    observed_generation: int
    image: str
    limits: Limits
    version: int
    ip: str
    created: float


class HardeningCheck(_Answer):
    property: str
    ok: bool
    reason: str


class ContainerInfo(_Answer):
    id: str
    name: str
    started: str
    network: str


class EgressInfo(_Answer):
    policy_digest: str
    loaded_digest: str
    allow: int
    deny: int
    gate: str = Field(description="the gate container and its state, or 'missing'")


class DockerLimits(_Answer):
    containers: int
    cpus: float
    memory: int


class DockerInfo(_Answer):
    proxy: str = Field(description="the docker proxy container and its state, or 'missing'")
    limits: DockerLimits


class AuditEntry(_Answer):
    """One audit record."""

    tenant: str
    cell: str
    actor: str
    kind: str
    decision: str
    reason: str
    details: dict[str, Any]
    time: float
    id: int


class CellDetail(CellSummary):
    """One cell as ``GET /v1/cells/{tenant}/{name}`` shows it: the summary, its spec, and
    what the engine holds of it."""

    spec: dict[str, Any] = Field(description="the Agent document as stored")
    subnet: str
    hardening: list[HardeningCheck] | None = Field(
        default=None, description="the hardening check of the agent as the engine reports it"
    )
    seccomp: str | None = None
    container: ContainerInfo | None = None
    egress: EgressInfo | None = None
    docker: DockerInfo | None = None
    events: list[AuditEntry] = Field(description="the cell's newest audit records")


class CellStatusView(_Answer):
    """A cell's status, as ``GET /v1/cells/{tenant}/{name}/wait`` answers it."""

    tenant: str
    name: str
    state: str
    health: str
    reason: str
    since: float
    observed_generation: int
    failed_generation: int
    container_id: str
    ip: str
    attempts: list[Attempt]
    policy_digest: str = Field(description="the digest of the policy the gate has loaded")
    version: int
    rung: int
    breach: str
    health_reason: str
    restart_honoured: int
    ready: bool | None = Field(
        default=None, description="the stored generation is up, with its policy (readiness)"
    )
    settled: bool | None = Field(
        default=None, description="waiting longer changes nothing: ready, failed or paused"
    )
    ready_reason: str | None = None
    gone: bool = Field(description="the cell was removed from the store")


class Paused(_Answer):
    cells: list[str]
    changed: bool | None = Field(default=None, description="one cell: whether it changed")


class Removing(_Answer):
    status: Literal["removing"]


class Check(_Answer):
    id: str
    section: str
    ok: bool
    detail: str


class Verified(_Answer):
    ok: bool
    checks: list[Check]


class GcObject(_Answer):
    kind: str
    name: str
    id: str
    tenant: str
    cell: str
    role: str
    reason: str
    why: str | None = None


class GcAnswer(_Answer):
    applied: bool
    orphans: list[GcObject]
    removed: list[GcObject]
    kept: list[GcObject]
    failed: list[GcObject]
    foreign: int = Field(description="objects of tenants the store does not know, left out")
