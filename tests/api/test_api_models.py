"""The API's answers are typed: the OpenAPI document describes each model, the models
refuse fields they do not declare, and the lists encoded on the fast path still match
their documented model."""

from __future__ import annotations

from typing import Any, cast

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from agentcell.api import create_app
from agentcell.api._models import AuditEntry, CellStatusView, CellSummary, Whoami
from agentcell.control import ControlPlane

OPENAPI = create_app(cast(Any, None)).openapi()


def _schema_of(path: str, method: str) -> dict[str, Any]:
    ok = OPENAPI["paths"][path][method]["responses"]
    answer = ok.get("200") or ok.get("201") or ok["202"]
    return dict(answer["content"]["application/json"]["schema"])


@pytest.mark.parametrize(
    ("path", "method", "model"),
    [
        ("/v1/whoami", "get", "Whoami"),
        ("/v1/apply", "post", "Applied"),
        ("/v1/cells/{tenant}/{name}", "get", "CellDetail"),
        ("/v1/cells/{tenant}/{name}/wait", "get", "CellStatusView"),
        ("/v1/cells/{tenant}/{name}/verify", "post", "Verified"),
        ("/v1/cells/{tenant}/{name}", "delete", "Removing"),
        ("/v1/tenants", "post", "IssuedToken"),
        ("/v1/gc", "get", "GcAnswer"),
    ],
)
def test_every_answer_is_a_documented_model(path: str, method: str, model: str) -> None:
    assert _schema_of(path, method) == {"$ref": f"#/components/schemas/{model}"}
    assert OPENAPI["components"]["schemas"][model]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1/cells", "CellSummary"),
        ("/v1/audit", "AuditEntry"),
        ("/v1/tenants/{tenant}/tokens", "TokenInfo"),
    ],
)
def test_lists_are_documented_as_lists_of_their_model(path: str, model: str) -> None:
    schema = _schema_of(path, "get")
    assert schema["type"] == "array"
    assert schema["items"] == {"$ref": f"#/components/schemas/{model}"}


def test_a_field_the_control_plane_renamed_is_refused_not_passed_on() -> None:
    with pytest.raises(ValidationError, match="token_ident"):
        Whoami.model_validate({"admin": True, "tenant": None, "token_ident": None})


def test_the_fast_path_list_matches_its_model(
    admin_client: TestClient, fake_plane: ControlPlane
) -> None:
    listed = admin_client.get("/v1/cells").json()
    assert listed and listed == fake_plane.cells(None)
    for item in listed:
        CellSummary.model_validate(item)


def test_the_status_answer_says_whether_the_deploy_is_ready(admin_client: TestClient) -> None:
    st = CellStatusView.model_validate(
        admin_client.get("/v1/cells/t1/t1-cell/wait", params={"timeout": 0.01}).json()
    )
    assert (st.ready, st.settled, st.gone) == (False, False, False)
    assert st.ready_reason == "pending: waiting for the reconciler"


def test_audit_records_match_their_documented_model(admin_client: TestClient) -> None:
    records = admin_client.get("/v1/audit", params={"limit": 50}).json()
    assert records
    for r in records:
        AuditEntry.model_validate(r)
