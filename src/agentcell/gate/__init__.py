"""The sidecar processes of a cell; each is run as ``python3 -m agentcell.gate.<name>``.

- ``agentcell.gate.egress``: the egress gate ("the gate"), the cell's only way out;
- ``agentcell.gate.dockerproxy``: the docker proxy, for agents with docker access.

What both use lives here: ``_acceptor`` (listening sockets, accept loops), ``_listen``
(reading listen addresses and ports), ``_http``, ``_relay``, ``_records``. They do IO and
ask ``agentcell.policy`` for every decision; they import neither the spec models nor
the control plane, so they start fast and stay small. Their environment is defined in
``policy._sidecar_env``.
"""

__all__: list[str] = []
