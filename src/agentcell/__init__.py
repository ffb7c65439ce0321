"""agentcell: run AI agents, and the code they execute, each in its own hardened Docker cell."""

__all__ = ["__version__"]
__version__ = "0.1.0"
