"""The deploy plan: one table whose rows mirror the rules in plan/_deploy.py's docstring."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.plan import (
    DeployMode,
    DeployStep,
    DesiredCell,
    ObservedCell,
    ObservedContainer,
    StepKind,
    deploy_steps,
    ready_budget,
    sidecar_current,
)
from agentcell.spec import API_VERSION, Agent

KEY = ("acme", "web")
NET_ID = "net-1"
S = StepKind
POLICY = '{"allow": []}'


def want(policy: str = "", generation: int = 2, **spec: Any) -> DesiredCell:
    agent = Agent.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Agent",
            "metadata": {"name": KEY[1], "tenant": KEY[0]},
            "spec": {"image": "agentcell/demo-agent:latest", **spec},
        }
    )
    return DesiredCell(
        agent, spec_hash="hash-2", generation=generation, subnet="10.9.0.0/24", policy=policy
    )


def box(
    id: str = "a1",
    *,
    role: str = "agent",
    state: str = "running",
    spec_hash: str = "hash-2",
    generation: int = 2,
    networks: tuple[str, ...] = (NET_ID,),
    name: str = "",
) -> ObservedContainer:
    return ObservedContainer(
        id=id,
        name=name or f"old-{id}",
        role=role,
        state=state,
        spec_hash=spec_hash,
        generation=generation,
        network_ids=networks,
    )


def cell(*containers: ObservedContainer, network: bool = True, volume: bool = True) -> ObservedCell:
    return ObservedCell(
        *KEY,
        containers=containers,
        network="agentcell-acme-web" if network else None,
        network_id=NET_ID if network else None,
        volume="agentcell-acme-web-workspace" if volume else None,
    )


EMPTY = cell(network=False, volume=False)
BASE = [S.CHECK_IMAGE, S.CREATE_NETWORK, S.CREATE_WORKSPACE]
NEW_AGENT = [S.CREATE_AGENT, S.VERIFY_HARDENING, S.WRITE_SECRETS, S.START_AGENT, S.WAIT_READY]
REPLACE = [
    S.CREATE_AGENT,
    S.VERIFY_HARDENING,
    S.STOP_PREVIOUS,
    S.WRITE_SECRETS,
    S.START_AGENT,
    S.WAIT_READY,
    S.REMOVE_PREVIOUS,
]
GATE = [S.CREATE_EGRESS_NETWORK, S.START_GATE, S.LOAD_POLICY]

ROWS = [
    pytest.param(want(), EMPTY, DeployMode.CONVERGE, [*BASE, *NEW_AGENT], None, id="fresh deploy"),
    pytest.param(want(), cell(box()), DeployMode.CONVERGE, BASE, "a1", id="unchanged: kept"),
    pytest.param(
        want(),
        cell(box(spec_hash="hash-1")),
        DeployMode.CONVERGE,
        [*BASE, *REPLACE],
        None,
        id="changed spec: a new agent, ready before the old one goes",
    ),
    pytest.param(
        want(),
        cell(box(generation=1)),
        DeployMode.CONVERGE,
        [*BASE, *REPLACE],
        None,
        id="new generation of the same spec: replaced",
    ),
    pytest.param(
        want(),
        cell(box(networks=("net-0",))),
        DeployMode.CONVERGE,
        [*BASE, *REPLACE],
        None,
        id="agent on a network that was made again: replaced",
    ),
    pytest.param(
        want(),
        cell(box(state="exited")),
        DeployMode.CONVERGE,
        [*BASE, *NEW_AGENT, S.REMOVE_PREVIOUS],
        None,
        id="stopped agent in converge: replaced, nothing to stop",
    ),
    pytest.param(
        want(),
        cell(box(state="exited")),
        DeployMode.RESUME,
        [*BASE, S.WRITE_SECRETS, S.START_AGENT, S.WAIT_READY],
        "a1",
        id="resume: the stopped agent is started",
    ),
    pytest.param(
        want(),
        cell(box(), box("g1", role="egress"), box("d1", role="dockerproxy")),
        DeployMode.RECREATE,
        [S.REMOVE_RECREATED, *BASE, *NEW_AGENT],
        None,
        id="recreate: every container new",
    ),
    pytest.param(
        want(),
        cell(box(), box("g1", role="egress")),
        DeployMode.CONVERGE,
        [*BASE, S.REMOVE_GATE],
        "a1",
        id="egress switched off: the gate is dropped, the agent kept",
    ),
    pytest.param(
        want(policy=POLICY),
        cell(box()),
        DeployMode.CONVERGE,
        [*BASE, *GATE],
        "a1",
        id="egress switched on for a running agent of this spec: gate first, agent kept",
    ),
    pytest.param(
        want(policy=POLICY),
        EMPTY,
        DeployMode.CONVERGE,
        [*BASE, *GATE, *NEW_AGENT],
        None,
        id="fresh with egress: the gate is loaded before the agent exists",
    ),
    pytest.param(
        want(docker={"access": "own"}),
        EMPTY,
        DeployMode.CONVERGE,
        [*BASE, S.START_DOCKER_PROXY, *NEW_AGENT],
        None,
        id="docker access: the proxy before the agent",
    ),
    pytest.param(
        want(),
        cell(box(), box("d1", role="dockerproxy")),
        DeployMode.CONVERGE,
        [*BASE, S.REMOVE_DOCKER_PROXY],
        "a1",
        id="docker access dropped: the proxy is removed",
    ),
    pytest.param(
        want(secrets=["token"]),
        EMPTY,
        DeployMode.CONVERGE,
        [*BASE, S.WRITE_SECRETS, *NEW_AGENT],
        None,
        id="secrets: written before the create binds them, and again before the start",
    ),
    pytest.param(
        want(workspace={"access": "none"}),
        cell(volume=False, network=False),
        DeployMode.CONVERGE,
        [S.CHECK_IMAGE, S.CREATE_NETWORK, *NEW_AGENT],
        None,
        id="no workspace: no volume",
    ),
    pytest.param(
        want(),
        cell(box("x1", state="exited", name="agentcell.acme.web.g2", spec_hash="hash-1")),
        DeployMode.CONVERGE,
        [*BASE, S.REMOVE_LEFTOVER, *NEW_AGENT],
        None,
        id="a container of this cell under the new agent's name: removed first",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "mode", "kinds", "kept"), ROWS)
def test_the_plan_of_a_deploy(
    desired: DesiredCell,
    observed: ObservedCell,
    mode: DeployMode,
    kinds: list[StepKind],
    kept: str | None,
) -> None:
    planned = deploy_steps(desired, observed, mode)
    assert [s.kind for s in planned.steps] == kinds
    assert planned.kept == kept


def _step(steps: tuple[DeployStep, ...], kind: StepKind) -> DeployStep:
    (found,) = (s for s in steps if s.kind is kind)
    return found


def test_objects_the_engine_holds_are_used_under_their_names() -> None:
    steps = deploy_steps(want(), cell(box(spec_hash="hash-1")), DeployMode.CONVERGE).steps
    network, volume = _step(steps, S.CREATE_NETWORK), _step(steps, S.CREATE_WORKSPACE)
    assert (network.name, network.create) == ("agentcell-acme-web", False)
    assert (volume.name, volume.create) == ("agentcell-acme-web-workspace", False)
    assert _step(steps, S.CREATE_AGENT).name == "agentcell.acme.web.g2"


def test_missing_objects_are_made_under_this_release_s_names() -> None:
    steps = deploy_steps(want(), EMPTY, DeployMode.CONVERGE).steps
    network, volume = _step(steps, S.CREATE_NETWORK), _step(steps, S.CREATE_WORKSPACE)
    assert (network.name, network.create) == ("agentcell.acme.web.net", True)
    assert (volume.name, volume.create) == ("agentcell.acme.web.workspace", True)


def test_only_running_previous_agents_are_stopped_and_all_of_them_removed() -> None:
    observed = cell(box("a1", spec_hash="h0"), box("a0", state="exited", spec_hash="h0"))
    planned = deploy_steps(want(), observed, DeployMode.CONVERGE)
    assert _step(planned.steps, S.STOP_PREVIOUS).containers == ("a1",)
    assert set(_step(planned.steps, S.REMOVE_PREVIOUS).containers) == {"a1", "a0"}
    assert planned.replaced in ("a1", "a0")


def test_a_health_check_sets_the_ready_budget() -> None:
    health = {"http": {"port": 8080}, "interval": "2s", "retries": 3, "startPeriod": "4s"}
    assert ready_budget(want(health=health)) == 4 + 2 * 3
    assert ready_budget(want()) == 0.5


@given(
    st.lists(
        st.builds(
            box,
            id=st.sampled_from(["a1", "a2", "a3", "g1", "d1"]),
            role=st.sampled_from(["agent", "egress", "dockerproxy"]),
            state=st.sampled_from(["running", "exited", "created"]),
            spec_hash=st.sampled_from(["hash-1", "hash-2"]),
            generation=st.integers(1, 2),
            networks=st.sampled_from([(NET_ID,), ("net-0",), ()]),
        ),
        max_size=5,
        unique_by=lambda c: c.id,
    ),
    st.sampled_from(list(DeployMode)),
    st.booleans(),
    st.booleans(),
)
def test_every_plan_ends_with_one_agent_of_the_spec_running(
    containers: list[ObservedContainer],
    mode: DeployMode,
    egress: bool,
    docker_access: bool,
) -> None:
    desired = want(
        policy=POLICY if egress else "", docker={"access": "own" if docker_access else "none"}
    )
    planned = deploy_steps(desired, cell(*containers), mode)
    kinds = [s.kind for s in planned.steps]
    created = S.CREATE_AGENT in kinds
    assert created is (planned.kept is None)  # exactly one agent is the result
    if created:  # the new agent is ready before anything previous is removed
        if S.REMOVE_PREVIOUS in kinds:
            assert kinds.index(S.WAIT_READY) < kinds.index(S.REMOVE_PREVIOUS)
        assert kinds.index(S.VERIFY_HARDENING) < kinds.index(S.START_AGENT)
    if egress:  # the agent never starts before its gate has its policy
        assert kinds.index(S.LOAD_POLICY) < min(
            (kinds.index(k) for k in (S.START_AGENT, S.CREATE_AGENT) if k in kinds),
            default=len(kinds),
        )
    assert (S.REMOVE_GATE in kinds) is (
        not egress
        and mode is not DeployMode.RECREATE
        and any(c.role == "egress" for c in containers)
    )
    removed = {
        c
        for s in planned.steps
        if s.kind in (S.REMOVE_PREVIOUS, S.REMOVE_LEFTOVER)
        for c in s.containers
    }
    assert planned.kept not in removed


@pytest.mark.parametrize(
    ("label", "state", "attached", "kept"),
    [
        pytest.param("h1", "running", True, True, id="made from the wanted body: kept"),
        pytest.param("h0", "running", True, False, id="made from another body: replaced"),
        pytest.param("h1", "exited", True, True, id="stopped: kept, the step starts it"),
        pytest.param("h1", "paused", True, False, id="frozen out of band: replaced"),
        pytest.param("h1", "running", False, False, id="its network was made again: replaced"),
    ],
)
def test_a_sidecar_is_kept_only_when_current(
    label: str, state: str, attached: bool, kept: bool
) -> None:
    assert (
        sidecar_current(label_hash=label, wanted_hash="h1", state=state, attached=lambda: attached)
        is kept
    )
