"""Fuzzing the REST API from its own OpenAPI document (schemathesis, in-process ASGI).

Every operation of ``/v1/openapi.json`` is called with generated input (valid and
invalid) on a real control plane: the real store, the real app, the real auth. Checks:
no 5xx, and every answer matches the documented response schema where one is documented.

Two drivers under the plane: an in-memory fake (unit: no engine, runs everywhere) and
the real engine (``integration``). The reconciler never starts in either, so the stored
cells are never deployed: on the engine a stored cell simply has no containers, which is
the everyday state of a pending cell. So a 502 is a failure too: such a cell must be
answered with a 404 ("has no agent container"), not an engine error. ``POST /v1/gc`` is
left out on the engine: with ``all_tenants`` it would remove other people's objects from
the shared engine; the fake covers it.

Long polls and streams are cut short (``wait`` timeout, ``follow``), since a test client
in the same process would wait for them; the live tests cover them.

The tenant run: the same fuzzing as a tenant "t1" caller, while tenant "t2" holds
objects whose names are markers; no answer to t1 may carry a t2 marker it did not send.

"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from agentcell.api import create_app
from agentcell.control import ControlPlane
from apifake import KNOWN, MARKERS, FakeDriver, control_plane


def tenant_token(plane: ControlPlane, tenant: str) -> str:
    """A new token that acts as ``tenant`` only."""
    return plane.tokens.issue(tenant, "fuzz").token


@pytest.fixture(
    scope="module", params=["fake", pytest.param("engine", marks=pytest.mark.integration)]
)
def plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    driver: Any = FakeDriver()
    if request.param == "engine":
        from agentcell.runtime import DockerDriver

        driver = DockerDriver()
    with control_plane(tmp_path_factory.mktemp("fuzz"), driver) as p:
        p.fuzz_driver = request.param  # type: ignore[attr-defined]
        yield p


@pytest.fixture(scope="module")
def api_schema(plane: ControlPlane) -> Any:
    return schemathesis.openapi.from_asgi("/v1/openapi.json", create_app(plane))


OPERATIONS = [
    (method.upper(), path)
    for path, methods in create_app(cast(Any, None)).openapi()["paths"].items()
    for method in methods
]
"""Every operation the app documents (the document needs no control plane)."""

FUZZ = settings(
    max_examples=30,
    derandomize=True,  # the same examples every run: CI is repeatable
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def fuzz(
    plane: ControlPlane, api_schema: Any, method: str, path: str, check: Callable[[Any], None]
) -> None:
    """Run ``check`` on generated cases of one operation, valid and invalid input alike."""
    if plane.fuzz_driver == "engine" and (method, path) == ("POST", "/v1/gc"):  # type: ignore[attr-defined]
        pytest.skip(
            "would remove other people's objects from the shared engine; the fake covers it"
        )
    op = api_schema[path][method]
    cases = st.one_of(
        op.as_strategy(generation_mode=GenerationMode.POSITIVE),
        op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    known = [{"tenant": t, "name": n} for t, names in KNOWN.items() for n in names]

    @FUZZ
    @given(case=cases, data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        params = case.path_parameters or {}
        if "tenant" in params and data.draw(st.booleans(), label="known names"):
            # half the time, a tenant and cell that exist
            pick = data.draw(st.sampled_from(known), label="known")
            case.path_parameters = {k: pick.get(k, v) for k, v in params.items()}
        query = case.query if isinstance(case.query, dict) else {}
        if "follow" in query:  # no long poll or stream waits for the client
            query["follow"] = "false"
        if path.endswith("/wait"):
            timeout = query.get("timeout", 30)
            if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
                query["timeout"] = 0.05  # the default is 30 s
            case.query = query
        check(case)

    run()


def _markers_leaked(case: Any, response: Any) -> list[str]:
    """t2 markers in the answer that the caller did not send itself."""
    sent = json.dumps(
        [case.path_parameters, case.query, case.body if not callable(case.body) else None],
        default=str,
    )
    body = response.text
    leaked = [m for m in MARKERS if m in body and m not in sent]
    try:
        values = _strings(json.loads(body)) if body else []
    except ValueError:
        values = []
    if "t2" in values and "t2" not in sent:
        leaked.append("tenant t2")
    return leaked


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [*_strings(k), *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_operation_fails_or_breaks_its_schema_as_admin(
    plane: ControlPlane, api_schema: Any, method: str, path: str
) -> None:
    headers = {"Authorization": f"Bearer {plane.token}"}

    def check(case: Any) -> None:
        case.call_and_validate(
            headers=headers,
            checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
        )

    fuzz(plane, api_schema, method, path, check)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_a_tenant_sees_nothing_of_another_tenant(
    plane: ControlPlane, api_schema: Any, method: str, path: str
) -> None:
    token = tenant_token(plane, "t1")
    headers = {"Authorization": f"Bearer {token}"}

    def check(case: Any) -> None:
        response = case.call_and_validate(
            headers=headers,
            checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
        )
        leaked = _markers_leaked(case, response)
        assert not leaked, (
            f"{case.method} {case.formatted_path} as t1 answered {response.status_code} "
            f"with t2's {leaked}: {response.text[:500]}"
        )

    fuzz(plane, api_schema, method, path, check)


def test_the_seed_holds_every_marker(plane: ControlPlane) -> None:
    """The tenant run proves something only if t2's objects really carry the markers."""
    from starlette.testclient import TestClient

    admin = {"Authorization": f"Bearer {plane.token}"}
    with TestClient(create_app(plane)) as client:
        body = client.get("/v1/cells/t2/t2-marker-cell", headers=admin).text
        listed = client.get("/v1/cells", headers=admin).text
    assert all(m in body for m in (MARKERS[0], MARKERS[2], MARKERS[3])), body
    assert MARKERS[1] in listed
    assert _markers_leaked(_Sent(), _Body(listed)) == [
        MARKERS[0],
        MARKERS[1],
        MARKERS[3],
        "tenant t2",
    ]


class _Sent:
    path_parameters: dict[str, Any] = {}  # noqa: RUF012
    query: dict[str, Any] = {}  # noqa: RUF012
    body = None


class _Body:
    def __init__(self, text: str) -> None:
        self.text = text
