"""``python3 -m agentcell.gate.dockerproxy``."""

from agentcell.gate.dockerproxy import main

raise SystemExit(main())
