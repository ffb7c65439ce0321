"""Who is calling: the admin token, tenant tokens, what each sees, and the failure limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.policy import (
    ADMIN,
    AUTH_REASONS,
    FailureLimiter,
    Principal,
    StoredToken,
    authenticate,
    hash_secret,
    parse_tenant_token,
    sees,
)

ADMIN_TOKEN = "ac_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
SECRET = "s" * 43
OTHER = "o" * 43
LIVE = StoredToken("0123456789ab", "acme", hash_secret(SECRET), 1.0)
GONE = StoredToken("ba9876543210", "acme", hash_secret(SECRET), 1.0, revoked=2.0)
NOW = 1000.0
LATER = StoredToken("111111111111", "acme", hash_secret(SECRET), 1.0, expires=NOW + 1)
PAST = StoredToken("222222222222", "acme", hash_secret(SECRET), 1.0, expires=NOW)
BOTH = StoredToken("333333333333", "acme", hash_secret(SECRET), 1.0, revoked=2.0, expires=3.0)
STORE = {t.id: t for t in (LIVE, GONE, LATER, PAST, BOTH)}
TENANT = f"act_{LIVE.id}.{SECRET}"


def check(header: str | None) -> tuple[Principal | None, str]:
    principal, decision = authenticate(header, ADMIN_TOKEN, STORE.get, now=NOW)
    assert decision.reason in AUTH_REASONS
    assert (principal is not None) is decision.allow
    return principal, decision.reason


ROWS: list[tuple[str, str | None, Principal | None, str]] = [
    ("no header", None, None, "missing token"),
    ("an empty header", "", None, "missing token"),
    ("the token without a scheme", ADMIN_TOKEN, None, "malformed authorization header"),
    ("basic auth", f"Basic {ADMIN_TOKEN}", None, "malformed authorization header"),
    ("another scheme", f"Token {ADMIN_TOKEN}", None, "malformed authorization header"),
    ("no space after Bearer", f"Bearer{ADMIN_TOKEN}", None, "malformed authorization header"),
    ("Bearer alone", "Bearer", None, "malformed authorization header"),
    ("a leading space", " Bearer " + ADMIN_TOKEN, None, "malformed authorization header"),
    ("Bearer and nothing", "Bearer ", None, "invalid token"),
    ("a wrong token", "Bearer wrong", None, "invalid token"),
    ("a prefix of the admin token", f"Bearer {ADMIN_TOKEN[:-1]}", None, "invalid token"),
    ("the admin token and more", f"Bearer {ADMIN_TOKEN}x", None, "invalid token"),
    ("the admin token in capitals", f"Bearer {ADMIN_TOKEN.upper()}", None, "invalid token"),
    ("two spaces", f"Bearer  {ADMIN_TOKEN}", None, "invalid token"),
    ("a trailing space", f"Bearer {ADMIN_TOKEN} ", None, "invalid token"),
    ("a trailing newline", f"Bearer {ADMIN_TOKEN}\n", None, "invalid token"),
    ("non-ASCII", "Bearer ünïcödé", None, "invalid token"),
    ("the admin token", f"Bearer {ADMIN_TOKEN}", ADMIN, "admin token"),
    ("the scheme in any case", f"bEARER {ADMIN_TOKEN}", ADMIN, "admin token"),
    ("a tenant token", f"Bearer {TENANT}", Principal("acme", LIVE.id), "tenant token"),
    ("a tenant token, wrong secret", f"Bearer act_{LIVE.id}.{OTHER}", None, "invalid token"),
    ("an unknown token id", f"Bearer act_aaaaaaaaaaaa.{SECRET}", None, "invalid token"),
    ("a revoked token", f"Bearer act_{GONE.id}.{SECRET}", None, "revoked token"),
    ("a revoked token, wrong secret", f"Bearer act_{GONE.id}.{OTHER}", None, "invalid token"),
    (
        "a token that expires later",
        f"Bearer act_{LATER.id}.{SECRET}",
        Principal("acme", LATER.id),
        "tenant token",
    ),
    ("a token at its expiry", f"Bearer act_{PAST.id}.{SECRET}", None, "expired token"),
    ("an expired token, wrong secret", f"Bearer act_{PAST.id}.{OTHER}", None, "invalid token"),
    ("revoked and expired: revoked", f"Bearer act_{BOTH.id}.{SECRET}", None, "revoked token"),
    ("a tenant token cut short", f"Bearer {TENANT[:-1]}", None, "invalid token"),
    ("a tenant token and more", f"Bearer {TENANT}x", None, "invalid token"),
    ("upper-case id", f"Bearer act_{LIVE.id.upper()}.{SECRET}", None, "invalid token"),
    ("no separator", f"Bearer act_{LIVE.id}{SECRET}", None, "invalid token"),
    ("a tenant token and a newline", f"Bearer {TENANT}\n", None, "invalid token"),
    ("the hash instead of the secret", f"Bearer act_{LIVE.id}.{LIVE.hash}", None, "invalid token"),
]


@pytest.mark.parametrize(
    ("header", "principal", "reason"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_authenticate(header: str | None, principal: Principal | None, reason: str) -> None:
    assert check(header) == (principal, reason)


def test_an_empty_admin_token_lets_nobody_in_as_admin() -> None:
    principal, decision = authenticate("Bearer ", "", STORE.get, now=NOW)
    assert principal is None and decision.reason == "invalid token"


@given(st.text(max_size=120))
def test_only_the_two_kinds_of_token_pass(credential: str) -> None:
    principal, reason = check(f"Bearer {credential}")
    if credential == ADMIN_TOKEN:
        assert principal == ADMIN
    elif credential == TENANT:
        assert principal == Principal("acme", LIVE.id)
    else:
        assert principal is None and reason in ("invalid token", "revoked token", "expired token")


@given(
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
        min_size=43,
        max_size=43,
    )
)
def test_a_tenant_token_passes_only_with_its_own_secret(secret: str) -> None:
    principal, _ = check(f"Bearer act_{LIVE.id}.{secret}")
    assert (principal is not None) is (secret == SECRET)


@given(
    created=st.floats(0, 1e9),
    lifetime=st.one_of(st.none(), st.floats(60, 1e9)),
    revoked=st.one_of(st.none(), st.floats(0, 2e9)),
    now=st.floats(0, 2e9),
)
def test_a_token_works_exactly_while_unrevoked_and_before_its_expiry(
    created: float, lifetime: float | None, revoked: float | None, now: float
) -> None:
    expires = None if lifetime is None else created + lifetime
    token = StoredToken("444444444444", "acme", hash_secret(SECRET), created, revoked, expires)
    principal, decision = authenticate(
        f"Bearer act_{token.id}.{SECRET}", ADMIN_TOKEN, {token.id: token}.get, now=now
    )
    works = revoked is None and (expires is None or now < expires)
    assert (principal is not None) is works
    if not works:
        assert decision.reason == ("revoked token" if revoked is not None else "expired token")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (TENANT, (LIVE.id, SECRET)),
        (f"act_{LIVE.id}.{SECRET[:-1]}", None),
        (f"act_{LIVE.id[:-1]}.{SECRET}", None),
        (f"ac_{LIVE.id}.{SECRET}", None),
        (f"act_{LIVE.id}.{'+' * 43}", None),
        (f"act_{LIVE.id}.{SECRET}\n", None),
    ],
    ids=["well formed", "short secret", "short id", "admin prefix", "bad alphabet", "newline"],
)
def test_parse_tenant_token(text: str, parsed: tuple[str, str] | None) -> None:
    assert parse_tenant_token(text) == parsed


@pytest.mark.parametrize(
    ("principal", "tenant", "expected"),
    [
        (ADMIN, "acme", True),
        (ADMIN, "other", True),
        (Principal("acme", "t"), "acme", True),
        (Principal("acme", "t"), "other", False),
        (Principal("acme", "t"), "acme2", False),
        (Principal("acme", "t"), "", False),
    ],
    ids=["admin, any", "admin, another", "own", "another", "a longer name", "no tenant"],
)
def test_sees(principal: Principal, tenant: str, expected: bool) -> None:
    assert sees(principal, tenant) is expected


@given(
    st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True),
    st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True),
)
def test_a_tenant_sees_exactly_its_own_tenant(mine: str, other: str) -> None:
    assert sees(Principal(mine, "t"), other) is (mine == other)


def test_the_actor_names_the_caller() -> None:
    assert ADMIN.actor == "admin"
    assert Principal("acme", "0123456789ab").actor == "tenant acme token 0123456789ab"


# -- the failure limit -------------------------------------------------------------------------


def test_a_client_is_limited_at_the_limit_and_free_when_failures_age_out() -> None:
    limiter = FailureLimiter(limit=3, window=60)
    assert limiter.retry_after("a", 0) == 0
    assert [limiter.fail("a", t) for t in (0, 10, 20)] == [False, False, True]
    assert limiter.retry_after("a", 20) == pytest.approx(40)
    assert limiter.retry_after("a", 59) == pytest.approx(1)
    assert limiter.retry_after("a", 60) == 0  # the first failure aged out
    assert limiter.fail("a", 61) is True  # back at the limit
    assert limiter.retry_after("a", 61) > 0


def test_clients_are_limited_one_by_one() -> None:
    limiter = FailureLimiter(limit=2, window=60)
    limiter.fail("a", 0)
    limiter.fail("a", 1)
    assert limiter.retry_after("a", 2) > 0
    assert limiter.retry_after("b", 2) == 0


def test_failures_outside_the_window_do_not_count() -> None:
    limiter = FailureLimiter(limit=2, window=10)
    limiter.fail("a", 0)
    assert limiter.retry_after("a", 11) == 0
    assert limiter.fail("a", 12) is False


def test_the_limiter_tracks_a_bounded_number_of_clients() -> None:
    limiter = FailureLimiter(limit=2, window=60, clients=100)
    for i in range(1000):
        limiter.fail(f"c{i}", 0)
    assert len(limiter._failures) == 100


@given(st.lists(st.floats(0, 500, allow_nan=False), max_size=60), st.integers(1, 10))
def test_limited_means_limit_failures_inside_the_window(times: list[float], limit: int) -> None:
    limiter = FailureLimiter(limit=limit, window=60)
    times.sort()
    counted: list[float] = []
    for t in times:
        if limiter.retry_after("a", t) == 0:
            limiter.fail("a", t)
            counted.append(t)
    now = (times[-1] if times else 0) + 1
    recent = [t for t in counted if t > now - 60]
    assert (limiter.retry_after("a", now) > 0) is (len(recent) >= limit)
