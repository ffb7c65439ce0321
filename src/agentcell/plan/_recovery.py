"""Health verdicts and the recovery ladder: pure functions from a cell's history to a step.

The ladder, per cell, for a cell that is in trouble (its agent stopped, its health
check failing, or its isolation canary reporting a breach):

1. recoveries inside the spec's ``restart.window`` reached ``restart.maxRestarts``
                                                   -> GIVE_UP ("crash loop")
2. the isolation canary reported a breach          -> RECREATE (a restart would keep
                                                      the container that drifted)
3. no recovery since the cell was last well        -> RESTART
4. one recovery since the cell was last well       -> RECREATE
5. two or more                                     -> GIVE_UP ("recovery exhausted")

Before any step but the first of a window, the ladder waits: 1 s after the previous
recovery, doubling with each recovery inside the window, at most ``BACKOFF_CAP``
(returned as WAIT with the time it may act). GIVE_UP never waits.

A cell is *well* again when its health check passes, or, without a health check, when
its agent has stayed up ``SETTLE_SECONDS`` since the last recovery; ``settled`` says
when the rung count goes back to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from agentcell.spec import Restart

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "SETTLE_SECONDS",
    "Attempt",
    "Recovery",
    "Step",
    "Trouble",
    "backoff",
    "health_verdict",
    "recover",
    "settled",
]

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
SETTLE_SECONDS = 10.0


class Trouble(StrEnum):
    """Why a cell needs recovering."""

    STOPPED = "stopped"
    """The agent's container is not running (exited, killed, OOM-killed)."""
    UNHEALTHY = "unhealthy"
    """The spec's health check failed ``retries`` times in a row."""
    BREACH = "breach"
    """The isolation canary found the cell less contained than its spec says."""


class Step(StrEnum):
    RESTART = "restart"
    RECREATE = "recreate"
    GIVE_UP = "give-up"
    WAIT = "wait"


@dataclass(frozen=True)
class Attempt:
    """One recovery the control plane made: when, and which rung."""

    time: float
    step: str


@dataclass(frozen=True)
class Recovery:
    """The ladder's answer: what to do, why, and (for WAIT) from when it may act."""

    step: Step
    reason: str
    at: float = 0.0


def backoff(recent: int) -> float:
    """Seconds to wait after the previous recovery, given ``recent`` recoveries in the window."""
    if recent <= 0:
        return 0.0
    return float(min(BACKOFF_BASE * 2 ** (recent - 1), BACKOFF_CAP))


def recover(
    trouble: Trouble,
    why: str,
    attempts: Sequence[Attempt],
    rung: int,
    limit: Restart,
    *,
    now: float,
) -> Recovery:
    """The next step for a cell in ``trouble`` (``why`` says what happened), per the docstring.

    ``attempts`` are the recoveries made so far, oldest first; ``rung`` how many of them
    came since the cell was last well.
    """
    recent = [a for a in attempts if now - a.time < limit.window]
    if len(recent) >= limit.max_restarts:
        return Recovery(
            Step.GIVE_UP,
            f"crash loop: {len(recent)} recoveries within {limit.window:g}s ({why})",
        )
    if trouble is Trouble.BREACH:
        step = Step.RECREATE
    elif rung <= 0:
        step = Step.RESTART
    elif rung == 1:
        step = Step.RECREATE
    else:
        return Recovery(Step.GIVE_UP, f"recovery exhausted: restarted and recreated, still {why}")
    if recent:
        at = recent[-1].time + backoff(len(recent))
        if now < at:
            return Recovery(Step.WAIT, f"{why}: {step} in {at - now:.1f}s (backoff)", at)
    return Recovery(step, why)


def settled(
    rung: int,
    attempts: Sequence[Attempt],
    *,
    has_health: bool,
    health: str,
    running: bool,
    now: float,
) -> bool:
    """True when a cell that climbed the ladder is well again, so its rung returns to zero."""
    if rung <= 0 or not running:
        return False
    if has_health:
        return health == "healthy"
    last = attempts[-1].time if attempts else 0.0
    return now - last >= SETTLE_SECONDS


def health_verdict(
    ok: bool, failures: int, retries: int, *, starting: bool
) -> tuple[str | None, int]:
    """One probe result folded into the streak: (new verdict or None, failures so far).

    A pass is "healthy" at once; a failure counts, and ``retries`` failures in a row are
    "unhealthy" unless the cell is still inside its start period.
    """
    if ok:
        return "healthy", 0
    failures += 1
    if starting or failures < retries:
        return None, failures
    return "unhealthy", failures
