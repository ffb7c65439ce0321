"""``python3 -m agentcell.gate.egress``."""

from agentcell.gate.egress import main

raise SystemExit(main())
