"""Pure planning: spec -> desired state; (desired, observed) -> actions."""

from agentcell.plan._egress import compile_egress
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
from agentcell.plan._quota import check_quota
from agentcell.plan._subnets import allocate_subnet, parse_pool

__all__ = [
    "Action",
    "ActionKind",
    "CellKey",
    "DesiredCell",
    "ObservedCell",
    "ObservedContainer",
    "Progress",
    "allocate_subnet",
    "check_quota",
    "compile_egress",
    "parse_pool",
    "plan",
    "spec_hash",
]
