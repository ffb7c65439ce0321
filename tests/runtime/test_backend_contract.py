"""The backend contract: the same tests, through the one applier, on the in-memory backend
and on the Docker backend against the real engine (marked integration)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from agentcell.control._applier import DeployOutcome, apply_deploy
from agentcell.errors import DeployStepError
from agentcell.plan import DeployMode, DesiredCell, ObservedCell, allocate_subnet, compile_egress
from agentcell.runtime import Backend, DockerDriver
from agentcell.spec import API_VERSION, Agent
from livecell import DEMO_IMAGE, remove_labelled
from memorybackend import MemoryBackend

POOL = "10.216.0.0/16"  # this module's alone
HEALTH = {"tcp": {"port": 8080}, "interval": "1s", "timeout": "1s", "retries": 1}
EGRESS = {"allow": [{"host": "placeholder.allowed.test"}]}

Ready = Callable[[str], tuple[bool, str]]


def passes(ip: str) -> tuple[bool, str]:
    return True, "answered"


def fails(ip: str) -> tuple[bool, str]:
    return False, "no answer on purpose"


class Cell:
    """One cell of a fresh tenant on one backend, deployed through the applier."""

    def __init__(self, backend: Backend, tenant: str) -> None:
        self.backend = backend
        self.key = (tenant, "web")
        self.subnet = allocate_subnet(POOL, 24, backend.used_subnets())

    def want(self, revision: int = 1, **spec: Any) -> DesiredCell:
        agent = Agent.model_validate(
            {
                "apiVersion": API_VERSION,
                "kind": "Agent",
                "metadata": {"name": self.key[1], "tenant": self.key[0]},
                "spec": {"image": DEMO_IMAGE, "env": {"REVISION": str(revision)}, **spec},
            }
        )
        policy = compile_egress(agent, None)
        return DesiredCell(
            agent,
            spec_hash=f"revision-{revision}",
            generation=revision,
            subnet=self.subnet,
            policy=json.dumps(policy.to_json(), sort_keys=True) if policy.allow else "",
        )

    def apply(
        self, want: DesiredCell, mode: DeployMode = DeployMode.CONVERGE, ready: Ready | None = None
    ) -> DeployOutcome:
        steps: list[str] = []
        return apply_deploy(
            self.backend,
            want,
            mode,
            on_step=steps.append,
            ready=ready,
            allocate=lambda: allocate_subnet(POOL, 24, self.backend.used_subnets()),
            gate_token=secrets.token_hex(16),
        )

    def observed(self) -> ObservedCell:
        return self.backend.observe_cell(self.key)

    def roles(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for c in self.observed().containers:
            out.setdefault(c.role, []).append(c.state)
        return out


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("docker", marks=pytest.mark.integration),
    ]
)
def cell(request: pytest.FixtureRequest) -> Iterator[Cell]:
    tenant = f"contract{secrets.token_hex(3)}"
    if request.param == "memory":
        yield Cell(MemoryBackend(), tenant)
        return
    client = docker.from_env()
    try:
        yield Cell(DockerDriver(client, pool=POOL), tenant)
    finally:
        remove_labelled(client, f"agentcell.tenant={tenant}")
        client.close()


def test_a_fresh_deploy_makes_the_whole_cell(cell: Cell) -> None:
    out = cell.apply(cell.want())
    have = cell.observed()
    assert have.agent is not None and have.agent.id == out.container_id
    assert (have.agent.state, have.agent.spec_hash, have.agent.generation) == (
        "running",
        "revision-1",
        1,
    )
    assert have.network is not None and have.volume is not None
    assert out.replaced is None and out.container_id in out.created


def test_deploying_the_same_spec_again_changes_nothing(cell: Cell) -> None:
    first = cell.apply(cell.want())
    again = cell.apply(cell.want())
    assert again.container_id == first.container_id
    assert again.created == []


def test_a_changed_spec_replaces_the_agent_once_the_new_one_is_ready(cell: Cell) -> None:
    first = cell.apply(cell.want(1, health=HEALTH), ready=passes)
    second = cell.apply(cell.want(2, health=HEALTH), ready=passes)
    assert second.container_id != first.container_id
    assert second.replaced == first.container_id
    assert cell.roles() == {"agent": ["running"]}


def test_a_failed_first_deploy_leaves_nothing_behind(cell: Cell) -> None:
    with pytest.raises(DeployStepError) as failed:
        cell.apply(cell.want(health=HEALTH), ready=fails)
    assert failed.value.step == "wait until ready"
    have = cell.observed()
    assert (have.containers, have.network, have.volume) == ((), None, None)


def test_a_failed_replace_starts_the_previous_agent_again(cell: Cell) -> None:
    first = cell.apply(cell.want(1, health=HEALTH), ready=passes)
    with pytest.raises(DeployStepError) as failed:
        cell.apply(cell.want(2, health=HEALTH), ready=fails)
    assert failed.value.step == "wait until ready"
    have = cell.observed()
    assert [(c.id, c.state) for c in have.containers] == [(first.container_id, "running")]


def test_a_missing_image_fails_before_anything_is_made(cell: Cell) -> None:
    with pytest.raises(DeployStepError) as failed:
        cell.apply(cell.want(image="agentcell/no-such-image:latest"))
    assert failed.value.step == "check image"
    assert cell.observed().network is None


def test_resume_starts_the_paused_agent_it_keeps(cell: Cell) -> None:
    first = cell.apply(cell.want())
    assert cell.backend.pause(cell.key)
    assert cell.roles() == {"agent": ["exited"]}
    resumed = cell.apply(cell.want(), DeployMode.RESUME)
    assert resumed.container_id == first.container_id
    assert cell.roles() == {"agent": ["running"]}


def test_recreate_makes_every_container_new(cell: Cell) -> None:
    first = cell.apply(cell.want(egress=EGRESS))
    old = {c.id for c in cell.observed().containers}
    again = cell.apply(cell.want(egress=EGRESS), DeployMode.RECREATE)
    assert again.container_id != first.container_id
    assert not old & {c.id for c in cell.observed().containers}
    assert sorted(cell.roles()) == ["agent", "egress"]


def test_egress_switched_on_then_off_brings_the_gate_and_takes_it_away(cell: Cell) -> None:
    on = cell.apply(cell.want(1, egress=EGRESS))
    assert cell.roles() == {"agent": ["running"], "egress": ["running"]}
    assert on.policy_digest
    cell.apply(cell.want(2))
    assert cell.roles() == {"agent": ["running"]}


def test_docker_access_brings_the_docker_proxy_and_dropping_it_removes_it(cell: Cell) -> None:
    cell.apply(cell.want(1, docker={"access": "own"}))
    assert cell.roles() == {"agent": ["running"], "dockerproxy": ["running"]}
    cell.apply(cell.want(2))
    assert cell.roles() == {"agent": ["running"]}


def test_remove_leaves_nothing_of_the_cell(cell: Cell) -> None:
    cell.apply(cell.want(egress=EGRESS))
    assert cell.backend.remove(cell.key)
    have = cell.observed()
    assert (have.containers, have.network, have.volume) == ((), None, None)
