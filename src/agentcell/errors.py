"""The one exception tree of agentcell.

AgentcellError                 base: every error agentcell raises on purpose
├── SpecError                  a spec file or document is invalid (file, document, line, field)
├── ConflictError              the request contradicts stored state (quota, subnet pool)
├── NotFoundError              a tenant or cell that does not exist
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
    "ImageBuildError",
    "InputError",
    "NotFoundError",
    "RuntimeDriverError",
    "SpecError",
    "SpecIssue",
    "StoreError",
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
