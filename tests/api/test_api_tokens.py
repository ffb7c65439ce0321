"""Token lifetimes through the API and the CLI: asked for, shown, bounded, refused when wrong."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from agentcell.cli.main import app as cli_app

DAY = 86400


def test_a_tenant_and_its_tokens_take_a_lifetime(admin_client: TestClient) -> None:
    made = admin_client.post(
        "/v1/tenants", json={"name": "lifetimes", "token_expires_in": 90 * DAY}
    )
    assert made.status_code == 201, made.text
    assert made.json()["expires"] == pytest.approx(time.time() + 90 * DAY, abs=60)
    other = admin_client.post("/v1/tenants/lifetimes/tokens", json={"expires_in": 3600})
    forever = admin_client.post("/v1/tenants/lifetimes/tokens")  # no body: until revoked
    assert other.json()["expires"] == pytest.approx(time.time() + 3600, abs=60)
    assert forever.status_code == 201 and forever.json()["expires"] is None
    rotated = admin_client.post(f"/v1/tenants/lifetimes/tokens/{other.json()['token_id']}/rotate")
    assert rotated.json()["expires"] == pytest.approx(time.time() + 3600, abs=60)
    listed = {t["id"]: t for t in admin_client.get("/v1/tenants/lifetimes/tokens").json()}
    assert listed[other.json()["token_id"]]["state"] == "revoked"
    assert listed[rotated.json()["token_id"]]["state"] == "live"
    assert listed[forever.json()["token_id"]]["expires"] is None


@pytest.mark.parametrize("seconds", [0, 59, 10 * 365 * DAY + 1, -1, "soon"], ids=repr)
def test_a_lifetime_out_of_bounds_is_refused_saying_the_bounds(
    admin_client: TestClient, seconds: object
) -> None:
    before = admin_client.get("/v1/tenants/acme/tokens").json()
    r = admin_client.post("/v1/tenants/acme/tokens", json={"expires_in": seconds})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "expires_in"]
    assert admin_client.get("/v1/tenants/acme/tokens").json() == before
    r = admin_client.post("/v1/tenants", json={"name": "never-made", "token_expires_in": seconds})
    assert r.status_code == 422
    assert admin_client.get("/v1/tenants").text.count("never-made") == 0


def cli(*args: str) -> tuple[int, str]:
    env = {"AGENTCELL_URL": "http://127.0.0.1:9", "AGENTCELL_TOKEN": "t"}
    r = CliRunner().invoke(cli_app, list(args), env=env)
    return r.exit_code, r.output + (r.stderr if r.stderr_bytes is not None else "")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["tenant", "create", "x", "--expires", "soon"], "'soon' is not a duration"),
        (["token", "create", "x", "--expires", "10s"], "between a minute (1m) and ten years"),
        (["token", "rotate", "x", "0123456789ab", "--expires", "4000d"], "between a minute"),
        (["token", "create", "x", "--expires", "1w"], "units ms, s, m, h, d"),
    ],
)
def test_the_cli_refuses_a_bad_lifetime_before_any_call(args: list[str], says: str) -> None:
    code, output = cli(*args)
    assert code == 2
    assert says in " ".join(output.split())
    assert "cannot reach" not in output  # refused before the (absent) server was asked
