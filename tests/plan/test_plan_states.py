"""Cell states: the transition table (every pair, against the rules in plan/_states.py),
and the readiness verdict the CLI waits on."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.plan import (
    TRANSITIONS,
    UP,
    CellState,
    InvalidTransition,
    Readiness,
    check_transition,
    readiness,
)

S = CellState


def allowed_by_the_rules(old: CellState, new: CellState) -> bool:
    """The module docstring's rules, written out again independently of the table."""
    if old == new:
        return True
    if old is S.REMOVING:
        return new is S.PENDING
    if new in (S.PENDING, S.PAUSED, S.FAILED, S.REMOVING):
        return True
    if new in (S.HEALTHY, S.UNHEALTHY):
        return old in UP
    if new is S.RUNNING:
        return True
    if new is S.RECOVERING:
        return old is not S.PAUSED
    return False


@pytest.mark.parametrize(("old", "new"), list(itertools.product(CellState, CellState)), ids=str)
def test_every_transition_is_in_the_table_exactly_when_the_rules_allow_it(
    old: CellState, new: CellState
) -> None:
    if allowed_by_the_rules(old, new):
        assert check_transition(old, new) is new
    else:
        with pytest.raises(InvalidTransition, match=f"from {old} to {new}"):
            check_transition(old, new)


def test_the_table_names_every_state() -> None:
    assert set(TRANSITIONS) == set(CellState)


def test_a_state_that_is_not_one_is_a_bug() -> None:
    with pytest.raises(InvalidTransition, match="not a cell state"):
        check_transition("running", "sleeping")


def test_states_keep_the_strings_the_api_shows() -> None:
    assert [str(s) for s in CellState] == [
        "pending",
        "running",
        "healthy",
        "unhealthy",
        "recovering",
        "failed",
        "paused",
        "removing",
    ]


def verdict(**over: object) -> Readiness:
    fields: dict[str, object] = {
        "generation": 2,
        "policy_digest": "d2",
        "state": "running",
        "health": "none",
        "reason": "deployed",
        "observed_generation": 2,
        "failed_generation": 0,
        "loaded_digest": "d2",
    }
    fields.update(over)
    return readiness(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        pytest.param({}, Readiness(True, True, "ready"), id="running at the generation: ready"),
        pytest.param(
            {"state": "healthy", "health": "healthy"},
            Readiness(True, True, "ready"),
            id="healthy: ready",
        ),
        pytest.param(
            {"health": "starting"},
            Readiness(False, False, "running: deployed"),
            id="health check not answered yet: waiting",
        ),
        pytest.param(
            {"state": "unhealthy", "health": "unhealthy", "reason": "503"},
            Readiness(False, True, "running but unhealthy: 503"),
            id="unhealthy: settled, not ready",
        ),
        pytest.param(
            {"observed_generation": 1},
            Readiness(False, False, "running: deployed"),
            id="the previous generation still runs: waiting",
        ),
        pytest.param(
            {"loaded_digest": "d1"},
            Readiness(False, False, "running: deployed"),
            id="the gate has the previous policy: waiting",
        ),
        pytest.param(
            {"failed_generation": 2, "state": "failed", "reason": "step 'check image' failed"},
            Readiness(False, True, "deploy failed: step 'check image' failed"),
            id="this generation failed",
        ),
        pytest.param(
            {"state": "failed", "observed_generation": 1, "reason": "old"},
            Readiness(False, False, "failed: old"),
            id="the previous generation had failed: waiting for this one",
        ),
        pytest.param(
            {"state": "paused", "reason": "kill switch"},
            Readiness(True, True, "paused: kill switch"),
            id="paused: settled",
        ),
        pytest.param(
            {"state": "pending", "reason": "starting"},
            Readiness(False, False, "pending: starting"),
            id="pending: waiting",
        ),
    ],
)
def test_the_readiness_verdict(over: dict[str, object], expected: Readiness) -> None:
    assert verdict(**over) == expected


@given(
    st.sampled_from(list(CellState)),
    st.sampled_from(["none", "starting", "healthy", "unhealthy"]),
    st.integers(0, 3),
    st.integers(0, 3),
)
def test_ready_is_always_settled_and_means_up_or_paused(
    state: CellState, health: str, observed: int, failed: int
) -> None:
    v = verdict(state=state, health=health, observed_generation=observed, failed_generation=failed)
    if v.ready:
        assert v.settled
        assert state is S.PAUSED or (state in UP and observed >= 2 and failed < 2)
