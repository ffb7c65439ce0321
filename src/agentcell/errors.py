"""The one exception tree of agentcell.

AgentcellError                 base: every error agentcell raises on purpose
├── SpecError                  a spec file or document is invalid (file, document, line, field)
├── ConflictError              the request contradicts stored state (quota, subnet pool)
├── NotFoundError              a tenant or cell that does not exist (or not the caller's)
├── UnauthorizedError          no valid token was presented
│   └── RateLimitedError       too many failed authentications from one client
├── ForbiddenError             the caller's token may not do this (admin only)
├── RuntimeDriverError         the Docker Engine refused or failed a step
│   └── DeployStepError        one named step of a deploy failed (rolled back)
├── FirewallError              host firewall rules could not be installed or checked
├── ImageBuildError            an image could not be built
├── StoreError                 the state store is unusable (locked, corrupt, disk full)
├── ConfigError                the server's own configuration is invalid (e.g. its webhook)
├── InputError                 a request's input (not a spec) is invalid, e.g. a secret value
└── ClientError                the CLI could not talk to the control plane
"""

from __future__ import annotations

__all__ = [
    "AgentcellError",
    "ClientError",
    "ConfigError",
    "ConflictError",
    "DeployStepError",
    "FirewallError",
    "ForbiddenError",
    "ImageBuildError",
    "InputError",
    "NotFoundError",
    "RateLimitedError",
    "RuntimeDriverError",
    "SpecError",
    "SpecIssue",
    "StoreError",
    "UnauthorizedError",
]

from dataclasses import dataclass


class AgentcellError(Exception):
    """Base of every error agentcell raises on purpose."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in one spec document, located as precisely as the input allows."""

    source: str
    document: int
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: document {self.document}"
        if self.line is not None:
            where += f", line {self.line}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class SpecError(AgentcellError):
    """A spec file or document is invalid; carries every issue found."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class ConflictError(AgentcellError):
    """The request contradicts stored state or a limit (quota, subnet pool)."""


class NotFoundError(AgentcellError):
    """A tenant or cell that does not exist."""


class UnauthorizedError(AgentcellError):
    """No valid token was presented; the message is a fixed phrase."""


class RateLimitedError(UnauthorizedError):
    """Too many failed authentications from one client; try again after ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"too many failed authentications from this client; try again in "
            f"{max(1, round(retry_after))} s"
        )


class ForbiddenError(AgentcellError):
    """The caller is known, but its token may not do this (an admin-only operation)."""


class RuntimeDriverError(AgentcellError):
    """The Docker Engine refused or failed an operation."""


class DeployStepError(RuntimeDriverError):
    """One named step of a deploy failed; what the deploy created was removed."""

    def __init__(self, step: str, cause: str) -> None:
        self.step = step
        self.cause = cause
        super().__init__(f"step '{step}' failed: {cause}")


class FirewallError(AgentcellError):
    """Host firewall rules for cell subnets could not be installed or checked."""


class ImageBuildError(AgentcellError):
    """An image could not be built."""


class StoreError(AgentcellError):
    """The state store cannot be used (locked, corrupt, disk full)."""


class ConfigError(AgentcellError):
    """The server's own configuration (its options, not a spec) is invalid."""


class InputError(AgentcellError):
    """A request's input that is not a spec is invalid (a secret's name or value)."""


class ClientError(AgentcellError):
    """The CLI could not complete a call to the control plane."""
