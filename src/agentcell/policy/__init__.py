"""Pure security decisions: each returns a ``Decision`` with a fixed-phrase reason."""

from agentcell.policy._decision import Decision
from agentcell.policy._hardening import (
    LABEL_CELL,
    LABEL_GENERATION,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    LABEL_TENANT,
    PROFILE_VERSION,
    RUN_TMPFS_SIZE,
    TMP_TMPFS_SIZE,
    WORKSPACE_PATH,
    CellNames,
    check_container,
    container_body,
)
from agentcell.policy._seccomp import DENIED_SYSCALLS, profile_allows, stricter_seccomp

__all__ = [
    "DENIED_SYSCALLS",
    "LABEL_CELL",
    "LABEL_GENERATION",
    "LABEL_ROLE",
    "LABEL_SPEC_HASH",
    "LABEL_TENANT",
    "PROFILE_VERSION",
    "RUN_TMPFS_SIZE",
    "TMP_TMPFS_SIZE",
    "WORKSPACE_PATH",
    "CellNames",
    "Decision",
    "check_container",
    "container_body",
    "profile_allows",
    "stricter_seccomp",
]
