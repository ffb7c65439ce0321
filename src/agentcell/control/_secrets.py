"""Tenant secrets: sealing and opening values (AES-256-GCM), the key, and the files a cell gets.

Sealing is pure given the key: ``SecretBox(key).seal(tenant, name, value)`` returns
``nonce || ciphertext+tag`` with a fresh 96-bit random nonce, and the associated data
binds the blob to its tenant and secret name, so a row copied to another tenant or name
does not open. The key is 32 random bytes: ``AGENTCELL_SECRETS_KEY`` (base64) if set,
else ``<state_dir>/secrets.key``, created O_EXCL mode 0600 at first start and reused.

Delivery: before every start of an agent, its secrets are written as files into a host
directory on tmpfs (``/dev/shm/agentcell-<hash of state dir>/<tenant>/<cell>``, dir 0500
and files 0400, owned by the agent's uid:gid, each written atomically), which the agent
container gets as its only bind mount, read-only at ``/run/secrets``. Whether a
directory is on tmpfs is decided purely from ``/proc/self/mountinfo`` (``fs_type_at``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import secrets as pysecrets
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentcell.control._store import AuditRecord, SecretRow, Store
from agentcell.errors import (
    ConfigError,
    ConflictError,
    InputError,
    NotFoundError,
    RuntimeDriverError,
)
from agentcell.plan import CellKey
from agentcell.runtime.incell.battery_a import MountEntry, parse_mountinfo
from agentcell.spec import NAME_PATTERN

__all__ = [
    "KEY_ENV",
    "KEY_FILE",
    "MAX_SECRET_BYTES",
    "SECRETS_DIR_ENV",
    "SecretBox",
    "SecretFiles",
    "SecretOpenError",
    "Secrets",
    "check_secret",
    "check_tmpfs",
    "default_secrets_dir",
    "fs_type_at",
    "key_from_env",
    "load_key",
]

KEY_FILE = "secrets.key"
KEY_ENV = "AGENTCELL_SECRETS_KEY"
SECRETS_DIR_ENV = "AGENTCELL_SECRETS_DIR"
MAX_SECRET_BYTES = 64 * 1024
_NONCE = 12
_FORMAT = b"\x01"
"""First byte of every sealed blob: the format (AES-256-GCM, 96-bit nonce)."""


class SecretOpenError(Exception):
    """A sealed value did not open: wrong key, tampered, or bound to another tenant/name."""


class SecretBox:
    """Seals and opens secret values with one 32-byte key. Pure: no IO."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"a secrets key is 32 bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @staticmethod
    def _aad(tenant: str, name: str) -> bytes:
        # Names follow the spec's Name rule (no '/'), so this joins unambiguously.
        return f"agentcell-secret/v1/{tenant}/{name}".encode()

    def seal(self, tenant: str, name: str, value: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _FORMAT + nonce + self._aead.encrypt(nonce, value, self._aad(tenant, name))

    def open(self, tenant: str, name: str, blob: bytes) -> bytes:
        if len(blob) < 1 + _NONCE + 16 or blob[:1] != _FORMAT:
            raise SecretOpenError(f"secret {tenant}/{name}: not a sealed value of this format")
        nonce, body = blob[1 : 1 + _NONCE], blob[1 + _NONCE :]
        try:
            return self._aead.decrypt(nonce, body, self._aad(tenant, name))
        except InvalidTag:
            raise SecretOpenError(
                f"secret {tenant}/{name} does not open: another key, altered, "
                "or sealed for another tenant or name"
            ) from None


def key_from_env(environ: Mapping[str, str]) -> bytes | None:
    """The key ``AGENTCELL_SECRETS_KEY`` gives (base64 of 32 bytes), None if it is unset."""
    text = environ.get(KEY_ENV)
    if text is None:
        return None
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            f"{KEY_ENV} must be the base64 of 32 random bytes (44 characters, e.g. from "
            "'head -c 32 /dev/urandom | base64'); the value given is not"
        )
    return key


def load_key(state_dir: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """The secrets key: from ``AGENTCELL_SECRETS_KEY`` if set, else the key file in
    ``state_dir``, created (O_EXCL, mode 0600) when missing. ConfigError if bad."""
    key = key_from_env(os.environ if environ is None else environ)
    if key is not None:
        return key
    path = state_dir / KEY_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            os.write(fd, pysecrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
    data = path.read_bytes()
    if len(data) != 32:
        raise ConfigError(
            f"the secrets key {path} holds {len(data)} bytes, not 32; restore it from a backup "
            f"(without it stored secrets cannot be opened) or set {KEY_ENV}"
        )
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"the secrets key {path} is readable by others; chmod 600 it")
    return data


def default_secrets_dir(state_dir: Path) -> Path:
    """``/dev/shm/agentcell-<first 12 hex of sha256(state_dir)>``: one per control plane."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/dev/shm") / f"agentcell-{digest}"  # noqa: S108 (tmpfs on purpose)


def fs_type_at(path: str, entries: Iterable[MountEntry]) -> str:
    """The filesystem type of the mount holding ``path`` (absolute, resolved): the entry with
    the longest mount point that is ``path`` or above it; the last such one wins (a later
    mount on the same point hides the earlier). "" if no entry holds it."""
    best: MountEntry | None = None
    for m in entries:
        mp = m.mount_point.rstrip("/") or "/"
        if (mp in (path, "/") or path.startswith(mp + "/")) and (
            best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/")
        ):
            best = m
    return best.fstype if best is not None else ""


def check_tmpfs(path: Path, mountinfo: str) -> None:
    """ConfigError unless ``path`` (or its nearest existing parent) is on tmpfs."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    fs = fs_type_at(str(probe.resolve()), parse_mountinfo(mountinfo))
    if fs != "tmpfs":
        raise ConfigError(
            f"the secrets directory {path} is on {fs or 'an unknown filesystem'}, not tmpfs: "
            "secret files must never reach a disk. Give --secrets-dir (or "
            f"{SECRETS_DIR_ENV}) a directory on tmpfs, e.g. under /dev/shm"
        )


class SecretFiles:
    """The host side of delivery: one directory per cell under ``root`` (on tmpfs).

    ``values(key)`` returns what the cell gets now: (uid, gid, {name: value}), or None when
    the cell lists no secrets. Implements ``runtime.SecretMounts``.
    """

    def __init__(
        self,
        root: Path,
        values: Callable[[CellKey], tuple[int, int, dict[str, bytes]] | None],
    ) -> None:
        self.root = root
        self._values = values

    def directory(self, key: CellKey) -> str:
        return str(self.root / key[0] / key[1])

    def prepare(self, *, create: bool = False) -> None:
        """Check the root (made, mode 0700, when ``create``): refuse one that is a link or
        someone else's. It is made only when a cell first needs it."""
        if create:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            st = self.root.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise ConfigError(
                f"the secrets directory {self.root} exists and is not a directory of this "
                "user (a link, or made by someone else); remove it or choose another"
            )
        os.chmod(self.root, 0o700)

    def close(self) -> None:
        """Remove the root if no cell has files in it (the plane stops)."""
        with contextlib.suppress(OSError):
            self.root.rmdir()

    def write(self, key: CellKey) -> str | None:
        """(Re)write the cell's files; returns the directory, or None if it has no secrets."""
        found = self._values(key)
        if found is None:
            self.remove(key)
            return None
        uid, gid, files = found
        try:
            self.prepare(create=True)
            write_files(Path(self.directory(key)), files, uid, gid)
        except (OSError, ConfigError) as e:
            raise RuntimeDriverError(
                f"cannot write the secret files of {key[0]}/{key[1]} into "
                f"{self.directory(key)}: {getattr(e, 'strerror', None) or e}"
            ) from None
        return self.directory(key)

    def remove(self, key: CellKey) -> None:
        cell = Path(self.directory(key))
        if cell.exists():
            shutil.rmtree(cell, ignore_errors=True)
        with contextlib.suppress(OSError):  # the tenant's directory, once empty
            cell.parent.rmdir()


def write_files(directory: Path, files: Mapping[str, bytes], uid: int, gid: int) -> None:
    """Make ``directory`` hold exactly ``files``: dir 0500 and files 0400, owned by uid:gid,
    each written to a temporary name and renamed into place; stale files removed."""
    # Parents stay root's and closed: the engine (root) resolves the bind, the agent sees
    # only its own directory.
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o500, exist_ok=True)
    os.chown(directory, uid, gid)
    os.chmod(directory, 0o500)
    for name, value in files.items():
        tmp = directory / f".{name}.{pysecrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o400)
            view = memoryview(value)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, directory / name)
    for entry in directory.iterdir():
        if entry.name not in files:
            entry.unlink(missing_ok=True)


class Secrets:
    """The secrets service the API calls: set, list and remove a tenant's secrets, and the
    values a cell gets at start. Values are write-only: nothing here returns one to a
    caller, and no audit record or error message carries one."""

    def __init__(self, store: Store, box: SecretBox) -> None:
        self.store = store
        self.box = box

    def _tenant(self, tenant: str) -> None:
        if self.store.tenant(tenant) is None:
            raise NotFoundError(f"no tenant {tenant!r}")

    def users(self, tenant: str) -> dict[str, list[str]]:
        """Secret name -> the cells (not being removed) that list it, sorted."""
        out: dict[str, list[str]] = {}
        for key, want in sorted(self.store.desired().items()):
            if key[0] == tenant and not want.deleted:
                for name in want.agent.spec.secrets:
                    out.setdefault(name, []).append(key[1])
        return out

    def set(self, tenant: str, name: str, value: bytes, actor: str) -> dict[str, Any]:
        """Store (or rotate) a secret; returns its name, version and times (never the value)."""
        self._tenant(tenant)
        check_secret(name, value)
        row = self.store.put_secret(tenant, name, self.box.seal(tenant, name, value))
        reason = "secret set" if row.version == 1 else "secret rotated"
        self.store.audit(
            AuditRecord(
                tenant, "", actor, "secret", "allow", reason, {"name": name, "version": row.version}
            )
        )
        return _row_view(row, self.users(tenant).get(name, []))

    def listing(self, tenant: str) -> list[dict[str, Any]]:
        self._tenant(tenant)
        users = self.users(tenant)
        return [_row_view(r, users.get(r.name, [])) for r in self.store.secrets(tenant)]

    def remove(self, tenant: str, name: str, actor: str) -> None:
        self._tenant(tenant)
        if self.store.secret(tenant, name) is None:
            raise NotFoundError(f"tenant {tenant!r} has no secret {name!r}")
        cells = self.users(tenant).get(name, [])
        if cells:
            raise ConflictError(
                f"secret {name!r} is used by cell(s) {', '.join(cells)} of tenant {tenant!r}; "
                "remove it from their spec.secrets (or remove the cells) first"
            )
        self._delete(tenant, name, actor, {})

    def forget_tenant(self, tenant: str, actor: str) -> None:
        """Remove every secret of a tenant that is gone (one audit record each)."""
        for row in self.store.secrets(tenant):
            self._delete(tenant, row.name, actor, {"with": "tenant"})

    def _delete(self, tenant: str, name: str, actor: str, extra: dict[str, str]) -> None:
        version = self.store.delete_secret(tenant, name)
        details = {"name": name, "version": version, **extra}
        self.store.audit(
            AuditRecord(tenant, "", actor, "secret", "allow", "secret removed", details)
        )

    def missing(self, tenant: str, names: Iterable[str]) -> list[str]:
        """Of ``names``, those the tenant has no secret for."""
        have = {r.name for r in self.store.secrets(tenant)}
        return [n for n in names if n not in have]

    def values(self, key: CellKey) -> tuple[int, int, dict[str, bytes]] | None:
        """What the cell's agent gets now: (uid, gid, {name: value}); None if it lists none."""
        want = self.store.cell(key)
        if want is None or not want.agent.spec.secrets:
            return None
        uid, gid = (int(x) for x in want.agent.spec.user.split(":"))
        files: dict[str, bytes] = {}
        versions: dict[str, int] = {}
        for name in want.agent.spec.secrets:
            row = self.store.secret(key[0], name)
            if row is None:
                raise RuntimeDriverError(
                    f"secret {name!r} of tenant {key[0]!r} does not exist; set it with "
                    f"'agentcell secret set {key[0]} {name}'"
                )
            try:
                files[name] = self.box.open(key[0], name, row.sealed)
            except SecretOpenError as e:
                raise RuntimeDriverError(str(e)) from None
            versions[name] = row.version
        self.store.audit(
            AuditRecord(
                *key,
                "reconciler",
                "secret",
                "allow",
                "secret files written",
                {"versions": versions},
            )
        )
        return uid, gid, files


def check_secret(name: str, value: bytes) -> None:
    """InputError naming what is wrong with a secret's name or value (never the value)."""
    if not re.match(NAME_PATTERN, name):
        raise InputError(
            f"{name!r} is not a secret name: lowercase letters, digits and '-', 1 to 40 "
            "characters, starting and ending with a letter or digit"
        )
    if not value:
        raise InputError(f"secret {name!r}: the value is empty; give 1 to {MAX_SECRET_BYTES} bytes")
    if len(value) > MAX_SECRET_BYTES:
        raise InputError(
            f"secret {name!r}: the value is {len(value)} bytes; at most {MAX_SECRET_BYTES} "
            "(64 KiB) are allowed"
        )


def _row_view(row: SecretRow, cells: list[str]) -> dict[str, Any]:
    return {
        "tenant": row.tenant,
        "name": row.name,
        "version": row.version,
        "created": row.created,
        "updated": row.updated,
        "cells": cells,
    }
