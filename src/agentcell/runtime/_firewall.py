"""Host firewall rules that keep cells off the host.

A Docker ``--internal`` network does not stop a container from reaching services the
host listens on (every host address answers, the network's own gateway included). So
every packet a cell subnet sends to the host itself is dropped, except replies to
connections the host opened (health probes). The rules cover the whole subnet pool,
so a cell is covered from the moment its network exists.
"""

from __future__ import annotations

import shutil
import subprocess

from agentcell.errors import FirewallError

__all__ = ["CHAIN", "Firewall", "chain_rules", "jump_rule"]

CHAIN = "AGENTCELL-INPUT"


def jump_rule(pool: str) -> list[str]:
    """The INPUT rule sending everything from the pool to our chain."""
    return ["INPUT", "-s", pool, "-j", CHAIN]


def chain_rules() -> list[list[str]]:
    """Our chain, in order: replies to host-opened connections pass, the rest is dropped."""
    return [
        [CHAIN, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"],
        [CHAIN, "-j", "DROP"],
    ]


class Firewall:
    """Installs and checks the rules with iptables; every failure is a FirewallError."""

    def __init__(self, pool: str, iptables: str | None = None) -> None:
        self.pool = pool
        self.iptables = iptables or shutil.which("iptables") or "iptables"

    def ensure(self) -> None:
        """Install what is missing; idempotent. Raises FirewallError when it cannot."""
        if self._run("-n", "-L", CHAIN, check=False) != 0:
            self._run("-N", CHAIN)
        wanted = chain_rules()
        if self._listed() != [" ".join(["-A", *r]) for r in wanted]:
            self._run("-F", CHAIN)
            for rule in wanted:
                self._run("-A", *rule)
        if self._run("-C", *jump_rule(self.pool), check=False) != 0:
            self._run("-I", *jump_rule(self.pool)[:1], "1", *jump_rule(self.pool)[1:])

    def check(self) -> bool:
        """True iff the rules are in place, as installed by ``ensure``."""
        try:
            listed = self._listed()
        except FirewallError:
            return False
        if listed != [" ".join(["-A", *r]) for r in chain_rules()]:
            return False
        return self._run("-C", *jump_rule(self.pool), check=False) == 0

    def remove(self) -> None:
        """Remove the jump and the chain (used by tests and uninstall)."""
        while self._run("-D", *jump_rule(self.pool), check=False) == 0:
            pass
        self._run("-F", CHAIN, check=False)
        self._run("-X", CHAIN, check=False)

    def _listed(self) -> list[str]:
        out = self._output("-S", CHAIN)
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def _run(self, *args: str, check: bool = True) -> int:
        try:
            proc = subprocess.run(
                [self.iptables, "-w", "5", *args],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise FirewallError(f"cannot run {self.iptables}: {e}") from None
        if check and proc.returncode != 0:
            raise FirewallError(
                f"iptables {' '.join(args)} failed: {proc.stderr.strip() or proc.returncode}; "
                "agentcell serve needs root (CAP_NET_ADMIN) and iptables to keep cells off the host"
            )
        return proc.returncode

    def _output(self, *args: str) -> str:
        try:
            proc = subprocess.run(
                [self.iptables, "-w", "5", *args],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise FirewallError(f"cannot run {self.iptables}: {e}") from None
        if proc.returncode != 0:
            raise FirewallError(f"iptables {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout
