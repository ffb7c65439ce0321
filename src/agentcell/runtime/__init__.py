"""Drivers that execute plans on a real engine, and observe it."""

from agentcell.runtime._docker import DeployOutcome, DockerDriver, cell_names
from agentcell.runtime._firewall import CHAIN, Firewall, chain_rules, jump_rule
from agentcell.runtime._probe import probe

__all__ = [
    "CHAIN",
    "DeployOutcome",
    "DockerDriver",
    "Firewall",
    "cell_names",
    "chain_rules",
    "jump_rule",
    "probe",
]
