"""A gate's decision lines become audit records; the canary's own probe is filed apart."""

from __future__ import annotations

import json

import pytest

from agentcell.control._reconciler import _egress_record
from agentcell.policy import CANARY_HOST


def line(**fields: object) -> str:
    base = {
        "time": "2026-11-27T10:00:00.250Z",
        "decision": "deny",
        "reason": "no rule allows this host",
        "host": "example.test",
        "port": 443,
        "method": "CONNECT",
    }
    return json.dumps({**base, **fields})


def test_a_decision_line_is_an_egress_record() -> None:
    record = _egress_record(line(decision="allow", reason="allowed by rule", host="a.test"))
    assert record is not None
    assert (record.kind, record.decision, record.reason) == ("egress", "allow", "allowed by rule")
    assert record.details == {"host": "a.test", "port": 443, "method": "CONNECT"}
    assert record.time == pytest.approx(1795773600.25)


def test_the_canarys_probe_is_an_isolation_record() -> None:
    record = _egress_record(line(host=CANARY_HOST))
    assert record is not None and (record.kind, record.decision) == ("isolation", "deny")


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", json.dumps({"decision": "deny"}), line(time="yesterday")],
)
def test_anything_else_is_skipped(text: str) -> None:
    assert _egress_record(text) is None
