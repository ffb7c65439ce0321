"""Pure planning: spec -> desired state; (desired, observed) -> actions."""

from agentcell.plan._deploy import (
    DeployMode,
    DeployPlan,
    DeployStep,
    StepKind,
    deploy_steps,
    matching_agent,
    ready_budget,
    sidecar_current,
)
from agentcell.plan._egress import compile_egress
from agentcell.plan._gc import GC_REASONS, EngineObject, ObjectKind, Orphan, find_orphans
from agentcell.plan._hash import spec_hash
from agentcell.plan._model import (
    Action,
    ActionKind,
    CellKey,
    DesiredCell,
    ObservedCell,
    ObservedContainer,
    Progress,
)
from agentcell.plan._planner import plan
from agentcell.plan._quota import check_quota, footprint
from agentcell.plan._recovery import (
    Attempt,
    Recovery,
    Step,
    Trouble,
    backoff,
    health_verdict,
    recover,
    settled,
)
from agentcell.plan._states import (
    TRANSITIONS,
    UP,
    CellState,
    InvalidTransition,
    Readiness,
    Role,
    check_transition,
    readiness,
)
from agentcell.plan._status import Observed, StatusChanges, observed_status
from agentcell.plan._subnets import allocate_subnet, parse_pool

__all__ = [
    "GC_REASONS",
    "TRANSITIONS",
    "UP",
    "Action",
    "ActionKind",
    "Attempt",
    "CellKey",
    "CellState",
    "DeployMode",
    "DeployPlan",
    "DeployStep",
    "DesiredCell",
    "EngineObject",
    "InvalidTransition",
    "ObjectKind",
    "Observed",
    "ObservedCell",
    "ObservedContainer",
    "Orphan",
    "Progress",
    "Readiness",
    "Recovery",
    "Role",
    "StatusChanges",
    "Step",
    "StepKind",
    "Trouble",
    "allocate_subnet",
    "backoff",
    "check_quota",
    "check_transition",
    "compile_egress",
    "deploy_steps",
    "find_orphans",
    "footprint",
    "health_verdict",
    "matching_agent",
    "observed_status",
    "parse_pool",
    "plan",
    "readiness",
    "ready_budget",
    "recover",
    "settled",
    "sidecar_current",
    "spec_hash",
]
