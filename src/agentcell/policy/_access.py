"""Who is calling the API, and what it may see: the admin token, tenant tokens, the failure limit.

A tenant token is ``act_<id>.<secret>``: the id finds the stored row, the secret is checked
against the row's SHA-256 hash in constant time. Tokens carry 256 random bits, so a fast hash
is the right one (a slow password hash guards guessable secrets, not these).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from agentcell.policy._decision import Decision

__all__ = [
    "ADMIN",
    "AUTH_REASONS",
    "MAX_TOKEN_LIFETIME",
    "MIN_TOKEN_LIFETIME",
    "TOKEN_PREFIX",
    "FailureLimiter",
    "Principal",
    "StoredToken",
    "authenticate",
    "hash_secret",
    "parse_tenant_token",
    "sees",
]

TOKEN_PREFIX = "act_"  # noqa: S105 (a prefix, not a secret)
MIN_TOKEN_LIFETIME = 60.0
MAX_TOKEN_LIFETIME = 10 * 365 * 86400.0
"""A token's lifetime, when it has one: a minute to ten years."""
_TENANT_TOKEN = re.compile(r"act_([0-9a-f]{12})\.([A-Za-z0-9_-]{43})")

AUTH_REASONS = (
    "admin token",
    "tenant token",
    "missing token",
    "malformed authorization header",
    "invalid token",
    "revoked token",
    "expired token",
)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the admin (``tenant is None``) or one tenant's token."""

    tenant: str | None
    token_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.tenant is None

    @property
    def actor(self) -> str:
        """How the audit trail names the caller."""
        return "admin" if self.tenant is None else f"tenant {self.tenant} token {self.token_id}"


ADMIN = Principal(None, "admin")


@dataclass(frozen=True)
class StoredToken:
    """A tenant token as the store keeps it: never the secret, only its hash."""

    id: str
    tenant: str
    hash: str
    created: float
    revoked: float | None = None
    expires: float | None = None  # None: until revoked

    def state(self, now: float) -> str:
        """``live``, ``revoked`` or ``expired`` at ``now`` (revoked first: it is a decision)."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "live"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_tenant_token(credential: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed tenant token, else None."""
    m = _TENANT_TOKEN.fullmatch(credential)
    return (m.group(1), m.group(2)) if m else None


def authenticate(
    header: str | None,
    admin_token: str,
    lookup: Callable[[str], StoredToken | None],
    *,
    now: float,
) -> tuple[Principal | None, Decision]:
    """Who presents ``header`` (an ``Authorization`` value) at ``now``; the decision says why.

    Order: a header must be ``Bearer <credential>`` (scheme case-insensitive); the admin token
    is compared in constant time; otherwise the credential must be a well-formed tenant token
    whose id is stored and whose secret matches the stored hash, and the token must be
    neither revoked nor past its expiry.
    """
    if not header:
        return None, Decision(False, "missing token")
    scheme, space, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not space:
        return None, Decision(False, "malformed authorization header")
    if admin_token and hmac.compare_digest(credential.encode(), admin_token.encode()):
        return ADMIN, Decision(True, "admin token")
    parsed = parse_tenant_token(credential)
    if parsed is None:
        return None, Decision(False, "invalid token")
    token_id, secret = parsed
    stored = lookup(token_id)
    # Compare even when the id is unknown, so timing does not tell ids apart.
    expected = stored.hash if stored is not None else hash_secret("")
    matches = hmac.compare_digest(hash_secret(secret).encode(), expected.encode())
    if stored is None or not matches:
        return None, Decision(False, "invalid token", token_id)
    state = stored.state(now)
    if state != "live":
        return None, Decision(False, f"{state} token", token_id)
    return Principal(stored.tenant, stored.id), Decision(True, "tenant token", token_id)


def sees(principal: Principal, tenant: str) -> bool:
    """May ``principal`` see ``tenant``'s objects? The admin sees all; a tenant only its own."""
    return principal.tenant is None or principal.tenant == tenant


class FailureLimiter:
    """Failed authentications per client address, in a sliding window.

    A client with ``limit`` failures inside ``window`` seconds is refused without its
    credential being looked at until the oldest of them ages out: refusing before checking is
    what keeps the limit from answering guesses. At most ``clients`` addresses are tracked.
    Pure: the caller passes the clock.
    """

    def __init__(self, limit: int = 30, window: float = 60.0, clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.clients = clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until ``client`` may try again; 0 when it is not limited."""
        times = self._failures.get(client)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return max(times[0] + self.window - now, 0.001)

    def fail(self, client: str, now: float) -> bool:
        """Count one failure; True when it is the one that reaches the limit."""
        times = self._failures.setdefault(client, deque(maxlen=self.limit))
        self._failures.move_to_end(client)
        times.append(now)
        while len(self._failures) > self.clients:
            self._failures.popitem(last=False)
        return len(times) == self.limit
