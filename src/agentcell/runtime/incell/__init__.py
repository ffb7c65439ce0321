"""Scripts that agentcell runs inside a cell; standard library only, no agentcell imports."""
