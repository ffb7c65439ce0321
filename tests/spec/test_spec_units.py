"""Quantities of the spec: byte sizes and durations, and the JSON schema for editors."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.spec import Agent, format_bytes, json_schema, load_text, parse_bytes, parse_duration

KI, MI, GI, TI = 1024, 1024**2, 1024**3, 1024**4
SIZE_HELP = (
    "is not a size: use a number of bytes or a number with one of the units Ki, Mi, Gi, Ti "
    "(powers of 1024) or k, M, G, T (powers of 1000), e.g. 512Mi"
)
DURATION_HELP = "is not a duration: use a number with one of the units ms, s, m, h, d, e.g. 10s"


# --- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("512Mi", 512 * MI),
        ("1Gi", GI),
        ("1Ti", TI),
        ("1Ki", KI),
        ("2G", 2 * 1000**3),
        ("3M", 3 * 1000**2),
        ("1k", 1000),
        ("4T", 4 * 1000**4),
        ("1048576", MI),
        ("0", 0),
        ("1.5Gi", 3 * GI // 2),
        ("0.5Ki", 512),
        (" 512Mi ", 512 * MI),
        ("512 Mi", 512 * MI),
        (MI, MI),
        (0, 0),
    ],
    ids=repr,
)
def test_a_size_is_read_in_bytes(value: object, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "1K",
        "1KB",
        "1kb",
        "1MiB",
        "Mi",
        "",
        " ",
        "1e3",
        "-1Mi",
        "1 000",
        "1.Mi",
        ".5Mi",
        "ten",
        1.5,
        None,
        [1],
    ],
    ids=repr,
)
def test_a_value_that_is_not_a_size_is_refused_with_help(value: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_bytes(value)
    assert str(caught.value) == f"{value!r} {SIZE_HELP}"


def test_a_negative_number_of_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^must not be negative$"):
        parse_bytes(-1)


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_size(value: bool) -> None:
    with pytest.raises(
        ValueError, match=r"^must be a size such as 512Mi, 1Gi or a number of bytes$"
    ):
        parse_bytes(value)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0"),
        (1, "1"),
        (1023, "1023"),
        (KI, "1Ki"),
        (1536, "1536"),
        (3 * KI, "3Ki"),
        (512 * MI, "512Mi"),
        (1536 * MI, "1536Mi"),
        (GI, "1Gi"),
        (TI, "1Ti"),
        (1024 * TI, "1024Ti"),
        (2 * 1000**3, "1953125Ki"),
        (10**9 + 1, "1000000001"),
    ],
    ids=repr,
)
def test_a_size_is_written_in_its_shortest_exact_binary_spelling(n: int, expected: str) -> None:
    assert format_bytes(n) == expected


@given(st.integers(min_value=0, max_value=2**53))
def test_format_bytes_round_trips(n: int) -> None:
    assert parse_bytes(format_bytes(n)) == n


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from([("", 1), ("k", 1000), ("M", 1000**2), ("Ki", KI), ("Mi", MI), ("Gi", GI)]),
)
def test_a_whole_number_with_a_unit_is_exact(number: int, unit: tuple[str, int]) -> None:
    assert parse_bytes(f"{number}{unit[0]}") == number * unit[1]


@pytest.mark.parametrize("n", [2**53 + 1, (2**53 + 1) * KI], ids=["bytes", "kibibytes"])
def test_format_bytes_round_trips_past_2_to_the_53(n: int) -> None:
    assert parse_bytes(format_bytes(n)) == n


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("0s", 0.0),
        (" 10 s ", 10.0),
        (10, 10.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
    ids=repr,
)
def test_a_duration_is_read_in_seconds(value: object, expected: float) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    ["10", "10sec", "1w", "1D", "10S", "s", "", "-1s", "1e3s", "PT10S", None, [10]],
    ids=repr,
)
def test_a_value_that_is_not_a_duration_is_refused_with_help(value: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == f"{value!r} {DURATION_HELP}"


@pytest.mark.parametrize("value", [-1, -0.5])
def test_a_negative_number_of_seconds_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match=r"^must not be negative$"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_duration(value: bool) -> None:
    with pytest.raises(ValueError, match=r"^must be a duration such as 10s$"):
        parse_duration(value)


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_a_duration_that_is_not_finite_is_refused(value: float) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@given(st.integers(min_value=0, max_value=999), st.sampled_from(["ms", "s", "m", "h"]))
def test_a_whole_number_of_units_reads_as_seconds(number: int, unit: str) -> None:
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    assert parse_duration(f"{number}{unit}") == number * scale


# --- the JSON schema -------------------------------------------------------------------------


def test_the_schema_is_json_and_names_its_draft() -> None:
    schema = json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "agentcell/v1 spec document"


def test_the_schema_offers_exactly_a_tenant_or_an_agent() -> None:
    schema: dict[str, Any] = json_schema()
    refs = sorted(option["$ref"] for option in schema["anyOf"])
    assert refs == ["#/$defs/Agent", "#/$defs/Tenant"]
    for kind in ("Agent", "Tenant"):
        definition = schema["$defs"][kind]
        assert definition["properties"]["kind"]["const"] == kind
        assert definition["properties"]["apiVersion"]["const"] == "agentcell/v1"
        assert definition["additionalProperties"] is False


def test_the_schema_uses_the_yaml_spelling_of_fields() -> None:
    defs: Any = json_schema()["$defs"]
    assert "maxRestarts" in defs["Restart"]["properties"]
    assert "startPeriod" in defs["Health"]["properties"]
    assert "max_restarts" not in defs["Restart"]["properties"]
    assert defs["AgentSpec"]["required"] == ["image"]


def test_the_schema_describes_sizes_and_durations_as_number_or_string() -> None:
    defs: Any = json_schema()["$defs"]
    memory = defs["Resources"]["properties"]["memory"]
    window = defs["Restart"]["properties"]["window"]
    assert {o["type"] for o in memory["anyOf"]} == {"integer", "string"}
    assert {o["type"] for o in window["anyOf"]} == {"number", "string"}


DOCS = [
    {"apiVersion": "agentcell/v1", "kind": "Tenant", "metadata": {"name": "acme"}},
    {
        "apiVersion": "agentcell/v1",
        "kind": "Agent",
        "metadata": {"name": "a", "tenant": "acme"},
        "spec": {"image": "busybox"},
    },
]


@given(
    name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", fullmatch=True),
    memory=st.integers(min_value=16, max_value=4096).map(lambda n: f"{n}Mi"),
    cpus=st.floats(min_value=0.1, max_value=256),
    window=st.integers(min_value=1, max_value=3600).map(lambda n: f"{n}s"),
)
def test_every_document_that_loads_is_valid_under_the_schema(
    name: str, memory: str, cpus: float, window: str
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = {
        "apiVersion": "agentcell/v1",
        "kind": "Agent",
        "metadata": {"name": name, "tenant": "acme"},
        "spec": {
            "image": "busybox",
            "resources": {"memory": memory, "cpus": cpus},
            "restart": {"window": window},
        },
    }
    (agent,) = load_text(json.dumps(doc))
    assert isinstance(agent, Agent)
    jsonschema.validate(doc, json_schema())
    jsonschema.validate(agent.model_dump(mode="json", by_alias=True), json_schema())


@pytest.mark.parametrize("doc", DOCS, ids=["a tenant", "an agent"])
def test_the_minimal_documents_are_valid_under_the_schema(doc: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, json_schema())
