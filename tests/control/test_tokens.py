"""Tenant tokens with a lifetime: issued, listed, rotated, refused once expired, and kept
by a store made before tokens could expire."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcell.control import Authenticator, Store, TenantTokens
from agentcell.errors import InputError, UnauthorizedError
from agentcell.policy import MAX_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME
from agentcell.spec import API_VERSION, Tenant

DAY = 86400.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state.db")
    s.put_tenant(
        Tenant.model_validate(
            {"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": "acme"}}
        )
    )
    yield s
    s.close()


def _expire(path: Path, token_id: str, when: float) -> None:
    """Move a token's expiry, as the clock would: the store has no API to do it."""
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE tokens SET expires=? WHERE id=?", (when, token_id))
    db.close()


def test_a_token_with_a_lifetime_expires_then(store: Store) -> None:
    before = time.time()
    issued = TenantTokens(store).issue("acme", "admin", lifetime=90 * DAY)
    assert issued.expires is not None
    assert before + 90 * DAY <= issued.expires <= time.time() + 90 * DAY
    stored = store.token(issued.id)
    assert stored is not None and stored.expires == issued.expires
    (record,) = [r for r in store.audit_records(kind="token") if r.details["id"] == issued.id]
    assert record.details["expires"] == issued.expires


def test_a_token_without_a_lifetime_never_expires(store: Store) -> None:
    issued = TenantTokens(store).issue("acme", "admin")
    assert issued.expires is None
    (listed,) = TenantTokens(store).list("acme")
    assert (listed["expires"], listed["state"]) == (None, "live")


@pytest.mark.parametrize(
    "lifetime", [0.0, MIN_TOKEN_LIFETIME - 1, MAX_TOKEN_LIFETIME + 1, -DAY], ids=repr
)
def test_a_lifetime_out_of_bounds_is_refused_and_nothing_is_stored(
    store: Store, lifetime: float
) -> None:
    with pytest.raises(InputError, match="a minute to ten years"):
        TenantTokens(store).issue("acme", "admin", lifetime=lifetime)
    assert store.tokens("acme") == []


def test_an_expired_token_is_refused_listed_as_expired_and_audited(
    store: Store, tmp_path: Path
) -> None:
    tokens = TenantTokens(store)
    issued = tokens.issue("acme", "admin", lifetime=MIN_TOKEN_LIFETIME)
    auth = Authenticator(store, "admin-token")
    assert auth.check(f"Bearer {issued.token}", "127.0.0.1", {}).tenant == "acme"
    _expire(tmp_path / "state.db", issued.id, time.time() - 1)
    with pytest.raises(UnauthorizedError, match="expired token"):
        auth.check(f"Bearer {issued.token}", "127.0.0.1", {})
    (listed,) = tokens.list("acme")
    assert listed["state"] == "expired"
    last = store.audit_records(kind="auth")[-1]
    assert (last.reason, last.details["token_id"]) == ("expired token", issued.id)


def test_rotation_keeps_the_lifetime_unless_given_another(store: Store) -> None:
    tokens = TenantTokens(store)
    first = tokens.issue("acme", "admin", lifetime=30 * DAY)
    second = tokens.rotate("acme", first.id, "admin")
    assert second.expires is not None
    assert second.expires - second.created == pytest.approx(30 * DAY)
    third = tokens.rotate("acme", second.id, "admin", lifetime=DAY)
    assert third.expires is not None and third.expires - third.created == pytest.approx(DAY)
    states = {t["id"]: t["state"] for t in tokens.list("acme")}
    assert states == {first.id: "revoked", second.id: "revoked", third.id: "live"}


def test_an_expired_token_can_be_rotated_into_a_live_one(store: Store, tmp_path: Path) -> None:
    tokens = TenantTokens(store)
    old = tokens.issue("acme", "admin", lifetime=DAY)
    _expire(tmp_path / "state.db", old.id, time.time() - 1)
    new = tokens.rotate("acme", old.id, "admin")
    auth = Authenticator(store, "admin-token")
    assert auth.check(f"Bearer {new.token}", "127.0.0.1", {}).token_id == new.id


def test_a_store_made_before_expiry_existed_keeps_its_tokens(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    with db:
        db.execute(
            "CREATE TABLE tokens (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
            "hash TEXT NOT NULL, created REAL NOT NULL, revoked REAL)"
        )
        db.execute("INSERT INTO tokens VALUES ('0123456789ab', 'acme', 'h', 1.0, NULL)")
    db.close()
    store = Store(path)
    try:
        old = store.token("0123456789ab")
        assert old is not None and (old.tenant, old.expires, old.state(time.time())) == (
            "acme",
            None,
            "live",
        )
    finally:
        store.close()
