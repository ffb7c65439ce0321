"""The sidecar processes of a cell; each is run as ``python3 -m agentcell.gate.<name>``.

``agentcell.gate.egress``: the egress gate, the cell's only way out (see its docstring).
They do IO and ask ``agentcell.policy`` for every decision; they import neither the
spec models nor the control plane, so they start fast and stay small.
"""

__all__: list[str] = []
