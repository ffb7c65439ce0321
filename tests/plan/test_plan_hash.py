"""The spec hash: what decides whether a running cell still matches its spec."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.plan import spec_hash
from agentcell.spec import API_VERSION, Agent, load_text


def make_agent(labels: dict[str, str] | None = None, **spec: Any) -> Agent:
    return Agent.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Agent",
            "metadata": {"name": "researcher", "tenant": "acme", "labels": labels or {}},
            "spec": {"image": "agentcell/demo-agent:latest", **spec},
        }
    )


BASE: dict[str, Any] = {
    "command": ["python3", "/app/agent.py"],
    "env": {"LOG_LEVEL": "info", "MODE": "fast"},
    "health": {"http": {"port": 8080, "path": "/healthz"}, "interval": "10s"},
}


def test_the_hash_is_16_hex_digits() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", spec_hash(make_agent()))


def test_the_hash_is_stable_across_key_order() -> None:
    one = load_text(
        "apiVersion: agentcell/v1\nkind: Agent\nmetadata: {name: a, tenant: t}\n"
        "spec:\n  image: busybox\n  env: {A: '1', B: '2'}\n  resources: {cpus: 2, memory: 1Gi}\n"
    )[0]
    two = load_text(
        "spec:\n  resources: {memory: 1Gi, cpus: 2}\n  env: {B: '2', A: '1'}\n  image: busybox\n"
        "metadata: {tenant: t, name: a}\nkind: Agent\napiVersion: agentcell/v1\n"
    )[0]
    assert isinstance(one, Agent)
    assert isinstance(two, Agent)
    assert spec_hash(one) == spec_hash(two)


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ({"user": "4242"}, {"user": "4242:4242"}),
        ({"resources": {"memory": "512Mi"}}, {"resources": {"memory": 512 * 1024**2}}),
        ({"restart": {"window": "10m"}}, {"restart": {"window": 600}}),
        ({}, {"user": "10001:10001", "workspace": {"access": "rw"}}),
    ],
    ids=[
        "a uid alone",
        "a size with or without unit",
        "a duration with or without unit",
        "defaults",
    ],
)
def test_the_same_spec_written_differently_has_the_same_hash(
    one: dict[str, Any], two: dict[str, Any]
) -> None:
    assert spec_hash(make_agent(**one)) == spec_hash(make_agent(**two))


def test_metadata_labels_do_not_change_the_hash() -> None:
    assert spec_hash(make_agent(**BASE)) == spec_hash(make_agent({"team": "ml"}, **BASE))


CHANGES: list[tuple[str, dict[str, Any]]] = [
    ("image", {"image": "agentcell/demo-agent:v2"}),
    ("command", {"command": ["python3", "/app/other.py"]}),
    ("no command", {"command": None}),
    ("an env value", {"env": {"LOG_LEVEL": "debug", "MODE": "fast"}}),
    ("an env variable added", {"env": {**BASE["env"], "EXTRA": "1"}}),
    ("an env variable removed", {"env": {"LOG_LEVEL": "info"}}),
    ("user", {"user": "4242:4242"}),
    ("workspace access", {"workspace": {"access": "ro"}}),
    ("cpus", {"resources": {"cpus": 2}}),
    ("memory", {"resources": {"memory": "1Gi"}}),
    ("pids", {"resources": {"pids": 512}}),
    ("health port", {"health": {**BASE["health"], "http": {"port": 8081, "path": "/healthz"}}}),
    ("health interval", {"health": {**BASE["health"], "interval": "20s"}}),
    ("health retries", {"health": {**BASE["health"], "retries": 5}}),
    ("no health", {"health": None}),
    ("restart limit", {"restart": {"maxRestarts": 1}}),
    ("restart window", {"restart": {"window": "1h"}}),
    ("docker limits", {"docker": {"limits": {"containers": 1}}}),
]


@pytest.mark.parametrize("change", [c[1] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_any_spec_change_changes_the_hash(change: dict[str, Any]) -> None:
    assert spec_hash(make_agent(**{**BASE, **change})) != spec_hash(make_agent(**BASE))


def test_a_new_hardening_profile_changes_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentcell.plan import _hash
    from agentcell.policy import PROFILE_VERSION

    before = spec_hash(make_agent())
    monkeypatch.setattr(_hash, "PROFILE_VERSION", PROFILE_VERSION + "-next")
    assert spec_hash(make_agent()) != before


@given(
    st.integers(min_value=16, max_value=65536),
    st.integers(min_value=16, max_value=65536),
)
def test_the_hash_tells_pids_limits_apart(a: int, b: int) -> None:
    same = spec_hash(make_agent(resources={"pids": a})) == spec_hash(
        make_agent(resources={"pids": b})
    )
    assert same is (a == b)


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ({"restart": {"window": 1234.5678}}, {"restart": {"window": 1234.5679}}),
        (
            {"health": {"exec": {"command": ["c"]}, "startPeriod": "1.4ms"}},
            {"health": {"exec": {"command": ["c"]}, "startPeriod": "1.2ms"}},
        ),
    ],
    ids=["seconds past six digits", "fractions of a millisecond"],
)
def test_a_small_duration_change_changes_the_hash(one: dict[str, Any], two: dict[str, Any]) -> None:
    assert spec_hash(make_agent(**one)) != spec_hash(make_agent(**two))
