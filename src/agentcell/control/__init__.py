"""The control plane: store, reconciler, health probes, audit, tokens."""

from agentcell.control._audit import (
    TIME_FORMS,
    AuditDecision,
    AuditKind,
    AuditLog,
    AuditQuery,
    csv_header,
    csv_rows,
    parse_time,
    rfc3339,
)
from agentcell.control._auth import (
    TOKEN_FILE,
    Authenticator,
    GateTokens,
    IssuedToken,
    TenantTokens,
    ensure_admin_token,
)
from agentcell.control._gc import GcResult
from agentcell.control._notify import check_webhook
from agentcell.control._plane import ApplyResult, ControlPlane, PlaneConfig
from agentcell.control._reconciler import Reconciler, ReconcilerConfig
from agentcell.control._store import AuditRecord, CellStatus, Store

__all__ = [
    "TIME_FORMS",
    "TOKEN_FILE",
    "ApplyResult",
    "AuditDecision",
    "AuditKind",
    "AuditLog",
    "AuditQuery",
    "AuditRecord",
    "Authenticator",
    "CellStatus",
    "ControlPlane",
    "GateTokens",
    "GcResult",
    "IssuedToken",
    "PlaneConfig",
    "Reconciler",
    "ReconcilerConfig",
    "Store",
    "TenantTokens",
    "check_webhook",
    "csv_header",
    "csv_rows",
    "ensure_admin_token",
    "parse_time",
    "rfc3339",
]
