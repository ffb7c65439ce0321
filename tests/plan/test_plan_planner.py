"""The planner: one table whose rows mirror the precedence list in _planner.py's docstring.

1. desired and marked deleted, engine objects present -> REMOVE
2. desired, this generation already failed            -> nothing (waits for a new spec)
3. desired and paused                                 -> PAUSE while anything runs
4. desired, engine holds nothing or misses a piece     -> DEPLOY ("cell missing" / "... missing")
5. desired, agent container's spec hash differs        -> DEPLOY ("spec changed")
   desired, restart requested after the honoured one   -> RESTART_REQUESTED
6. desired and in trouble (stopped, breach, unhealthy) -> the recovery ladder
7. desired, the gate's loaded policy is not the desired -> RELOAD (tests/plan/test_plan_egress.py)
8. observed but unknown to the store                    -> REPORT_ORPHAN (never removed here)

The ladder's own table is tests/plan/test_plan_recovery.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.plan import (
    Action,
    ActionKind,
    Attempt,
    CellKey,
    DesiredCell,
    ObservedCell,
    ObservedContainer,
    Progress,
    plan,
)
from agentcell.spec import API_VERSION, Agent

KEY: CellKey = ("acme", "researcher")
NOW = 10_000.0
WINDOW = 600.0  # the default restart window
LIMIT = 5  # the default max restarts


def make_agent(tenant: str = "acme", name: str = "researcher", **spec: Any) -> Agent:
    return Agent.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Agent",
            "metadata": {"name": name, "tenant": tenant},
            "spec": {"image": "agentcell/demo-agent:latest", **spec},
        }
    )


def want(
    *,
    deleted: bool = False,
    generation: int = 2,
    key: CellKey = KEY,
    paused: bool = False,
    restart_request: int = 0,
    **spec: Any,
) -> DesiredCell:
    return DesiredCell(
        make_agent(key[0], key[1], **spec),
        spec_hash="hash-2",
        generation=generation,
        subnet="10.213.0.0/24",
        deleted=deleted,
        paused=paused,
        restart_request=restart_request,
    )


def box(
    state: str = "running",
    *,
    spec_hash: str = "hash-2",
    role: str = "agent",
    exit_code: int = 0,
    oom_killed: bool = False,
    id: str = "c1",
) -> ObservedContainer:
    return ObservedContainer(
        id=id,
        name=f"ac-{id}",
        role=role,
        state=state,
        spec_hash=spec_hash,
        generation=2,
        exit_code=exit_code,
        oom_killed=oom_killed,
    )


def have(
    *containers: ObservedContainer,
    network: str | None = "ac-net",
    volume: str | None = "ac-ws",
    key: CellKey = KEY,
) -> ObservedCell:
    return ObservedCell(
        key[0],
        key[1],
        containers=containers if containers else (box(),),
        network=network,
        network_subnet="10.213.0.0/24" if network else None,
        volume=volume,
    )


def restarts(*ages: float, rung: int = 0, **more: Any) -> Progress:
    """Recoveries that happened ``ages`` seconds before NOW, oldest first."""
    attempts = tuple(Attempt(NOW - a, "restart") for a in sorted(ages, reverse=True))
    return Progress(attempts=attempts, rung=rung, **more)


def deploy(reason: str) -> Action:
    return Action(ActionKind.DEPLOY, KEY, reason, new_spec=reason == "spec changed")


def requested(n: int) -> Action:
    return Action(ActionKind.RESTART_REQUESTED, KEY, "restart requested", {"request": str(n)})


def start(reason: str) -> Action:
    return Action(ActionKind.RESTART, KEY, reason)


HEALTH = {"http": {"port": 8080}}


STOPPED = box("exited", exit_code=1)
ROWS: list[tuple[str, DesiredCell | None, ObservedCell | None, Progress, Action | None]] = [
    # 1. removal
    (
        "1. deleted and engine objects present: REMOVE",
        want(deleted=True),
        have(),
        Progress(),
        Action(ActionKind.REMOVE, KEY, "cell removed from the desired state"),
    ),
    (
        "1. deleted and only a stopped container left: REMOVE",
        want(deleted=True),
        have(STOPPED, network=None, volume=None),
        Progress(),
        Action(ActionKind.REMOVE, KEY, "cell removed from the desired state"),
    ),
    (
        "1. deleted wins over a failed generation",
        want(deleted=True),
        have(),
        Progress(failed_generation=2),
        Action(ActionKind.REMOVE, KEY, "cell removed from the desired state"),
    ),
    ("1. deleted and nothing observed: nothing to do", want(deleted=True), None, Progress(), None),
    # 2. a failed generation waits for a new spec
    (
        "2. this generation failed: nothing, though nothing is observed",
        want(),
        None,
        Progress(failed_generation=2),
        None,
    ),
    (
        "2. this generation failed: nothing, though the agent stopped",
        want(),
        have(STOPPED),
        Progress(failed_generation=2),
        None,
    ),
    (
        "2. an older generation failed: this one is planned as usual",
        want(),
        None,
        Progress(failed_generation=1),
        deploy("cell missing"),
    ),
    # 4. missing pieces
    ("4. nothing observed: DEPLOY, cell missing", want(), None, Progress(), deploy("cell missing")),
    (
        "4. network missing: DEPLOY, network missing",
        want(),
        have(network=None),
        Progress(),
        deploy("network missing"),
    ),
    (
        "4. network missing is named before the other missing pieces",
        want(),
        have(box(role="egress"), network=None, volume=None),
        Progress(),
        deploy("network missing"),
    ),
    (
        "4. workspace volume missing: DEPLOY, workspace volume missing",
        want(),
        have(volume=None),
        Progress(),
        deploy("workspace volume missing"),
    ),
    (
        "4. a read-only workspace needs its volume too",
        want(workspace={"access": "ro"}),
        have(volume=None),
        Progress(),
        deploy("workspace volume missing"),
    ),
    (
        "4. no volume is needed when workspace access is none",
        want(workspace={"access": "none"}),
        have(volume=None),
        Progress(),
        None,
    ),
    (
        "4. agent container missing: DEPLOY, agent container missing",
        want(),
        have(box(role="egress")),
        Progress(),
        deploy("agent container missing"),
    ),
    (
        "4. a missing piece wins over a spec change",
        want(),
        have(box(spec_hash="hash-1"), volume=None),
        Progress(),
        deploy("workspace volume missing"),
    ),
    (
        "4. a docker proxy that runs but does not answer: REPLACE_SIDECAR",
        want(docker={"access": "own"}),
        have(box(), box(role="dockerproxy", id="p")),
        Progress(stuck=("dockerproxy",)),
        Action(
            ActionKind.REPLACE_SIDECAR, KEY, "docker proxy not answering", {"role": "dockerproxy"}
        ),
    ),
    (
        "4. a stuck sidecar that is gone already: nothing to replace",
        want(),
        have(),
        Progress(stuck=("dockerproxy",)),
        None,
    ),
    (
        "4. a missing piece is named before a stuck sidecar",
        want(),
        have(box(role="egress", id="g"), volume=None),
        Progress(stuck=("egress",)),
        deploy("workspace volume missing"),
    ),
    # 5. spec changed
    (
        "5. spec hash changed: DEPLOY, spec changed",
        want(),
        have(box(spec_hash="hash-1")),
        Progress(),
        deploy("spec changed"),
    ),
    (
        "5. spec changed wins over a stopped agent",
        want(),
        have(box("exited", spec_hash="hash-1", exit_code=1)),
        Progress(),
        deploy("spec changed"),
    ),
    (
        "5. spec changed wins over a crash loop",
        want(),
        have(box("exited", spec_hash="hash-1")),
        restarts(1, 2, 3, 4, 5),
        deploy("spec changed"),
    ),
    # 5b. restart requests (rotated secrets reach the agent)
    (
        "5b. a restart request newer than the honoured one: RESTART_REQUESTED",
        want(restart_request=3),
        have(),
        Progress(restart_honoured=2),
        requested(3),
    ),
    (
        "5b. a request already honoured: nothing to do",
        want(restart_request=3),
        have(),
        Progress(restart_honoured=3),
        None,
    ),
    (
        "5b. no request ever made: nothing to do",
        want(),
        have(),
        Progress(),
        None,
    ),
    (
        "5b. a request starts a stopped agent without climbing the ladder",
        want(restart_request=1),
        have(STOPPED),
        restarts(1, 2, 3, 4, 5),
        requested(1),
    ),
    (
        "5b. a request comes before a breach or a failing health check",
        want(restart_request=1, health=HEALTH),
        have(),
        Progress(breach="host reachable from the cell", health="unhealthy"),
        requested(1),
    ),
    (
        "5b. a spec change wins over a request (the new container gets fresh files)",
        want(restart_request=1),
        have(box(spec_hash="hash-1")),
        Progress(),
        deploy("spec changed"),
    ),
    (
        "5b. a missing piece wins over a request",
        want(restart_request=1),
        have(network=None),
        Progress(),
        deploy("network missing"),
    ),
    (
        "5b. a paused cell is not restarted by a request",
        want(restart_request=1, paused=True),
        have(box("exited")),
        Progress(paused=True),
        None,
    ),
    (
        "5b. a failed generation waits for a new spec, request or not",
        want(restart_request=1),
        have(STOPPED),
        Progress(failed_generation=2),
        None,
    ),
    # 6. the crash-loop limit
    (
        "6. restarts inside the window reached the limit: GIVE_UP",
        want(),
        have(STOPPED),
        restarts(10, 20, 30, 40, 50),
        Action(ActionKind.GIVE_UP, KEY, "crash loop: 5 recoveries within 600s (agent exited (1))"),
    ),
    (
        "6. more restarts than the limit: GIVE_UP counting them all",
        want(),
        have(STOPPED),
        restarts(1, 2, 3, 4, 5, 6, 7),
        Action(ActionKind.GIVE_UP, KEY, "crash loop: 7 recoveries within 600s (agent exited (1))"),
    ),
    (
        "6. the limit and window come from the spec",
        want(restart={"maxRestarts": 2, "window": "1m"}),
        have(STOPPED),
        restarts(10, 59),
        Action(ActionKind.GIVE_UP, KEY, "crash loop: 2 recoveries within 60s (agent exited (1))"),
    ),
    (
        "6. maxRestarts 0 gives up at the first stop",
        want(restart={"maxRestarts": 0}),
        have(STOPPED),
        Progress(),
        Action(ActionKind.GIVE_UP, KEY, "crash loop: 0 recoveries within 600s (agent exited (1))"),
    ),
    (
        "6. restarts outside the window do not count: START",
        want(),
        have(STOPPED),
        restarts(10, 20, 30, 40, WINDOW + 1, WINDOW + 100, 5 * WINDOW),
        start("agent exited (1)"),
    ),
    (
        "6. a restart exactly one window ago is outside it",
        want(),
        have(STOPPED),
        restarts(10, 20, 30, 40, WINDOW),
        start("agent exited (1)"),
    ),
    (
        "6. one restart under the limit: START",
        want(),
        have(STOPPED),
        restarts(10, 20, 30, 40),
        start("agent exited (1)"),
    ),
    # 6. the first rung
    (
        "6. agent stopped: START with its exit code",
        want(),
        have(STOPPED),
        Progress(),
        start("agent exited (1)"),
    ),
    (
        "6. agent OOM-killed: START saying so",
        want(),
        have(box("exited", exit_code=137, oom_killed=True)),
        Progress(),
        start("agent was OOM-killed"),
    ),
    (
        "6. agent created but never started: START",
        want(),
        have(box("created")),
        Progress(),
        start("agent exited (0)"),
    ),
    (
        "6. a running agent container is preferred over a stopped one",
        want(),
        have(box("exited", id="old", exit_code=1), box("running", id="new")),
        Progress(),
        None,
    ),
    # 6. the ladder's rungs, and what puts a running cell on it
    (
        "6. one recovery since the cell was last well: RECREATE",
        want(),
        have(STOPPED),
        restarts(30, rung=1),
        Action(ActionKind.RECREATE, KEY, "agent exited (1)"),
    ),
    (
        "6. restarted and recreated, still stopped: GIVE_UP",
        want(),
        have(STOPPED),
        restarts(30, 20, rung=2),
        Action(
            ActionKind.GIVE_UP,
            KEY,
            "recovery exhausted: restarted and recreated, still agent exited (1)",
        ),
    ),
    (
        "6. the previous recovery was just now: WAIT out the backoff",
        want(),
        have(STOPPED),
        restarts(0.25, rung=1),
        Action(
            ActionKind.WAIT,
            KEY,
            "agent exited (1): recreate in 0.8s (backoff)",
            {"at": f"{NOW + 0.75:.3f}"},
        ),
    ),
    (
        "6. running, health check failing: RESTART saying why",
        want(health=HEALTH),
        have(),
        Progress(health="unhealthy", health_reason="http: connection refused"),
        start("agent unhealthy (http: connection refused)"),
    ),
    (
        "6. an unhealthy verdict without a health check in the spec is ignored",
        want(),
        have(),
        Progress(health="unhealthy"),
        None,
    ),
    (
        "6. a health check still starting is not trouble",
        want(health=HEALTH),
        have(),
        Progress(health="starting"),
        None,
    ),
    (
        "6. an isolation breach goes straight to RECREATE",
        want(),
        have(),
        Progress(breach="host reachable from the cell"),
        Action(ActionKind.RECREATE, KEY, "isolation breach: host reachable from the cell"),
    ),
    (
        "6. a stopped agent is named before a breach",
        want(),
        have(STOPPED),
        Progress(breach="host reachable from the cell"),
        start("agent exited (1)"),
    ),
    (
        "6. a breach is named before a failing health check",
        want(health=HEALTH),
        have(),
        Progress(breach="gate allowed a denied destination", health="unhealthy"),
        Action(ActionKind.RECREATE, KEY, "isolation breach: gate allowed a denied destination"),
    ),
    # 3. paused
    (
        "3. paused with the agent running: PAUSE",
        want(paused=True),
        have(),
        Progress(),
        Action(ActionKind.PAUSE, KEY, "cell paused"),
    ),
    (
        "3. paused with only a sidecar still running: PAUSE",
        want(paused=True),
        have(STOPPED, box(role="egress", id="g")),
        Progress(),
        Action(ActionKind.PAUSE, KEY, "cell paused"),
    ),
    (
        "3. paused and everything stopped: nothing, not even a restart",
        want(paused=True),
        have(STOPPED, box("exited", role="egress", id="g")),
        Progress(),
        None,
    ),
    (
        "3. paused and nothing observed: nothing is deployed",
        want(paused=True),
        None,
        Progress(),
        None,
    ),
    (
        "3. resumed (status still paused): RESUME",
        want(),
        have(STOPPED, box("exited", role="egress", id="g")),
        Progress(paused=True),
        Action(ActionKind.RESUME, KEY, "cell resumed"),
    ),
    (
        "3. resumed with pieces gone: RESUME all the same (it deploys what is missing)",
        want(),
        None,
        Progress(paused=True),
        Action(ActionKind.RESUME, KEY, "cell resumed"),
    ),
    (
        "3. deleted wins over paused",
        want(paused=True, deleted=True),
        have(),
        Progress(),
        Action(ActionKind.REMOVE, KEY, "cell removed from the desired state"),
    ),
    # 8. orphans
    (
        "8. observed but unknown to the store: REPORT_ORPHAN",
        None,
        have(),
        Progress(),
        Action(ActionKind.REPORT_ORPHAN, KEY, "engine objects unknown to the store"),
    ),
    (
        "8. a lone network unknown to the store is an orphan too",
        None,
        have(box(role="egress"), volume=None),
        Progress(),
        Action(ActionKind.REPORT_ORPHAN, KEY, "engine objects unknown to the store"),
    ),
    # converged
    ("running and matching: nothing", want(), have(), Progress(), None),
    (
        "running and matching, with past restarts: nothing",
        want(),
        have(),
        restarts(1, 2, 3, 4, 5, 6),
        None,
    ),
]


@pytest.mark.parametrize(
    ("desired", "observed", "progress", "expected"),
    [r[1:] for r in ROWS],
    ids=[r[0] for r in ROWS],
)
def test_precedence(
    desired: DesiredCell | None,
    observed: ObservedCell | None,
    progress: Progress,
    expected: Action | None,
) -> None:
    actions = plan(
        {KEY: desired} if desired else {},
        {KEY: observed} if observed else {},
        {KEY: progress},
        now=NOW,
    )
    assert actions == ([expected] if expected else [])


def test_no_progress_means_no_restarts_and_no_failure() -> None:
    assert plan({KEY: want()}, {KEY: have(STOPPED)}, {}, now=NOW) == [start("agent exited (1)")]


def test_nothing_desired_and_nothing_observed_plans_nothing() -> None:
    assert plan({}, {}, {}, now=NOW) == []


def test_the_planner_does_not_touch_its_inputs() -> None:
    desired, observed, progress = {KEY: want()}, {KEY: have(STOPPED)}, {KEY: restarts(1)}
    before = (dict(desired), dict(observed), dict(progress))
    plan(desired, observed, progress, now=NOW)
    assert (desired, observed, progress) == before


# --- ordering ----------------------------------------------------------------------------------

CELLS: list[tuple[CellKey, DesiredCell | None, ObservedCell | None]] = [
    (("globex", "a"), want(key=("globex", "a")), None),
    (("acme", "zeta"), None, have(key=("acme", "zeta"))),
    (("acme", "beta"), want(key=("acme", "beta")), have(STOPPED, key=("acme", "beta"))),
    (("acme", "alpha"), want(key=("acme", "alpha"), deleted=True), have(key=("acme", "alpha"))),
    (("acme", "calm"), want(key=("acme", "calm")), have(key=("acme", "calm"))),
    (("beta", "acme"), want(key=("beta", "acme")), have(network=None, key=("beta", "acme"))),
]


def plan_in_order(order: list[int]) -> list[Action]:
    desired = {CELLS[i][0]: CELLS[i][1] for i in order if CELLS[i][1] is not None}
    observed = {CELLS[i][0]: CELLS[i][2] for i in order if CELLS[i][2] is not None}
    return plan(desired, observed, {}, now=NOW)  # type: ignore[arg-type]


def test_actions_come_sorted_by_tenant_then_cell() -> None:
    assert [(a.key, a.kind) for a in plan_in_order(list(range(len(CELLS))))] == [
        (("acme", "alpha"), ActionKind.REMOVE),
        (("acme", "beta"), ActionKind.RESTART),
        (("acme", "zeta"), ActionKind.REPORT_ORPHAN),
        (("beta", "acme"), ActionKind.DEPLOY),
        (("globex", "a"), ActionKind.DEPLOY),
    ]


@given(st.permutations(list(range(len(CELLS)))))
def test_the_order_of_the_inputs_does_not_matter(order: list[int]) -> None:
    assert plan_in_order(order) == plan_in_order(list(range(len(CELLS))))


@given(
    ages=st.lists(st.integers(min_value=0, max_value=5 * int(WINDOW)), max_size=12),
    limit=st.integers(min_value=0, max_value=8),
)
def test_give_up_exactly_when_recoveries_inside_the_window_reach_the_limit(
    ages: list[int], limit: int
) -> None:
    (action,) = plan(
        {KEY: want(restart={"maxRestarts": limit})},
        {KEY: have(STOPPED)},
        {KEY: restarts(*ages)},
        now=NOW,
    )
    inside = sum(1 for a in ages if a < WINDOW)
    if inside >= limit:
        assert action.kind is ActionKind.GIVE_UP
    else:
        assert action.kind in (ActionKind.RESTART, ActionKind.WAIT)


@given(
    request=st.integers(min_value=0, max_value=5),
    honoured=st.integers(min_value=0, max_value=5),
    state=st.sampled_from(["running", "exited"]),
)
def test_property_a_restart_is_planned_exactly_while_a_request_is_newer(
    request: int, honoured: int, state: str
) -> None:
    actions = plan(
        {KEY: want(restart_request=request)},
        {KEY: have(box(state))},
        {KEY: Progress(restart_honoured=honoured)},
        now=NOW,
    )
    kinds = [a.kind for a in actions]
    if request > honoured:
        assert actions == [requested(request)]
    else:
        assert ActionKind.RESTART_REQUESTED not in kinds
