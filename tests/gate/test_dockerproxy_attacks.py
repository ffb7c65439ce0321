"""ATTACKS.md part C through the live proxy: each refused on the IO path (real engine).

The pure layer's tables cover the combinatorics; these rows prove the sidecar asks it,
on versioned and unversioned paths, and that nothing refused reaches the engine.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from test_dockerproxy_support import (
    ENGINE,
    IMAGE,
    Proxy,
    World,
    docker,
    live_world,
)

pytestmark = pytest.mark.integration

VERSIONS = ("", "/v1.41")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self) -> None:
        super().__init__("docker", timeout=30)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(ENGINE)


def engine(method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """Ask the engine directly (setup and checks only)."""
    conn = _UnixConnection()
    raw = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if raw is not None else {}
    conn.request(method, path, body=raw, headers=headers)
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, json.loads(data) if data else None


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    yield from live_world()


@pytest.fixture(scope="module")
def proxy(world: World) -> Proxy:
    return world.proxy("atk", AGENTCELL_LIMIT_CONTAINERS="10", AGENTCELL_LIMIT_MEMORY="4g")


@pytest.fixture(scope="module")
def foreign(world: World) -> dict[str, str]:
    """Foreign containers: no owner labels, another cell, another tenant (same cell name)."""
    t = world.tenant
    return {
        "plain": world.foreign(f"{t}-plain"),
        "other-cell": world.foreign(
            f"{t}-othercell",
            f"agentcell.tenant={t}",
            "agentcell.cell=other",
            "agentcell.role=child",
        ),
        "other-tenant": world.foreign(
            f"{t}-othertenant",
            f"agentcell.tenant={t}x",
            "agentcell.cell=atk",
            "agentcell.role=child",
        ),
        "cell-agent": world.foreign(
            f"{t}-agent", f"agentcell.tenant={t}", "agentcell.cell=atk", "agentcell.role=agent"
        ),
        "stopped": world.foreign(f"{t}-stopped", start=False),
    }


@pytest.fixture(scope="module")
def own(proxy: Proxy) -> str:
    rc, out = proxy.docker("run", "-d", "--name", f"{proxy.tenant}-own", IMAGE)
    assert rc == 0, out
    return str(out).strip()


def _children(proxy: Proxy) -> set[str]:
    out = docker("ps", "-aq", "--no-trunc", "--filter", f"label=agentcell.tenant={proxy.tenant}")
    return set(out.split())


# -- C1: path tricks --------------------------------------------------------------------------

PATHS = [
    ("GET", "/v%31.41/containers/json"),
    ("POST", "/containers/json/../create"),
    ("GET", "/containers/%2e%2e/json"),
    ("GET", "/containers%2Fjson"),
    ("GET", "/containers/%252e%252e/json"),
    ("GET", "/V1.41/containers/json"),
    ("GET", "/containers/json%00"),
    ("GET", "/containers/json;x=1"),
    ("GET", "/containers/json/"),
    ("GET", "{v}/containers//json"),
    ("GET", "{v}/containers/./json"),
    ("POST", "{v}/containers/create?name=a&name=b"),
    ("POST", "{v}/containers/create?hostconfig=x"),
    ("GET", "http://docker{v}/containers/json"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("method", "target"), PATHS)
def test_c1_path_tricks_refused(proxy: Proxy, version: str, method: str, target: str) -> None:
    target = target.replace("{v}", version) if "{v}" in target else version + target
    before = _children(proxy)
    body = json.dumps({"Image": IMAGE}).encode() if method == "POST" else None
    reply = proxy.request(method, target, body)
    assert reply.status == 403, (target, reply)
    assert reply.json()["message"].startswith("agentcell docker proxy: ")
    assert _children(proxy) == before


# -- C2: JSON parser differentials ------------------------------------------------------------

BODIES = [
    ('{"Image":"%s","hostconfig":{"privileged":true}}', "privileged"),
    ('{"Image":"%s","HostConfig":{"Privileged":false,"Privileged":true}}', "duplicate key"),
    ('{"Image":"%s","HostConfig":{"Privileged":false,"privileged":true}}', "duplicate key"),
    ('{"Image":"%s","HostConfig":{"\\u0050rivileged":true}}', "privileged"),
    ('{"Image":"%s","HostConfig":{"Privileged":true}}', "privileged"),
    ('{"Image":"%s"}{"HostConfig":{"Privileged":true}}', "trailing data"),
    ('{"Image":"%s","HostConfig":{"Privileged":1}}', "wrong type"),
    ('{"Image":"%s","Privileged":true}', "outside HostConfig"),
    ('{"Image":"%s","FutureField":1}', "unknown field"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("template", "reason"), BODIES)
def test_c2_json_differentials_refused(
    proxy: Proxy, version: str, template: str, reason: str
) -> None:
    before = _children(proxy)
    reply = proxy.create((template % IMAGE).encode(), version)
    assert reply.status in (400, 403), reply
    assert reason in reply.json()["message"]
    assert _children(proxy) == before


# -- C3: framing ------------------------------------------------------------------------------


def _create_head(extra: str) -> bytes:
    return (
        f"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n{extra}"
        "Content-Type: application/json\r\n\r\n"
    ).encode()


def test_c3_framing_refused(proxy: Proxy) -> None:
    before = _children(proxy)
    evil = b'{"Image":"%s","HostConfig":{"Privileged":true}}' % IMAGE.encode()
    fine = b'{"Image":"%s"}' % IMAGE.encode()
    cases = {
        "cl and te": _create_head(f"Content-Length: {len(fine)}\r\nTransfer-Encoding: chunked\r\n")
        + b"%x\r\n" % len(evil)
        + evil
        + b"\r\n0\r\n\r\n",
        "duplicate cl": _create_head(f"Content-Length: {len(fine)}\r\n" * 2) + fine,
        "cl list": _create_head(f"Content-Length: {len(fine)}, {len(fine)}\r\n") + fine,
        "cl 0 with a body": _create_head("Content-Length: 0\r\n") + evil,
        "over 1 MiB": _create_head(f"Content-Length: {2**20 + 1}\r\n") + b" " * (2**20 + 1),
        "chunked over 1 MiB": _create_head("Transfer-Encoding: chunked\r\n")
        + (b"100000\r\n" + b" " * 0x100000 + b"\r\n") * 2
        + b"0\r\n\r\n",
        "te not chunked": _create_head("Transfer-Encoding: gzip, chunked\r\n") + fine,
        "body on a bodiless route": (
            b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\nContent-Length: 5\r\n\r\nhello"
        ),
    }
    for name, raw in cases.items():
        reply = proxy.send(raw)
        assert 400 <= reply.status < 500 or reply.status == 501, (name, reply)
    assert _children(proxy) == before


def test_c3_chunked_and_content_type_variants_decoded_not_trusted(proxy: Proxy) -> None:
    evil = b'{"Image":"%s","HostConfig":{"Privileged":true}}' % IMAGE.encode()
    for content_type in ("text/plain", "application/json; charset=utf-16", "application/x-tar"):
        raw = (
            "POST /containers/create HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(evil), evil)
        reply = proxy.send(raw)
        assert reply.status == 403 and "privileged" in reply.json()["message"], reply
    fine = b'{"Image":"%s","Cmd":["true"]}' % IMAGE.encode()
    raw = (
        b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(fine), fine)
    )
    reply = proxy.send(raw)
    assert reply.status == 201, reply
    proxy.request("DELETE", f"/containers/{reply.json()['Id']}?force=1")


def test_c3_pipelined_requests_answered_in_order(proxy: Proxy, foreign: dict[str, str]) -> None:
    raw = (
        "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"
        f"GET /v1.41/containers/{foreign['plain']}/json HTTP/1.1\r\nHost: docker\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    first, second = data.find(b"HTTP/1.1 200"), data.find(b"HTTP/1.1 404")
    assert 0 == first < second, data
    missing = {"message": f"No such container: {foreign['plain']}"}
    assert data[second:].endswith(json.dumps(missing).encode()), data


# -- C4, C5, C8: create bodies that cannot be made safe --------------------------------------

HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("bind /", {"HostConfig": {"Binds": ["/:/host"]}}, "binds not allowed"),
    ("bind socket", {"HostConfig": {"Binds": [f"{ENGINE}:/s"]}}, "binds not allowed"),
    (
        "mount bind",
        {"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}},
        "mount type not allowed",
    ),
    (
        "volume device",
        {
            "HostConfig": {
                "Mounts": [
                    {
                        "Type": "volume",
                        "Source": "v1",
                        "Target": "/v",
                        "VolumeOptions": {
                            "DriverConfig": {
                                "Name": "local",
                                "Options": {"type": "none", "o": "bind", "device": "/"},
                            }
                        },
                    }
                ]
            }
        },
        "volume driver not allowed",
    ),
    ("volumes from", {"HostConfig": {"VolumesFrom": ["FOREIGN"]}}, "volumes from"),
    ("privileged", {"HostConfig": {"Privileged": True}}, "privileged"),
    ("net host", {"HostConfig": {"NetworkMode": "host"}}, "network not allowed"),
    ("net foreign", {"HostConfig": {"NetworkMode": "container:FOREIGN"}}, "network not allowed"),
    ("net bridge", {"HostConfig": {"NetworkMode": "bridge"}}, "network not allowed"),
    (
        "endpoint other",
        {"NetworkingConfig": {"EndpointsConfig": {"bridge": {}}}},
        "network not allowed",
    ),
    ("pid host", {"HostConfig": {"PidMode": "host"}}, "host or foreign namespace"),
    ("pid foreign", {"HostConfig": {"PidMode": "container:FOREIGN"}}, "namespace"),
    ("ipc host", {"HostConfig": {"IpcMode": "host"}}, "namespace"),
    ("uts host", {"HostConfig": {"UTSMode": "host"}}, "namespace"),
    ("userns host", {"HostConfig": {"UsernsMode": "host"}}, "namespace"),
    ("cgroupns host", {"HostConfig": {"CgroupnsMode": "host"}}, "namespace"),
    ("cap add", {"HostConfig": {"CapAdd": ["SYS_ADMIN"]}}, "capabilities added"),
    (
        "devices",
        {
            "HostConfig": {
                "Devices": [
                    {
                        "PathOnHost": "/dev/mem",
                        "PathInContainer": "/dev/mem",
                        "CgroupPermissions": "rwm",
                    }
                ]
            }
        },
        "devices not allowed",
    ),
    ("device rules", {"HostConfig": {"DeviceCgroupRules": ["a *:* rwm"]}}, "devices"),
    (
        "device requests",
        {"HostConfig": {"DeviceRequests": [{"Driver": "nvidia", "Count": -1}]}},
        "devices",
    ),
    ("seccomp off", {"HostConfig": {"SecurityOpt": ["seccomp=unconfined"]}}, "security option"),
    ("label off", {"HostConfig": {"SecurityOpt": ["label=disable"]}}, "security option"),
    ("sysctls", {"HostConfig": {"Sysctls": {"net.ipv4.ip_forward": "1"}}}, "sysctls"),
    ("cgroup parent", {"HostConfig": {"CgroupParent": "/"}}, "cgroup parent"),
    ("runtime", {"HostConfig": {"Runtime": "kata"}}, "runtime not allowed"),
    ("ports", {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}}, "ports"),
    ("publish all", {"HostConfig": {"PublishAllPorts": True}}, "ports"),
    ("root user", {"User": "0"}, "user not allowed"),
    ("named root", {"User": "root"}, "user not allowed"),
    ("owner label", {"Labels": {"agentcell.cell": "other"}}, "reserved label"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "extra", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_c4_c5_c8_hostile_create_refused(
    proxy: Proxy,
    foreign: dict[str, str],
    version: str,
    name: str,
    extra: dict[str, Any],
    reason: str,
) -> None:
    before = _children(proxy)
    text = json.dumps({"Image": IMAGE, **extra}).replace("FOREIGN", foreign["plain"])
    reply = proxy.create(text.encode(), version)
    assert reply.status == 403, (name, reply)
    assert reason in reply.json()["message"], (name, reply)
    assert _children(proxy) == before


@pytest.mark.parametrize("version", VERSIONS)
def test_c4_volume_create_with_bind_options_refused(proxy: Proxy, version: str) -> None:
    body = {"Name": f"{proxy.tenant}-v", "DriverOpts": {"type": "none", "o": "bind", "device": "/"}}
    reply = proxy.request("POST", f"{version}/volumes/create", json.dumps(body).encode())
    assert reply.status == 403 and "volume driver not allowed" in reply.json()["message"]
    assert engine("GET", f"/volumes/{proxy.tenant}-v")[0] == 404


@pytest.mark.parametrize("version", VERSIONS)
def test_c6_a_volume_create_naming_a_foreign_volume_shows_nothing_of_it(
    proxy: Proxy, version: str
) -> None:
    """The engine answers a create of an existing name with that volume, whoever made it."""
    name = f"{proxy.tenant}-theirs{version.replace('/', '-').replace('.', '')}"
    docker(
        "volume", "create", "--label", f"agentcell.test-run={proxy.tenant}",
        "--label", f"agentcell.tenant={proxy.tenant}x", "--label", "agentcell.cell=atk",
        "--label", "agentcell.role=workspace", name,
    )  # fmt: skip
    reply = proxy.request("POST", f"{version}/volumes/create", json.dumps({"Name": name}).encode())
    assert reply.status == 409, reply
    assert reply.json() == {"message": f"agentcell docker proxy: name in use: {name}"}
    assert b"Mountpoint" not in reply.body and b"tenant" not in reply.body
    record = proxy.record(
        lambda r: r["path"] == f"{version}/volumes/create" and r["reason"] == "name in use",
        "the refusal",
    )
    assert (record["decision"], record["status"], record["rule"]) == ("deny", 409, name)
    labels = engine("GET", f"/volumes/{name}")[1]["Labels"]
    assert labels["agentcell.tenant"] == f"{proxy.tenant}x"  # unchanged, still theirs
    again = proxy.request("POST", f"{version}/volumes/create", json.dumps({"Name": name}).encode())
    assert again.status == 409  # asking again changes nothing
    mine = f"{proxy.tenant}-mine{version.replace('/', '-').replace('.', '')}"
    made = proxy.request("POST", f"{version}/volumes/create", json.dumps({"Name": mine}).encode())
    assert made.status == 201 and made.json()["Name"] == mine


@pytest.mark.parametrize("version", VERSIONS)
def test_c6_a_name_taken_by_a_foreign_container_does_not_reveal_its_id(
    proxy: Proxy, foreign: dict[str, str], own: str, version: str
) -> None:
    theirs = foreign["other-tenant"]
    name = engine("GET", f"/containers/{theirs}/json")[1]["Name"].lstrip("/")
    made = proxy.request(
        "POST", f"{version}/containers/create?name={name}", json.dumps({"Image": IMAGE}).encode()
    )
    renamed = proxy.request("POST", f"{version}/containers/{own}/rename?name={name}")
    for reply in (made, renamed):
        assert reply.status == 409, reply
        assert "already in use" in reply.json()["message"]
        assert theirs[:12].encode() not in reply.body, reply.body
    assert engine("GET", f"/containers/{own}/json")[1]["Name"] == f"/{proxy.tenant}-own"


@pytest.mark.parametrize("version", VERSIONS)
def test_c8_c9_endpoints_not_in_the_table_refused(proxy: Proxy, own: str, version: str) -> None:
    cases = [
        ("POST", "/networks/create", json.dumps({"Name": "x"}).encode()),
        ("POST", f"/networks/{proxy.network}/connect", json.dumps({"Container": own}).encode()),
        ("POST", f"/networks/{proxy.network}/disconnect", json.dumps({"Container": own}).encode()),
        ("DELETE", f"/networks/{proxy.network}", None),
        ("GET", "/system/df", None),
        ("POST", "/build", None),
        ("POST", "/images/create?fromImage=alpine", None),
        ("DELETE", f"/images/{IMAGE}", None),
        ("POST", f"/containers/{own}/update", json.dumps({"Memory": 1 << 40}).encode()),
        ("POST", f"/containers/{own}/commit", None),
        ("GET", f"/containers/{own}/attach/ws", None),
        ("GET", "/swarm", None),
        ("GET", "/plugins", None),
        ("POST", "/session", None),
        ("PATCH", "/containers/json", None),
    ]
    for method, path, body in cases:
        reply = proxy.request(method, version + path, body)
        assert reply.status == 403, (method, path, reply)
        assert "endpoint not allowed" in reply.json()["message"], (method, path, reply)
    assert engine("GET", f"/containers/{own}/json")[1]["HostConfig"]["Memory"] < 1 << 40


# -- C6: ownership ----------------------------------------------------------------------------


def _names(foreign: dict[str, str]) -> list[str]:
    out = []
    for cid in foreign.values():
        doc = engine("GET", f"/containers/{cid}/json")[1]
        out += [cid, cid[:12], doc["Name"].lstrip("/")]
    return out


OWNED_ACTIONS = [
    ("GET", "/containers/{x}/json", None),
    ("GET", "/containers/{x}/logs?stdout=1", None),
    ("GET", "/containers/{x}/archive?path=/etc/passwd", None),
    ("HEAD", "/containers/{x}/archive?path=/etc/passwd", None),
    ("GET", "/containers/{x}/export", None),
    ("GET", "/containers/{x}/top", None),
    ("POST", "/containers/{x}/exec", b'{"Cmd":["id"]}'),
    ("POST", "/containers/{x}/attach?stream=1&stdout=1", None),
    ("POST", "/containers/{x}/kill", None),
    ("POST", "/containers/{x}/stop", None),
    ("POST", "/containers/{x}/rename?name=stolen", None),
    ("DELETE", "/containers/{x}?force=1", None),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("method", "path", "body"), OWNED_ACTIONS)
def test_c6_foreign_containers_refused_by_id_prefix_and_name(
    proxy: Proxy,
    foreign: dict[str, str],
    version: str,
    method: str,
    path: str,
    body: bytes | None,
) -> None:
    for ident in _names(foreign):
        reply = proxy.request(method, version + path.replace("{x}", ident), body)
        assert reply.status == 404, (ident, reply)
        if method != "HEAD":
            assert reply.json() == {"message": f"No such container: {ident}"}
    for cid in foreign.values():
        state = engine("GET", f"/containers/{cid}/json")[1]["State"]
        assert state["Status"] in ("running", "created")


def test_c6_slash_name_and_missing_look_alike(proxy: Proxy, foreign: dict[str, str]) -> None:
    name = engine("GET", f"/containers/{foreign['plain']}/json")[1]["Name"].lstrip("/")
    for target in (f"/containers//{name}/json", f"/containers/%2F{name}/json"):
        assert proxy.request("GET", target).status == 403
    gone = proxy.request("GET", "/containers/no-such-container-here/json")
    theirs = proxy.request("GET", f"/containers/{name}/json")
    assert (gone.status, theirs.status) == (404, 404)
    assert gone.body.replace(b"no-such-container-here", b"X") == theirs.body.replace(
        name.encode(), b"X"
    )


def test_c6_foreign_exec_refused(proxy: Proxy, foreign: dict[str, str]) -> None:
    status, made = engine("POST", f"/containers/{foreign['plain']}/exec", {"Cmd": ["id"]})
    assert status == 201
    exec_id = made["Id"]
    for method, path, body in (
        ("GET", f"/exec/{exec_id}/json", None),
        ("POST", f"/exec/{exec_id}/start", b'{"Detach":true}'),
        ("POST", f"/exec/{exec_id}/resize?h=10&w=10", None),
    ):
        reply = proxy.request(method, path, body)
        assert reply.status == 404, (path, reply)
    assert engine("GET", f"/exec/{exec_id}/json")[1]["Running"] is False
    assert engine("GET", f"/exec/{exec_id}/json")[1]["Pid"] == 0


def test_c6_lists_events_and_prune_show_only_own(
    proxy: Proxy, foreign: dict[str, str], own: str
) -> None:
    since = int(time.time()) - 600
    theirs = set(foreign.values())
    for filters in ("", json.dumps({"label": ["agentcell.cell=other"]})):
        query = "?all=1" + (f"&filters={quote(filters, safe='')}" if filters else "")
        reply = proxy.request("GET", f"/containers/json{query}")
        assert reply.status == 200
        ids = {c["Id"] for c in reply.json()}
        assert not ids & theirs
        if not filters:
            assert own in ids
    rc, out = proxy.docker("ps", "-a", "--no-trunc", "-q")
    assert rc == 0 and set(out.split()) & theirs == set() and own in out.split()
    nets = proxy.request("GET", "/networks").json()
    assert [n["Name"] for n in nets] == [proxy.network]
    vols = proxy.request("GET", "/volumes").json()
    assert all(v["Labels"]["agentcell.cell"] == proxy.cell for v in vols["Volumes"])
    events = proxy.request("GET", f"/events?since={since}&until={int(time.time())}")
    assert events.status == 200
    seen = [json.loads(line) for line in events.body.splitlines() if line.strip()]
    assert seen, "the own child's events come through"
    assert all(e["Actor"]["Attributes"]["agentcell.cell"] == proxy.cell for e in seen)
    assert not {e["Actor"]["ID"] for e in seen} & theirs
    pruned = proxy.request("POST", "/containers/prune")
    assert pruned.status == 200
    assert engine("GET", f"/containers/{foreign['stopped']}/json")[0] == 200


def test_c6_name_request_forwards_the_checked_id(proxy: Proxy, own: str) -> None:
    name = f"{proxy.tenant}-own"
    reply = proxy.request("GET", f"/v1.41/containers/{name}/json")
    assert reply.status == 200 and reply.json()["Id"] == own
    record = proxy.record(lambda r: r["path"] == f"/v1.41/containers/{name}/json", name)
    assert record["object"] == own and record["decision"] == "allow"
