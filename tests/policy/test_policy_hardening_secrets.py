"""The secrets bind: the one host mount an agent container may have.

``container_body`` adds it (read-only, at /run/secrets) only when the agent lists secrets
and a directory is given; ``check_container`` allows exactly that bind and refuses any
other: a writable one, a wrong source or target, a second bind, a Binds entry.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_policy_hardening import HASH, NAMES, inspect_of, make_agent

from agentcell.policy import SECRETS_PATH, check_container, container_body, secrets_mount_ok

DIR = "/dev/shm/agentcell-0123456789ab/acme/researcher"
RULE = "no host mounts"


def body(secrets_dir: str | None = DIR, **spec: Any) -> dict[str, Any]:
    return container_body(
        make_agent(**spec), names=NAMES, spec_hash=HASH, generation=1, secrets_dir=secrets_dir
    )


def bind(
    source: str = DIR, destination: str = SECRETS_PATH, rw: bool = False, **more: Any
) -> dict[str, Any]:
    """A bind mount as the engine's inspect output reports it."""
    return {
        "Type": "bind",
        "Source": source,
        "Destination": destination,
        "Mode": "",
        "RW": rw,
        "Propagation": "rprivate",
        **more,
    }


def attrs_with(*mounts: dict[str, Any], binds: list[str] | None = None) -> dict[str, Any]:
    attrs = inspect_of(body(secrets_dir=None))  # the workspace volume only
    attrs["Mounts"] = [*attrs["Mounts"], *mounts]
    if binds is not None:
        attrs["HostConfig"]["Binds"] = binds
    return dict(attrs)


def mounts_ok(attrs: dict[str, Any], secrets_dir: str | None = DIR) -> bool:
    decisions = check_container(attrs, network=NAMES.network, secrets_dir=secrets_dir)
    found = [d for d in decisions if d.rule == RULE]
    assert len(found) == 1
    return found[0].allow


# --- container_body ------------------------------------------------------------------------


def test_an_agent_with_secrets_gets_the_directory_read_only_at_run_secrets() -> None:
    mounts = body(secrets=["api-key"])["HostConfig"]["Mounts"]
    assert mounts[-1] == {
        "Type": "bind",
        "Source": DIR,
        "Target": SECRETS_PATH,
        "ReadOnly": True,
        "BindOptions": {"Propagation": "rprivate"},
    }
    assert [m["Type"] for m in mounts] == ["volume", "bind"]


@pytest.mark.parametrize(
    ("secrets_dir", "spec"),
    [(DIR, {}), (None, {"secrets": ["api-key"]})],
    ids=["no secrets listed", "no directory given"],
)
def test_no_bind_without_secrets_or_directory(secrets_dir: str | None, spec: Any) -> None:
    mounts = body(secrets_dir=secrets_dir, **spec)["HostConfig"]["Mounts"]
    assert all(m["Type"] != "bind" for m in mounts)
    assert body(secrets_dir=secrets_dir, **spec)["HostConfig"]["Binds"] == []


def test_secrets_alone_do_not_make_the_workspace_the_working_dir() -> None:
    b = body(secrets=["api-key"], workspace={"access": "none"})
    assert [m["Target"] for m in b["HostConfig"]["Mounts"]] == [SECRETS_PATH]
    assert b["WorkingDir"] == ""


# --- check_container -----------------------------------------------------------------------

ROWS: list[tuple[str, dict[str, Any], bool]] = [
    ("no bind at all is fine", attrs_with(), True),
    ("the secrets directory, read-only, at /run/secrets: allowed", attrs_with(bind()), True),
    ("the secrets bind written read-write: refused", attrs_with(bind(rw=True)), False),
    ("another host path at /run/secrets: refused", attrs_with(bind(source="/etc")), False),
    (
        "another cell's secrets directory: refused",
        attrs_with(bind(source=DIR.replace("researcher", "other"))),
        False,
    ),
    (
        "a parent of the secrets directory: refused",
        attrs_with(bind(source=DIR.rsplit("/", 1)[0])),
        False,
    ),
    ("the secrets directory elsewhere: refused", attrs_with(bind(destination="/run")), False),
    (
        "the secrets directory at a trailing-slash target: refused",
        attrs_with(bind(destination="/run/secrets/")),
        False,
    ),
    (
        "a second bind beside the secrets one: refused",
        attrs_with(bind(), bind(source="/var/run/docker.sock", destination="/run/d.sock")),
        False,
    ),
    (
        "the same bind twice: refused",
        attrs_with(bind(), bind()),
        False,
    ),
    (
        "a bind propagating mounts to or from the host: refused",
        attrs_with(bind(Propagation="rshared")),
        False,
    ),
    (
        "a Binds entry, even of the directory: refused",
        attrs_with(binds=[f"{DIR}:/run/secrets:ro"]),
        False,
    ),
    ("a mount of an unknown type: refused", attrs_with(bind(Type="npipe")), False),
]


@pytest.mark.parametrize(("attrs", "ok"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_only_the_cells_own_read_only_secrets_bind_is_allowed(
    attrs: dict[str, Any], ok: bool
) -> None:
    assert mounts_ok(attrs) is ok


def test_without_a_secrets_directory_every_bind_is_refused() -> None:
    assert mounts_ok(attrs_with(bind()), secrets_dir=None) is False
    assert mounts_ok(attrs_with(), secrets_dir=None) is True


def test_a_relative_secrets_directory_never_matches() -> None:
    assert not secrets_mount_ok(bind(source="shm/x"), "shm/x")


PATHS = st.sampled_from(
    [DIR, DIR + "/", "/", "/etc", "/dev/shm", DIR.rsplit("/", 1)[0], "/var/run/docker.sock"]
) | st.text(alphabet="/abcdefgh.-", min_size=0, max_size=30)


@given(
    source=PATHS,
    destination=st.sampled_from([SECRETS_PATH, "/run", "/", "/run/secrets/x", "/workspace"])
    | st.text(alphabet="/abcrunsecrt", max_size=20),
    rw=st.booleans(),
    kind=st.sampled_from(["bind", "volume", "tmpfs", "npipe", ""]),
    propagation=st.sampled_from(["", "rprivate", "private", "rshared", "shared", "rslave"]),
)
def test_property_a_bind_is_allowed_only_if_it_is_exactly_the_secrets_mount(
    source: str, destination: str, rw: bool, kind: str, propagation: str
) -> None:
    mount = bind(source, destination, rw, Type=kind, Propagation=propagation)
    attrs = attrs_with(copy.deepcopy(mount))
    exact = (
        kind == "bind"
        and source == DIR
        and destination == SECRETS_PATH
        and not rw
        and propagation in ("", "rprivate", "private")
    )
    if kind in ("volume", "tmpfs"):
        return  # not a host path: judged by the other rules
    assert mounts_ok(attrs) is exact
