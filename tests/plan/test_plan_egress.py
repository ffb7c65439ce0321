"""compile_egress: an agent's egress block merged with its tenant's defaults, one row per rule."""

from __future__ import annotations

from typing import Any

import pytest

from agentcell.plan import compile_egress
from agentcell.policy import EgressPolicy, PolicyError
from agentcell.spec import API_VERSION, Agent, Tenant


def agent(**egress: Any) -> Agent:
    return Agent.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Agent",
            "metadata": {"name": "researcher", "tenant": "acme"},
            "spec": {"image": "busybox", "egress": egress},
        }
    )


def tenant(**egress: Any) -> Tenant:
    return Tenant.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Tenant",
            "metadata": {"name": "acme"},
            "spec": {"egress": egress},
        }
    )


def rules(*items: tuple[str, str, list[int]]) -> list[dict[str, Any]]:
    """Wire-form rules; ALL (no ports) is how a deny rule for every port is written."""
    return [
        {kind: value, "ports": ports} if ports else {kind: value} for kind, value, ports in items
    ]


WEB = [80, 443]
ALL: list[int] = []
MERGES: list[tuple[str, Agent, Tenant | None, dict[str, Any]]] = [
    (
        "no tenant: the agent's policy alone, normalised, ports defaulted",
        agent(allow=[{"host": "API.Example.com."}], resolve={"Api.Example.com": ["203.0.113.7"]}),
        None,
        {
            "allow": rules(("host", "api.example.com", WEB)),
            "deny": [],
            "resolve": {"api.example.com": ["203.0.113.7"]},
        },
    ),
    (
        "a tenant without egress adds nothing",
        agent(allow=[{"host": "a.test", "ports": [443]}]),
        tenant(),
        {"allow": rules(("host", "a.test", [443])), "deny": [], "resolve": {}},
    ),
    (
        "an agent without egress takes the tenant's defaults",
        agent(),
        tenant(allow=[{"cidr": "10.9.0.0/16", "ports": [8080]}], deny=[{"host": "evil.test"}]),
        {
            "allow": rules(("cidr", "10.9.0.0/16", [8080])),
            "deny": rules(("host", "evil.test", ALL)),
            "resolve": {},
        },
    ),
    ("neither has egress: the empty policy", agent(), tenant(), EgressPolicy().to_json()),
    (
        "allow: the agent's rules first, then the tenant's, duplicates kept",
        agent(allow=[{"host": "a.test"}, {"host": "*.b.test", "ports": [443]}]),
        tenant(allow=[{"host": "c.test"}, {"host": "a.test"}]),
        {
            "allow": rules(
                ("host", "a.test", WEB),
                ("host", "*.b.test", [443]),
                ("host", "c.test", WEB),
                ("host", "a.test", WEB),
            ),
            "deny": [],
            "resolve": {},
        },
    ),
    (
        "deny: the union, the agent's first, a rule both give once",
        agent(deny=[{"host": "x.test"}, {"cidr": "10.0.0.0/8", "ports": [22]}]),
        tenant(deny=[{"host": "X.TEST."}, {"host": "y.test"}, {"cidr": "10.0.0.0/8"}]),
        {
            "allow": [],
            "deny": rules(
                ("host", "x.test", ALL),
                ("cidr", "10.0.0.0/8", [22]),
                ("host", "y.test", ALL),
                ("cidr", "10.0.0.0/8", ALL),
            ),
            "resolve": {},
        },
    ),
    (
        "resolve: the tenant's names, the agent's answer winning name by name",
        agent(resolve={"API.test.": ["10.9.0.2"], "mine.test": ["10.9.0.3"]}),
        tenant(resolve={"api.test": ["10.9.0.1"], "shared.test": ["10.9.0.4", "fd00::4"]}),
        {
            "allow": [],
            "deny": [],
            "resolve": {
                "api.test": ["10.9.0.2"],
                "mine.test": ["10.9.0.3"],
                "shared.test": ["10.9.0.4", "fd00::4"],
            },
        },
    ),
]


@pytest.mark.parametrize(
    ("spec", "defaults", "expected"), [r[1:] for r in MERGES], ids=[r[0] for r in MERGES]
)
def test_compile_egress_merges(
    spec: Agent, defaults: Tenant | None, expected: dict[str, Any]
) -> None:
    policy = compile_egress(spec, defaults)
    assert policy.to_json() == expected


def test_merged_rules_are_named_by_their_place_in_the_merged_policy() -> None:
    policy = compile_egress(
        agent(allow=[{"host": "a.test"}]), tenant(allow=[{"cidr": "10.0.0.0/8", "ports": [22]}])
    )
    assert [r.name for r in policy.allow] == [
        "allow[0] host a.test ports 80,443",
        "allow[1] cidr 10.0.0.0/8 ports 22",
    ]


# Each passes the spec's own checks and fails the policy loader's stricter ones.
ERRORS: list[tuple[str, Agent, Tenant | None, str]] = [
    (
        "an address in legacy spelling as an agent's host",
        agent(allow=[{"host": "a.test"}, {"host": "127.1"}]),
        None,
        "agent acme/researcher: spec.egress.allow[1].host: '127.1' is an address; use cidr",
    ),
    (
        "the metadata address in hex as a tenant's host",
        agent(),
        tenant(deny=[{"host": "0xa9fea9fe"}]),
        "tenant acme: spec.egress.deny[0].host: '0xa9fea9fe' is an address; use cidr",
    ),
    (
        "an empty label in an agent's host",
        agent(allow=[{"host": "a..test"}]),
        tenant(),
        "agent acme/researcher: spec.egress.allow[0].host: host has an empty label",
    ),
    (
        "a resolve name that is no host name",
        agent(),
        tenant(resolve={"a b.test": ["10.0.0.1"]}),
        "tenant acme: spec.egress.resolve['a b.test']: host has an invalid character",
    ),
]


@pytest.mark.parametrize(
    ("spec", "defaults", "message"), [r[1:] for r in ERRORS], ids=[r[0] for r in ERRORS]
)
def test_compile_egress_errors_name_the_document(
    spec: Agent, defaults: Tenant | None, message: str
) -> None:
    with pytest.raises(PolicyError) as e:
        compile_egress(spec, defaults)
    assert str(e.value) == message
