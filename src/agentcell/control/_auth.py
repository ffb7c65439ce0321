"""API tokens: the admin token made on first start, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["TOKEN_FILE", "GateTokens", "check_token", "ensure_admin_token"]

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


def check_token(presented: str | None, expected: str) -> str | None:
    """None if ``presented`` is the token; otherwise the fixed-phrase reason for refusing."""
    if not presented:
        return "missing token"
    scheme, space, credential = presented.partition(" ")
    if scheme.lower() != "bearer" or not space:  # the scheme is case-insensitive
        return "malformed authorization header"
    if not expected or not hmac.compare_digest(credential.encode(), expected.encode()):
        return "invalid token"
    return None


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
