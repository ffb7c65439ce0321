"""API tokens: the admin token made on first start, tenant tokens, and who is calling.

Tenant tokens are shown once when issued and stored only as a hash. Every failed
authentication is one audit record, and a client that keeps failing is refused for a while
(``policy.FailureLimiter``) with one more record saying so.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentcell.control._audit import AuditRecord
from agentcell.errors import InputError, NotFoundError, RateLimitedError, UnauthorizedError
from agentcell.policy import (
    MAX_TOKEN_LIFETIME,
    MIN_TOKEN_LIFETIME,
    TOKEN_PREFIX,
    FailureLimiter,
    Principal,
    StoredToken,
    authenticate,
    hash_secret,
)

if TYPE_CHECKING:
    from agentcell.control._store import Store

__all__ = [
    "TOKEN_FILE",
    "Authenticator",
    "GateTokens",
    "IssuedToken",
    "TenantTokens",
    "ensure_admin_token",
]

TOKEN_FILE = "admin.token"  # noqa: S105 (a file name, not a secret)


def ensure_admin_token(state_dir: Path) -> str:
    """Read the admin token, creating it (mode 0600) on first start."""
    path = state_dir / TOKEN_FILE
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state_dir, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        token = path.read_text().strip()
        if token:
            return token
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    token = "ac_" + secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


class GateTokens:
    """Per-cell tokens for the gates' control ports, derived from one key in the state dir.

    Derived, not stored: the same cell gets the same token after a restart, and a gate's
    token says nothing about another's.
    """

    def __init__(self, state_dir: Path) -> None:
        path = state_dir / "gate.key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            self._key = path.read_bytes()
        else:
            self._key = secrets.token_bytes(32)
            with os.fdopen(fd, "wb") as f:
                f.write(self._key)

    def token(self, tenant: str, cell: str) -> str:
        return hmac.new(self._key, f"{tenant}/{cell}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """A token just made: the only moment its full text exists outside the client."""

    id: str
    tenant: str
    token: str
    created: float
    expires: float | None = None


class TenantTokens:
    """Issue, list, rotate and revoke tenant tokens; each change is one audit record."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _own(self, tenant: str, token_id: str) -> StoredToken:
        """The tenant's token; another tenant's is as unknown as a missing one."""
        stored = self.store.token(token_id)
        if stored is None or stored.tenant != tenant:
            raise NotFoundError(f"tenant {tenant!r} has no token {token_id!r}")
        return stored

    def _require_tenant(self, tenant: str) -> None:
        if self.store.tenant(tenant) is None:
            raise NotFoundError(f"no tenant {tenant!r}")

    @staticmethod
    def check_lifetime(lifetime: float | None) -> None:
        """InputError unless ``lifetime`` is None or a minute to ten years."""
        if lifetime is not None and not MIN_TOKEN_LIFETIME <= lifetime <= MAX_TOKEN_LIFETIME:
            raise InputError(
                f"a token's lifetime must be a minute to ten years "
                f"({MIN_TOKEN_LIFETIME:g} to {MAX_TOKEN_LIFETIME:g} s), not {lifetime:g} s"
            )

    def issue(
        self,
        tenant: str,
        actor: str,
        *,
        reason: str = "token issued",
        lifetime: float | None = None,
    ) -> IssuedToken:
        """A new token of ``tenant``, good for ``lifetime`` seconds (None: until revoked)."""
        self._require_tenant(tenant)
        self.check_lifetime(lifetime)
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        expires = None if lifetime is None else now + lifetime
        self.store.add_token(StoredToken(token_id, tenant, hash_secret(secret), now, None, expires))
        details: dict[str, Any] = {"id": token_id}
        if expires is not None:
            details["expires"] = expires
        self.store.audit(AuditRecord(tenant, "", actor, "token", "allow", reason, details))
        return IssuedToken(token_id, tenant, f"{TOKEN_PREFIX}{token_id}.{secret}", now, expires)

    def list(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's tokens, revoked and expired ones too, with their state now."""
        self._require_tenant(tenant)
        now = time.time()
        return [
            {
                "id": t.id,
                "tenant": t.tenant,
                "created": t.created,
                "revoked": t.revoked,
                "expires": t.expires,
                "state": t.state(now),
            }
            for t in self.store.tokens(tenant)
        ]

    def revoke(self, tenant: str, token_id: str, actor: str) -> bool:
        """True if it was live. A token of another tenant is as unknown as a missing one."""
        self._own(tenant, token_id)
        revoked = self.store.revoke_token(token_id, time.time())
        if revoked:
            self.store.audit(
                AuditRecord(tenant, "", actor, "token", "allow", "token revoked", {"id": token_id})
            )
        return revoked

    def rotate(
        self, tenant: str, token_id: str, actor: str, *, lifetime: float | None = None
    ) -> IssuedToken:
        """A new token replaces ``token_id``, which stops working at once. The new one lives
        ``lifetime`` seconds, or as long as the old one was given."""
        stored = self._own(tenant, token_id)
        if stored.revoked is not None:
            raise NotFoundError(
                f"token {token_id!r} of tenant {tenant!r} is revoked; issue a new one "
                f"(agentcell token create {tenant})"
            )
        if lifetime is None and stored.expires is not None:
            lifetime = max(stored.expires - stored.created, MIN_TOKEN_LIFETIME)
        new = self.issue(tenant, actor, reason="token rotated", lifetime=lifetime)
        self.revoke(tenant, token_id, actor)
        return new


class Authenticator:
    """The ``Authorization`` header of one request → a ``Principal``, or a refusal (audited)."""

    def __init__(self, store: Store, admin_token: str, limiter: FailureLimiter | None = None):
        self.store = store
        self.admin_token = admin_token
        self.limiter = limiter or FailureLimiter()
        self._lock = threading.Lock()

    def check(self, header: str | None, client: str, request: dict[str, Any]) -> Principal:
        now = time.monotonic()
        with self._lock:
            wait = self.limiter.retry_after(client, now)
        if wait:
            raise RateLimitedError(wait)
        principal, decision = authenticate(
            header, self.admin_token, self.store.token, now=time.time()
        )
        if principal is not None:
            return principal
        with self._lock:
            limited = self.limiter.fail(client, now)
        details = {**request, **({"token_id": decision.rule} if decision.rule else {})}
        self.store.audit(
            AuditRecord("", "", f"client {client}", "auth", "deny", decision.reason, details)
        )
        if limited:
            self.store.audit(
                AuditRecord(
                    "",
                    "",
                    f"client {client}",
                    "auth",
                    "deny",
                    "client rate limited",
                    {"failures": self.limiter.limit, "window": self.limiter.window},
                )
            )
        raise UnauthorizedError(decision.reason)
