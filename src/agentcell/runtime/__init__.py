"""Backends that execute plan steps on a real runtime, and observe it."""

from agentcell.runtime._backend import Backend, CellContainers, DeployRun, Made, SecretMounts
from agentcell.runtime._canary import run_canary
from agentcell.runtime._docker import DockerDriver
from agentcell.runtime._firewall import CHAIN, Firewall, chain_rules, jump_rule
from agentcell.runtime._gc import GcOutcome
from agentcell.runtime._probe import probe, probe_sidecar
from agentcell.runtime._seccomp import ENGINE_PROFILE_PATHS, cell_seccomp_profile

__all__ = [
    "CHAIN",
    "ENGINE_PROFILE_PATHS",
    "Backend",
    "CellContainers",
    "DeployRun",
    "DockerDriver",
    "Firewall",
    "GcOutcome",
    "Made",
    "SecretMounts",
    "cell_seccomp_profile",
    "chain_rules",
    "jump_rule",
    "probe",
    "probe_sidecar",
    "run_canary",
]
