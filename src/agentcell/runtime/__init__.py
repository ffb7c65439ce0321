"""Drivers that execute plans on a real engine, and observe it."""

from agentcell.runtime._canary import run_canary
from agentcell.runtime._docker import (
    CellContainers,
    DeployOutcome,
    DockerDriver,
    SecretMounts,
)
from agentcell.runtime._firewall import CHAIN, Firewall, chain_rules, jump_rule
from agentcell.runtime._gc import GcOutcome
from agentcell.runtime._probe import probe, probe_sidecar
from agentcell.runtime._seccomp import ENGINE_PROFILE_PATHS, cell_seccomp_profile

__all__ = [
    "CHAIN",
    "ENGINE_PROFILE_PATHS",
    "CellContainers",
    "DeployOutcome",
    "DockerDriver",
    "Firewall",
    "GcOutcome",
    "SecretMounts",
    "cell_seccomp_profile",
    "chain_rules",
    "jump_rule",
    "probe",
    "probe_sidecar",
    "run_canary",
]
