"""The spec: typed models of the user's YAML, validated at load (``apiVersion: agentcell/v1``)."""

from agentcell.spec._dump import dump_documents
from agentcell.spec._load import Document, load_file, load_text
from agentcell.spec._models import (
    API_VERSION,
    DEFAULT_USER,
    NAME_PATTERN,
    Agent,
    AgentSpec,
    DockerAccess,
    Egress,
    EgressRule,
    Health,
    Name,
    Resources,
    Restart,
    Tenant,
    TenantQuota,
    TenantSpec,
    Workspace,
    unsupported,
)
from agentcell.spec._units import format_bytes, parse_bytes, parse_duration

__all__ = [
    "API_VERSION",
    "DEFAULT_USER",
    "NAME_PATTERN",
    "Agent",
    "AgentSpec",
    "DockerAccess",
    "Document",
    "Egress",
    "EgressRule",
    "Health",
    "Name",
    "Resources",
    "Restart",
    "Tenant",
    "TenantQuota",
    "TenantSpec",
    "Workspace",
    "dump_documents",
    "format_bytes",
    "json_schema",
    "load_file",
    "load_text",
    "parse_bytes",
    "parse_duration",
    "unsupported",
]


def json_schema() -> dict[str, object]:
    """JSON Schema of a spec document (Tenant or Agent), for editors."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(Tenant | Agent).json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "agentcell/v1 spec document"
    return schema
