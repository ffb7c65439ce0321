"""Error answers: one documented shape (``Problem``), each code documented where it can occur."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from starlette.testclient import TestClient

from agentcell.api import create_app
from agentcell.control import ControlPlane

OPENAPI = create_app(cast(Any, None)).openapi()
OPEN = {"/v1/healthz", "/v1/schema"}
ADMIN_ONLY = {("post", "/v1/tenants"), ("delete", "/v1/tenants/{tenant}"), ("get", "/v1/gc"),
              ("post", "/v1/gc")}  # fmt: skip
OPERATIONS = [
    (method, path, op)
    for path, methods in OPENAPI["paths"].items()
    for method, op in methods.items()
    if path not in OPEN
]


def _problem(body: Any) -> None:
    assert set(body) <= {"error", "reason", "hint"} and {"error", "reason"} <= set(body), body
    assert all(isinstance(v, str) and v for v in body.values()), body


@pytest.mark.parametrize(
    ("method", "path", "op"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
def test_every_route_documents_the_errors_it_can_answer(method: str, path: str, op: Any) -> None:
    codes = set(op["responses"])
    assert {"401", "429", "503"} <= codes
    if "{" in path:
        assert "404" in codes
    if (method, path) in ADMIN_ONLY:
        assert "403" in codes
    if "requestBody" in op:  # the framework answers 400 to a body it cannot read
        assert "400" in codes
    problem = {"$ref": "#/components/schemas/Problem"}
    for code in codes - {"200", "201", "202", "204", "422"}:
        assert op["responses"][code]["content"]["application/json"]["schema"] == problem


def test_no_token_is_a_problem_with_a_hint_and_a_challenge(admin_client: TestClient) -> None:
    r = admin_client.get("/v1/cells", headers={"Authorization": "Bearer act_000000000000.x"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    _problem(r.json())
    assert r.json()["error"] == "UnauthorizedError"
    assert "Authorization: Bearer" in r.json()["hint"]


def test_a_limited_client_gets_a_problem_and_retry_after(fake_plane: ControlPlane) -> None:
    with TestClient(create_app(fake_plane), client=("192.0.2.9", 50000)) as c:
        codes = [c.get("/v1/whoami", headers={"Authorization": "Bearer no"}).status_code
                 for _ in range(31)]  # fmt: skip
        r = c.get("/v1/whoami", headers={"Authorization": f"Bearer {fake_plane.token}"})
    assert codes == [401] * 30 + [429]
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    _problem(r.json())
    assert r.json()["error"] == "RateLimitedError"


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [("GET", "/v1/nothing-here", 404), ("PATCH", "/v1/cells", 405), ("GET", "/", 404)],
)
def test_the_frameworks_own_refusals_have_the_same_shape(
    admin_client: TestClient, fake_plane: ControlPlane, method: str, path: str, code: int
) -> None:
    r = admin_client.request(method, path, headers={"Authorization": f"Bearer {fake_plane.token}"})
    assert r.status_code == code
    _problem(r.json())


def test_a_spec_error_names_its_issues(admin_client: TestClient, fake_plane: ControlPlane) -> None:
    r = admin_client.post(
        "/v1/apply",
        json={"yaml": "apiVersion: agentcell/v1\nkind: Agent\nmetadata: {name: x}\n"},
        headers={"Authorization": f"Bearer {fake_plane.token}"},
    )
    assert r.status_code == 422
    assert r.json()["error"] == "invalid spec" and r.json()["issues"]


def test_the_client_reads_every_error_shape(tmp_path: Path) -> None:
    """The CLI prints the reason and hint of a Problem, and each place of a validation error."""
    import httpx

    from agentcell.cli._client import Client
    from agentcell.errors import ClientError

    answers = {
        "/p": httpx.Response(401, json={"error": "UnauthorizedError", "reason": "invalid token",
                                        "hint": "send a token"}),
        "/v": httpx.Response(422, json={"detail": [{"loc": ["body", "yaml"], "msg": "missing"}]}),
    }  # fmt: skip
    for path, says in (("/p", "unauthorized: invalid token (send a token)"),
                       ("/v", "body.yaml: missing")):  # fmt: skip
        with pytest.raises(ClientError, match=says.replace("(", r"\(").replace(")", r"\)")):
            Client._decode(answers[path])
