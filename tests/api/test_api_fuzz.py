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
It is skipped until tenant tokens exist (``tenant_token``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from agentcell.api import create_app
from agentcell.control import ControlPlane, PlaneConfig
from agentcell.errors import NotFoundError
from agentcell.plan import CellKey, EngineObject, ObservedCell
from agentcell.runtime import CellContainers, GcOutcome
from livecell import TEST_POOL

MARKERS = ("t2-marker-cell", "t2-marker-other", "t2-marker-secret-env", "t2-marker-image")
"""Strings only tenant t2's objects hold."""

SEED = f"""
apiVersion: agentcell/v1
kind: Tenant
metadata: {{name: t1}}
spec: {{quota: {{agents: 20}}}}
---
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: t1-cell, tenant: t1}}
spec:
  image: agentcell/demo-agent:latest
  egress: {{allow: [{{host: api.example.com, ports: [443]}}]}}
---
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: t1-docker, tenant: t1}}
spec: {{image: agentcell/demo-agent:latest, docker: {{access: own}}}}
---
apiVersion: agentcell/v1
kind: Tenant
metadata: {{name: t2}}
spec: {{quota: {{agents: 20}}}}
---
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: {MARKERS[0]}, tenant: t2}}
spec:
  image: {MARKERS[3]}:latest
  env: {{T2_MARKER: {MARKERS[2]}}}
  egress: {{allow: [{{host: api.example.com, ports: [443]}}]}}
---
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: {MARKERS[1]}, tenant: t2}}
spec: {{image: agentcell/demo-agent:latest}}
"""

KNOWN = {"t1": ["t1-cell", "t1-docker"], "t2": [MARKERS[0], MARKERS[1]]}


def tenant_token(plane: ControlPlane, tenant: str) -> str | None:
    """A token that acts as ``tenant`` only; None while the API has no tenant tokens.

    For the lead: return the new tenant token of ``tenant`` here, and the tenant run starts.
    """
    return None


class FakeDriver:
    """The engine seam as the API uses it, holding no containers: what the real driver
    answers for stored cells that were never deployed."""

    def __init__(self) -> None:
        self.objects = [
            EngineObject("container", "agentcell-t1-lost-g1", "id-lost", "t1", "lost"),
            EngineObject("container", "agentcell-gone-x-g1", "id-gone", "gone", "x"),
        ]

    def used_subnets(self) -> list[str]:
        return []

    def cell_containers(self, key: CellKey) -> CellContainers:
        return CellContainers(None, None, None)

    def agent_container(self, key: CellKey) -> Any:
        raise NotFoundError(f"cell {key[0]}/{key[1]} has no agent container")

    def logs(self, key: CellKey, *, follow: bool, tail: int | None) -> Iterator[bytes]:
        return self.agent_container(key)  # type: ignore[no-any-return]

    def exec(self, key: CellKey, command: list[str], *, user: str) -> Any:
        return self.agent_container(key)

    def observe(self) -> dict[CellKey, ObservedCell]:
        return {}

    def labelled_objects(self) -> list[EngineObject]:
        return list(self.objects)

    def remove_orphans(
        self, objects: Iterable[EngineObject], confirm: Callable[[EngineObject], str | None]
    ) -> GcOutcome:
        out = GcOutcome()
        for o in objects:
            why = confirm(o)
            if why is not None:
                out.kept.append((o, why))
            else:
                out.removed.append(o)
        return out


@contextmanager
def control_plane(state_dir: Path, driver: Any) -> Iterator[ControlPlane]:
    plane = ControlPlane(PlaneConfig(state_dir, subnet_pool=TEST_POOL), driver=driver)
    try:  # never started: nothing is deployed, the reconciler never runs
        plane.apply(SEED, "seed.yaml", "test")
        yield plane
    finally:
        plane.store.close()


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
            case.path_parameters = {k: pick[k] for k in params}
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
            headers=headers, checks=[not_a_server_error, response_schema_conformance]
        )

    fuzz(plane, api_schema, method, path, check)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_a_tenant_sees_nothing_of_another_tenant(
    plane: ControlPlane, api_schema: Any, method: str, path: str
) -> None:
    token = tenant_token(plane, "t1")
    if token is None:
        pytest.skip("tenant tokens not merged yet")
    headers = {"Authorization": f"Bearer {token}"}

    def check(case: Any) -> None:
        response = case.call_and_validate(
            headers=headers, checks=[not_a_server_error, response_schema_conformance]
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
