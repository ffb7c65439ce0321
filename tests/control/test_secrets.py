"""Secrets in the control plane: sealing, the key, the tmpfs check, the files, the service."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentcell.control._secrets import (
    KEY_ENV,
    MAX_SECRET_BYTES,
    SecretBox,
    SecretFiles,
    SecretOpenError,
    Secrets,
    check_tmpfs,
    default_secrets_dir,
    fs_type_at,
    load_key,
    write_files,
)
from agentcell.control._store import Store
from agentcell.errors import ConfigError, ConflictError, InputError, NotFoundError
from agentcell.plan import spec_hash
from agentcell.runtime.incell.battery_a import parse_mountinfo
from agentcell.spec import API_VERSION, Agent, Tenant

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))

# --- sealing ---------------------------------------------------------------------------------


def test_seal_then_open_round_trips() -> None:
    box = SecretBox(KEY)
    assert box.open("acme", "api-key", box.seal("acme", "api-key", b"s3cret")) == b"s3cret"


def test_each_seal_uses_a_fresh_nonce() -> None:
    box = SecretBox(KEY)
    value = b"a value long enough never to turn up by chance"
    a, b = box.seal("acme", "k", value), box.seal("acme", "k", value)
    assert a != b and a[1:13] != b[1:13]
    # The value is not stored in clear (one byte would be in 17 random ones 6% of the time).
    assert value[:16] not in a and value[-16:] not in a


@pytest.mark.parametrize(
    ("tenant", "name", "key"),
    [
        ("other", "api-key", KEY),
        ("acme", "db-pass", KEY),
        ("acme", "api-key", OTHER_KEY),
        ("acm", "e/api-key", KEY),
    ],
    ids=["copied to another tenant", "copied to another name", "another key", "shifted join"],
)
def test_a_blob_opens_only_for_its_tenant_name_and_key(tenant: str, name: str, key: bytes) -> None:
    blob = SecretBox(KEY).seal("acme", "api-key", b"value")
    with pytest.raises(SecretOpenError, match="does not open"):
        SecretBox(key).open(tenant, name, blob)


def test_tampered_or_truncated_blobs_do_not_open() -> None:
    box = SecretBox(KEY)
    blob = box.seal("acme", "k", b"value")
    for bad in (blob[:-1], blob[:5], b"\x02" + blob[1:], b""):
        with pytest.raises(SecretOpenError):
            box.open("acme", "k", bad)


@settings(max_examples=50)
@given(value=st.binary(min_size=1, max_size=256), flip=st.integers(min_value=0))
def test_property_any_flipped_bit_is_caught(value: bytes, flip: int) -> None:
    box = SecretBox(KEY)
    blob = bytearray(box.seal("acme", "k", value))
    assert box.open("acme", "k", bytes(blob)) == value
    i = flip % (len(blob) * 8)
    blob[i // 8] ^= 1 << (i % 8)
    with pytest.raises(SecretOpenError):
        box.open("acme", "k", bytes(blob))


def test_a_key_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox(b"short")


# --- the key ---------------------------------------------------------------------------------


def test_the_key_file_is_made_once_mode_0600_and_reused(tmp_path: Path) -> None:
    key = load_key(tmp_path, environ={})
    path = tmp_path / "secrets.key"
    assert len(key) == 32 and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(tmp_path, environ={}) == key


def test_a_key_file_readable_by_others_or_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    load_key(tmp_path, environ={})
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(tmp_path, environ={})
    path.write_bytes(b"x" * 31)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="31 bytes, not 32"):
        load_key(tmp_path, environ={})


def test_the_environment_key_wins_and_makes_no_file(tmp_path: Path) -> None:
    env = {KEY_ENV: base64.b64encode(OTHER_KEY).decode()}
    assert load_key(tmp_path, environ=env) == OTHER_KEY
    assert not (tmp_path / "secrets.key").exists()


@pytest.mark.parametrize(
    "value",
    ["", "not base64!", base64.b64encode(b"x" * 31).decode(), base64.b64encode(b"x" * 33).decode()],
    ids=["empty", "not base64", "31 bytes", "33 bytes"],
)
def test_a_bad_environment_key_is_a_clear_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{KEY_ENV} must be the base64 of 32 random bytes"):
        load_key(tmp_path, environ={KEY_ENV: value})


# --- where the files go: tmpfs only ----------------------------------------------------------

MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
25 22 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=100k
26 22 0:24 / /run rw,relatime - tmpfs tmpfs rw
27 26 8:2 / /run/disk rw,relatime - ext4 /dev/sdb1 rw
28 22 0:25 / /mnt/a\\040b rw - tmpfs tmpfs rw
29 22 8:3 / /dev/shmem rw - ext4 /dev/sdc1 rw
30 22 0:26 / /srv rw - tmpfs tmpfs rw
31 22 8:4 / /srv rw - xfs /dev/sdd1 rw
"""

FS_ROWS = [
    ("the tmpfs mount point itself", "/dev/shm", "tmpfs"),
    ("below a tmpfs", "/dev/shm/agentcell-abc/acme", "tmpfs"),
    ("the root filesystem", "/var/lib/agentcell", "ext4"),
    ("a disk mounted below a tmpfs", "/run/disk/x", "ext4"),
    ("a tmpfs above a disk's sibling", "/run/diskette", "tmpfs"),
    ("a name that only starts like a tmpfs mount point", "/dev/shmem/x", "ext4"),
    ("an escaped space in the mount point", "/mnt/a b/c", "tmpfs"),
    ("a later mount on the same point hides the earlier", "/srv/x", "xfs"),
    ("the root itself", "/", "ext4"),
]


@pytest.mark.parametrize(("path", "fs"), [r[1:] for r in FS_ROWS], ids=[r[0] for r in FS_ROWS])
def test_the_filesystem_holding_a_path(path: str, fs: str) -> None:
    assert fs_type_at(path, parse_mountinfo(MOUNTINFO)) == fs


def test_no_mount_holds_a_path_in_an_empty_table() -> None:
    assert fs_type_at("/x", []) == ""


def test_a_directory_not_on_tmpfs_is_refused_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"on ext4, not tmpfs.*--secrets-dir"):
        check_tmpfs(Path("/var/lib/agentcell/secrets"), MOUNTINFO)
    check_tmpfs(Path("/dev/shm/agentcell-x/not-yet-made"), MOUNTINFO)  # nearest parent counts


def test_the_default_directory_is_per_state_dir_under_dev_shm(tmp_path: Path) -> None:
    a, b = default_secrets_dir(tmp_path / "a"), default_secrets_dir(tmp_path / "b")
    assert a != b and a.parent == Path("/dev/shm") and a.name.startswith("agentcell-")
    assert len(a.name) == len("agentcell-") + 12


# --- the files -------------------------------------------------------------------------------


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_files_are_written_0400_in_a_0500_dir_owned_by_the_agent(tmp_path: Path) -> None:
    d = tmp_path / "acme" / "a"
    write_files(d, {"api-key": b"one", "db": b"\x00two\n"}, 4242, 4343)
    assert mode(d) == 0o500 and (d.stat().st_uid, d.stat().st_gid) == (4242, 4343)
    assert mode(d.parent) == 0o700
    for name, value in (("api-key", b"one"), ("db", b"\x00two\n")):
        f = d / name
        assert f.read_bytes() == value and mode(f) == 0o400
        assert (f.stat().st_uid, f.stat().st_gid) == (4242, 4343)


def test_rewriting_replaces_values_and_removes_stale_files(tmp_path: Path) -> None:
    d = tmp_path / "c"
    write_files(d, {"a": b"1", "b": b"2"}, os.getuid(), os.getgid())
    inode = (d / "a").stat().st_ino
    write_files(d, {"a": b"new"}, os.getuid(), os.getgid())
    assert sorted(p.name for p in d.iterdir()) == ["a"]
    assert (d / "a").read_bytes() == b"new"
    assert (d / "a").stat().st_ino != inode  # a new file renamed in, not rewritten in place


def test_the_root_must_be_our_own_directory_not_a_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "root"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="not a directory of this user"):
        SecretFiles(link, lambda key: None).prepare()
    real = tmp_path / "real"
    SecretFiles(real, lambda key: None).prepare()
    assert not real.exists()  # made only when a cell first needs it
    SecretFiles(real, lambda key: None).prepare(create=True)
    assert mode(real) == 0o700


def test_secret_files_write_and_remove_a_cells_directory(tmp_path: Path) -> None:
    values = {("acme", "a"): (os.getuid(), os.getgid(), {"k": b"v"})}
    files = SecretFiles(tmp_path / "root", values.get)
    files.prepare()
    assert files.write(("acme", "a")) == str(tmp_path / "root" / "acme" / "a")
    assert (tmp_path / "root" / "acme" / "a" / "k").read_bytes() == b"v"
    assert files.write(("acme", "b")) is None  # lists no secrets: no directory
    files.remove(("acme", "a"))
    assert not (tmp_path / "root" / "acme").exists()
    files.close()
    assert not (tmp_path / "root").exists()


# --- the service -----------------------------------------------------------------------------


def tenant(name: str) -> Tenant:
    return Tenant.model_validate(
        {"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": name}}
    )


def agent(tenant: str, name: str, *secrets: str) -> Agent:
    return Agent.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Agent",
            "metadata": {"name": name, "tenant": tenant},
            "spec": {"image": "agentcell/demo-agent:latest", "secrets": list(secrets)},
        }
    )


@pytest.fixture
def service(tmp_path: Path) -> Secrets:
    store = Store(tmp_path / "db")
    store.put_tenant(tenant("acme"))
    store.put_tenant(tenant("other"))
    return Secrets(store, SecretBox(KEY))


def test_set_rotate_list_and_remove_never_return_a_value(service: Secrets) -> None:
    first = service.set("acme", "api-key", b"v1-value", "admin")
    assert first["version"] == 1 and "v1-value" not in repr(first)
    second = service.set("acme", "api-key", b"v2-value", "admin")
    assert second["version"] == 2 and second["created"] == first["created"]
    assert [(s["name"], s["version"]) for s in service.listing("acme")] == [("api-key", 2)]
    assert service.listing("other") == []
    service.remove("acme", "api-key", "admin")
    assert service.listing("acme") == []
    trail = service.store.audit_records(tenant="acme", kind="secret")
    assert [(r.reason, r.details) for r in trail] == [
        ("secret set", {"name": "api-key", "version": 1}),
        ("secret rotated", {"name": "api-key", "version": 2}),
        ("secret removed", {"name": "api-key", "version": 2}),
    ]
    assert "value" not in repr(trail)


def test_the_store_holds_only_sealed_values(service: Secrets, tmp_path: Path) -> None:
    service.set("acme", "api-key", b"plain-text-marker", "admin")
    row = service.store.secret("acme", "api-key")
    assert row is not None and b"plain-text-marker" not in row.sealed
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("db*"))
    assert b"plain-text-marker" not in raw


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("API_KEY", b"v", "not a secret name"),
        ("a/b", b"v", "not a secret name"),
        ("x" * 41, b"v", "not a secret name"),
        ("k", b"", "the value is empty"),
        ("k", b"x" * (MAX_SECRET_BYTES + 1), "at most 65536"),
    ],
    ids=["capitals", "a slash", "too long a name", "empty value", "over 64 KiB"],
)
def test_bad_names_and_values_are_refused_and_nothing_stored(
    service: Secrets, name: str, value: bytes, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        service.set("acme", name, value, "admin")
    assert service.listing("acme") == []


def test_the_largest_value_is_accepted(service: Secrets) -> None:
    assert service.set("acme", "k", b"x" * MAX_SECRET_BYTES, "admin")["version"] == 1


def test_an_unknown_tenant_or_secret_is_not_found(service: Secrets) -> None:
    with pytest.raises(NotFoundError, match="no tenant 'nope'"):
        service.set("nope", "k", b"v", "admin")
    with pytest.raises(NotFoundError, match="no tenant"):
        service.listing("nope")
    with pytest.raises(NotFoundError, match="has no secret 'k'"):
        service.remove("acme", "k", "admin")


def test_a_secret_in_use_cannot_be_removed(service: Secrets) -> None:
    service.set("acme", "k", b"v", "admin")
    a = agent("acme", "bot", "k")
    service.store.put_cell(a, spec_hash(a), "10.0.0.0/27")
    assert service.listing("acme")[0]["cells"] == ["bot"]
    with pytest.raises(ConflictError, match="used by cell\\(s\\) bot of tenant 'acme'"):
        service.remove("acme", "k", "admin")
    service.store.mark_deleted(("acme", "bot"), keep_workspace=False)
    service.remove("acme", "k", "admin")  # a cell being removed no longer holds it


def test_a_cell_gets_its_own_tenants_values_and_owner(service: Secrets) -> None:
    service.set("acme", "k", b"acme-value", "admin")
    service.set("other", "k", b"other-value", "admin")
    for t in ("acme", "other"):
        a = agent(t, "bot", "k")
        service.store.put_cell(a, spec_hash(a), "10.0.0.0/27")
    assert service.values(("acme", "bot")) == (10001, 10001, {"k": b"acme-value"})
    assert service.values(("other", "bot")) == (10001, 10001, {"k": b"other-value"})
    assert service.missing("acme", ["k", "x", "y"]) == ["x", "y"]


def test_a_value_that_does_not_open_is_a_driver_error_without_the_value(service: Secrets) -> None:
    from agentcell.errors import RuntimeDriverError

    service.set("acme", "k", b"acme-value", "admin")
    a = agent("acme", "bot", "k")
    service.store.put_cell(a, spec_hash(a), "10.0.0.0/27")
    wrong = Secrets(service.store, SecretBox(OTHER_KEY))
    with pytest.raises(RuntimeDriverError, match="does not open") as e:
        wrong.values(("acme", "bot"))
    assert "acme-value" not in str(e.value)


def test_a_restart_request_counts_up_and_is_seen_in_the_desired_state(service: Secrets) -> None:
    a = agent("acme", "bot")
    service.store.put_cell(a, spec_hash(a), "10.0.0.0/27")
    assert service.store.desired()[("acme", "bot")].restart_request == 0
    assert service.store.request_restart(("acme", "bot")) == 1
    assert service.store.request_restart(("acme", "bot")) == 2
    assert service.store.desired()[("acme", "bot")].restart_request == 2
    st = service.store.set_status(("acme", "bot"), restart_honoured=2)
    assert service.store.status(("acme", "bot")).restart_honoured == st.restart_honoured == 2


def test_forgetting_a_tenant_removes_its_secrets_only(service: Secrets) -> None:
    service.set("acme", "k", b"v", "admin")
    service.set("other", "k", b"w", "admin")
    service.forget_tenant("acme", "admin")
    assert service.store.secrets("acme") == []
    assert [r.name for r in service.store.secrets("other")] == ["k"]
    last = service.store.audit_records(tenant="acme", kind="secret")[-1]
    assert (last.reason, last.details) == (
        "secret removed",
        {"name": "k", "version": 1, "with": "tenant"},
    )
