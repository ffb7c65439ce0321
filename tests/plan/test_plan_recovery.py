"""The recovery ladder and health verdicts: tables mirror the docstring of plan/_recovery.py.

1. recoveries inside the window reached maxRestarts -> GIVE_UP ("crash loop")
2. an isolation breach                              -> RECREATE
3. no recovery since the cell was last well         -> RESTART
4. one                                              -> RECREATE
5. two or more                                      -> GIVE_UP ("recovery exhausted")
Backoff: 1 s after the previous recovery, doubling per recovery in the window, capped.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.plan import (
    Attempt,
    Recovery,
    Step,
    Trouble,
    backoff,
    health_verdict,
    recover,
    settled,
)
from agentcell.plan._recovery import BACKOFF_CAP, SETTLE_SECONDS
from agentcell.spec import Restart

NOW = 50_000.0
DEFAULT = Restart()  # 5 within 600 s
WHY = "agent exited (1)"


def ago(*ages: float) -> tuple[Attempt, ...]:
    return tuple(Attempt(NOW - a, "restart") for a in sorted(ages, reverse=True))


def limit(max_restarts: int, window: float) -> Restart:
    return Restart.model_validate({"maxRestarts": max_restarts, "window": window})


ROWS: list[tuple[str, Trouble, tuple[Attempt, ...], int, Restart, Recovery]] = [
    (
        "1. the limit reached inside the window: GIVE_UP, crash loop",
        Trouble.STOPPED,
        ago(100, 200, 300, 400, 500),
        0,
        DEFAULT,
        Recovery(Step.GIVE_UP, f"crash loop: 5 recoveries within 600s ({WHY})"),
    ),
    (
        "1. the crash-loop limit wins over a breach",
        Trouble.BREACH,
        ago(100, 200),
        0,
        limit(2, 600),
        Recovery(Step.GIVE_UP, f"crash loop: 2 recoveries within 600s ({WHY})"),
    ),
    (
        "1. maxRestarts 0: the first trouble is the last",
        Trouble.UNHEALTHY,
        (),
        0,
        limit(0, 600),
        Recovery(Step.GIVE_UP, f"crash loop: 0 recoveries within 600s ({WHY})"),
    ),
    (
        "1. recoveries older than the window do not count",
        Trouble.STOPPED,
        ago(600, 700, 800, 900, 1000),
        0,
        DEFAULT,
        Recovery(Step.RESTART, WHY),
    ),
    (
        "2. a breach is recreated at once, never restarted",
        Trouble.BREACH,
        (),
        0,
        DEFAULT,
        Recovery(Step.RECREATE, WHY),
    ),
    (
        "2. a breach is recreated even high on the ladder",
        Trouble.BREACH,
        ago(100, 200),
        5,
        DEFAULT,
        Recovery(Step.RECREATE, WHY),
    ),
    ("3. first trouble: RESTART", Trouble.STOPPED, (), 0, DEFAULT, Recovery(Step.RESTART, WHY)),
    (
        "3. unhealthy, first rung: RESTART",
        Trouble.UNHEALTHY,
        ago(300),
        0,
        DEFAULT,
        Recovery(Step.RESTART, WHY),
    ),
    (
        "4. one recovery did not help: RECREATE",
        Trouble.STOPPED,
        ago(5),
        1,
        DEFAULT,
        Recovery(Step.RECREATE, WHY),
    ),
    (
        "5. restart and recreate did not help: GIVE_UP, exhausted",
        Trouble.UNHEALTHY,
        ago(5, 10),
        2,
        DEFAULT,
        Recovery(Step.GIVE_UP, f"recovery exhausted: restarted and recreated, still {WHY}"),
    ),
    (
        "backoff: one recovery half a second ago: WAIT until 1 s after it",
        Trouble.STOPPED,
        ago(0.5),
        1,
        DEFAULT,
        Recovery(Step.WAIT, f"{WHY}: recreate in 0.5s (backoff)", NOW + 0.5),
    ),
    (
        "backoff: three recoveries in the window: 4 s after the last",
        Trouble.STOPPED,
        ago(3, 50, 100),
        0,
        DEFAULT,
        Recovery(Step.WAIT, f"{WHY}: restart in 1.0s (backoff)", NOW + 1),
    ),
    (
        "backoff: waited long enough: act",
        Trouble.STOPPED,
        ago(4, 50, 100),
        0,
        DEFAULT,
        Recovery(Step.RESTART, WHY),
    ),
    (
        "backoff: GIVE_UP never waits",
        Trouble.STOPPED,
        ago(0.1, 0.2),
        2,
        DEFAULT,
        Recovery(Step.GIVE_UP, f"recovery exhausted: restarted and recreated, still {WHY}"),
    ),
]


@pytest.mark.parametrize(
    ("trouble", "attempts", "rung", "restart", "expected"),
    [r[1:] for r in ROWS],
    ids=[r[0] for r in ROWS],
)
def test_ladder(
    trouble: Trouble,
    attempts: tuple[Attempt, ...],
    rung: int,
    restart: Restart,
    expected: Recovery,
) -> None:
    assert recover(trouble, WHY, attempts, rung, restart, now=NOW) == expected


@pytest.mark.parametrize(
    ("recent", "seconds"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, BACKOFF_CAP), (100, BACKOFF_CAP)],
)
def test_backoff_doubles_and_is_capped(recent: int, seconds: float) -> None:
    assert backoff(recent) == seconds


ages = st.lists(st.floats(min_value=0, max_value=5000, allow_nan=False), max_size=10)


@given(
    trouble=st.sampled_from(list(Trouble)),
    ages=ages,
    rung=st.integers(min_value=0, max_value=5),
    max_restarts=st.integers(min_value=0, max_value=8),
    window=st.floats(min_value=1, max_value=3000, allow_nan=False),
)
def test_ladder_properties(
    trouble: Trouble, ages: list[float], rung: int, max_restarts: int, window: float
) -> None:
    attempts = ago(*ages)
    out = recover(trouble, WHY, attempts, rung, limit(max_restarts, window), now=NOW)
    recent = [a for a in attempts if NOW - a.time < window]
    # The crash-loop limit is exact.
    if len(recent) >= max_restarts:
        assert out.step is Step.GIVE_UP and out.reason.startswith("crash loop")
        return
    # A breach never gets a plain restart: the drifted container must go.
    if trouble is Trouble.BREACH:
        assert out.step in (Step.RECREATE, Step.WAIT)
    # WAIT names a moment in the future, no later than the cap after the last recovery.
    if out.step is Step.WAIT:
        assert NOW < out.at <= recent[-1].time + BACKOFF_CAP
    else:
        assert out.at == 0.0
    # Nothing but GIVE_UP comes after the second rung, except for a breach.
    if rung >= 2 and trouble is not Trouble.BREACH:
        assert out.step is Step.GIVE_UP


@pytest.mark.parametrize(
    ("rung", "ages", "has_health", "health", "running", "expected"),
    [
        (0, (), True, "healthy", True, False),  # nothing to reset
        (1, (1,), True, "healthy", True, True),
        (1, (1,), True, "starting", True, False),
        (1, (1,), True, "unhealthy", True, False),
        (1, (1,), True, "healthy", False, False),  # stopped is never well
        (1, (SETTLE_SECONDS - 1,), False, "none", True, False),
        (2, (SETTLE_SECONDS,), False, "none", True, True),
        (1, (), False, "none", True, True),
    ],
)
def test_settled(
    rung: int,
    ages: tuple[float, ...],
    has_health: bool,
    health: str,
    running: bool,
    expected: bool,
) -> None:
    got = settled(rung, ago(*ages), has_health=has_health, health=health, running=running, now=NOW)
    assert got is expected


@pytest.mark.parametrize(
    ("ok", "failures", "retries", "starting", "expected"),
    [
        (True, 0, 3, False, ("healthy", 0)),
        (True, 7, 3, False, ("healthy", 0)),
        (True, 0, 3, True, ("healthy", 0)),  # ready inside the start period counts
        (False, 0, 3, False, (None, 1)),
        (False, 1, 3, False, (None, 2)),
        (False, 2, 3, False, ("unhealthy", 3)),
        (False, 0, 1, False, ("unhealthy", 1)),
        (False, 5, 3, True, (None, 6)),  # the start period forgives
    ],
)
def test_health_verdict(
    ok: bool, failures: int, retries: int, starting: bool, expected: tuple[str | None, int]
) -> None:
    assert health_verdict(ok, failures, retries, starting=starting) == expected


@given(results=st.lists(st.booleans(), max_size=30), retries=st.integers(1, 6))
def test_unhealthy_exactly_after_retries_failures_in_a_row(
    results: list[bool], retries: int
) -> None:
    failures, streak, verdict = 0, 0, None
    for ok in results:
        got, failures = health_verdict(ok, failures, retries, starting=False)
        streak = 0 if ok else streak + 1
        verdict = got or verdict
        assert failures == streak
        assert (got == "unhealthy") == (not ok and streak >= retries)
