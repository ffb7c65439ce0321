"""The docker proxy's request decisions: path normalisation, the endpoint table, ownership.

``NORMALISE`` mirrors the decision order of ``normalise_path`` step by step (row ids start
with the step's number) and holds every ATTACKS.md C1 path trick, each on the unversioned
and the ``/v1.41`` path. ``REQUESTS`` mirrors ``decide_request``: every endpoint of the
table allowed, every endpoint the table leaves out denied (C8, C9), object names (C6).
``OWNERSHIP`` mirrors ``decide_ownership``. Then filters, events, info, and properties.
"""

from __future__ import annotations

import json
import posixpath
import string
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.policy import (
    API_REASONS,
    ENDPOINTS,
    LABEL_CELL,
    LABEL_ROLE,
    LABEL_TENANT,
    MAX_API_VERSION,
    BodyKind,
    Decision,
    Kind,
    Request,
    build_target,
    decide_created_volume,
    decide_ownership,
    decide_request,
    error_body,
    filter_event,
    filter_list,
    normalise_path,
    reserved_name,
    route,
    scope_filters,
    scrub_engine_error,
    scrub_info,
)

TENANT, CELL = "acme", "researcher"
CHILD = {LABEL_TENANT: TENANT, LABEL_CELL: CELL, LABEL_ROLE: "child"}
FULL_ID = "4f1c" + "0" * 60


def deny(reason: str) -> tuple[bool, str]:
    return (False, reason)


def ok(path_: str, version: str | None = None, **query: str) -> tuple[str, str | None, Any]:
    return (path_, version, {k: [v] for k, v in query.items()})


def both(name: str, suffix: str, expected: Any) -> list[Any]:
    """The row on the unversioned and the /v1.41 path (ATTACKS.md C: every case on both)."""
    versioned = expected
    if isinstance(expected, tuple) and len(expected) == 3:
        versioned = (expected[0], "1.41", expected[2])
    return [
        pytest.param(suffix, expected, id=f"{name} (unversioned)"),
        pytest.param("/v1.41" + suffix, versioned, id=f"{name} (/v1.41)"),
    ]


def row(name: str, target: str, expected: Any) -> Any:
    return pytest.param(target, expected, id=name)


NORMALISE = [
    # 1. the request-target
    *both(
        "1 a request-target over 8 KiB is too long",
        "/_ping?x=" + "a" * 8200,
        deny("request-target too long"),
    ),
    *both(
        "1 a space is not a request-target character",
        "/containers/json x",
        deny("invalid character in request-target"),
    ),
    *both(
        "1 a raw NUL is not a request-target character",
        "/containers/json\x00",
        deny("invalid character in request-target"),
    ),
    *both(
        "1 a raw non-ASCII letter is refused",
        "/containers/jsön",
        deny("invalid character in request-target"),
    ),
    row(
        "1 the absolute-form is not origin form",
        "http://localhost/containers/json",
        deny("request-target not in origin form"),
    ),
    row(
        "1 the absolute-form with a version is not origin form",
        "http://localhost/v1.41/containers/json",
        deny("request-target not in origin form"),
    ),
    row(
        "1 the authority-form is not origin form",
        "localhost:2375",
        deny("request-target not in origin form"),
    ),
    row("1 the asterisk-form is not origin form", "*", deny("request-target not in origin form")),
    row("1 an empty target is not origin form", "", deny("request-target not in origin form")),
    *both("1 a fragment is refused", "/containers/json#frag", deny("fragment in request-target")),
    *both(
        "1 a fragment hiding a path is refused",
        "/_ping#/../containers/create",
        deny("fragment in request-target"),
    ),
    # 2. percent-encoding in the path (ATTACKS.md C1)
    *both(
        "2 a malformed escape is refused", "/containers/json%zz", deny("invalid percent-encoding")
    ),
    *both(
        "2 a truncated escape is refused", "/containers/json%2", deny("invalid percent-encoding")
    ),
    *both(
        "2 %00 after the path is a control character",
        "/containers/json%00",
        deny("control character in path"),
    ),
    *both("2 %0a is a control character", "/containers/json%0a", deny("control character in path")),
    *both("2 %2F is an encoded slash", "/containers%2Fjson", deny("encoded slash in path")),
    *both("2 %2f is an encoded slash", "/containers%2fcreate", deny("encoded slash in path")),
    *both(
        "2 %2F before a name is an encoded slash",
        "/containers/%2Fforeign/json",
        deny("encoded slash in path"),
    ),
    *both(
        "2 %252e%252e is double encoding",
        "/containers/json/%252e%252e/create",
        deny("double encoding in path"),
    ),
    *both(
        "2 %25 alone is double encoding", "/containers/%25/json", deny("double encoding in path")
    ),
    *both(
        "2 %2e%2e is percent-encoding",
        "/containers/json/%2e%2e/create",
        deny("percent-encoding in path"),
    ),
    *both(
        "2 %2E%2E upper-case is percent-encoding",
        "/containers/json/%2E%2E/create",
        deny("percent-encoding in path"),
    ),
    *both(
        "2 an encoded letter is percent-encoding",
        "/containers/%6Aon/json",
        deny("percent-encoding in path"),
    ),
    row(
        "2 /v%31.41 (Tecnativa #1) is percent-encoding",
        "/v%31.41/containers/json",
        deny("percent-encoding in path"),
    ),
    row(
        "2 /%761.41 is percent-encoding",
        "/%761.41/containers/json",
        deny("percent-encoding in path"),
    ),
    # 3. characters
    *both(
        "3 ;x=1 after the path is a semicolon", "/containers/json;x=1", deny("semicolon in path")
    ),
    *both(
        "3 a semicolon in a name is a semicolon", "/containers/a;b/json", deny("semicolon in path")
    ),
    *both("3 a backslash is refused", "/containers\\json", deny("invalid character in path")),
    *both("3 a comma is refused", "/containers/a,b/json", deny("invalid character in path")),
    *both("3 a plus is refused", "/containers/a+b/json", deny("invalid character in path")),
    # 4. segments
    *both(
        "4 a double slash is an empty segment", "/containers//json", deny("empty segment in path")
    ),
    *both(
        "4 //name (docker inspect /name) is an empty segment",
        "/containers//foreign/json",
        deny("empty segment in path"),
    ),
    row(
        "4 a leading double slash is an empty segment",
        "//containers/json",
        deny("empty segment in path"),
    ),
    row(
        "4 a double slash after the version is an empty segment",
        "/v1.41//containers/json",
        deny("empty segment in path"),
    ),
    *both("4 a trailing slash is refused", "/containers/json/", deny("trailing slash in path")),
    *both(
        "4 a trailing slash on a name is refused",
        "/containers/child/json/",
        deny("trailing slash in path"),
    ),
    row(
        "4 a trailing slash after the version is refused", "/v1.41/", deny("trailing slash in path")
    ),
    *both(
        "4 /containers/json/../create is a dot segment",
        "/containers/json/../create",
        deny("dot segment in path"),
    ),
    *both("4 a single dot is a dot segment", "/containers/./json", deny("dot segment in path")),
    row(
        "4 .. over the version is a dot segment",
        "/v1.41/../containers/create",
        deny("dot segment in path"),
    ),
    # 5. version
    row(
        "5 /V1.41 (capital V) is an invalid version",
        "/V1.41/containers/json",
        deny("invalid api version"),
    ),
    row("5 /v1 is an invalid version", "/v1/containers/json", deny("invalid api version")),
    row(
        "5 /v1.41.0 is an invalid version", "/v1.41.0/containers/json", deny("invalid api version")
    ),
    row(
        "5 /v01.41 (leading zero) is an invalid version",
        "/v01.41/containers/json",
        deny("invalid api version"),
    ),
    row(
        "5 /v1.041 (leading zero) is an invalid version",
        "/v1.041/containers/json",
        deny("invalid api version"),
    ),
    row("5 /v.41 is an invalid version", "/v.41/containers/json", deny("invalid api version")),
    row("5 /v1..41 is an invalid version", "/v1..41/containers/json", deny("invalid api version")),
    row("5 /v1.42 is too new", "/v1.42/containers/json", deny("api version too new")),
    row("5 /v2.0 is too new", "/v2.0/_ping", deny("api version too new")),
    row("5 /v1.39 is too old", "/v1.39/containers/json", deny("api version too old")),
    row(
        "5 /v1.23 (HostConfig on start) is too old",
        "/v1.23/containers/x/start",
        deny("api version too old"),
    ),
    row("5 /v1.41 is taken off the path", "/v1.41/containers/json", ok("/containers/json", "1.41")),
    row("5 /v1.40 is the oldest served", "/v1.40/_ping", ok("/_ping", "1.40")),
    row("5 /v1.41 alone is the root path", "/v1.41", ok("/", "1.41")),
    row("5 an unversioned path has no version", "/containers/json", ok("/containers/json")),
    row("5 /volumes is not a version", "/volumes", ok("/volumes")),
    row("5 /v is not a version", "/v/x", ok("/v/x")),
    # 6. query
    *both(
        "6 a semicolon separates nothing",
        "/containers/json?all=1;size=1",
        deny("semicolon in query"),
    ),
    *both(
        "6 a malformed escape in the query",
        "/containers/json?filters=%zz",
        deny("invalid percent-encoding"),
    ),
    *both("6 invalid UTF-8 in the query", "/containers/json?filters=%ff", deny("query not UTF-8")),
    *both(
        "6 %00 in a query value",
        "/containers/x/archive?path=/etc%00",
        deny("control character in query"),
    ),
    *both("6 %0a in a query key", "/containers/json?a%0a=1", deny("control character in query")),
    *both(
        "6 a parameter twice", "/containers/create?name=a&name=b", deny("duplicate query parameter")
    ),
    *both(
        "6 a parameter twice, once encoded",
        "/containers/create?name=a&%6eame=b",
        deny("duplicate query parameter"),
    ),
    *both(
        "6 + is a space, %2B a plus",
        "/containers/json?a=x+y&b=x%2By",
        ok("/containers/json", a="x y", b="x+y"),
    ),
    *both(
        "6 an escaped JSON filter decodes once",
        "/containers/json?filters=%7B%22a%22%3A1%7D",
        ok("/containers/json", filters='{"a":1}'),
    ),
    *both(
        "6 a key without a value has an empty value",
        "/containers/json?all",
        ok("/containers/json", all=""),
    ),
    *both(
        "6 empty pairs are skipped", "/containers/json?&all=1&&", ok("/containers/json", all="1")
    ),
    *both("6 an empty query is no query", "/containers/json?", ok("/containers/json")),
    *both(
        "6 a percent inside a value stays",
        "/containers/x/archive?path=%2Fa%2525b",
        ok("/containers/x/archive", path="/a%25b"),
    ),
    *both(
        "6 an image reference keeps its colon and at",
        "/images/alpine:3@sha256:ab/json",
        ok("/images/alpine:3@sha256:ab/json"),
    ),
]


@pytest.mark.parametrize(("target", "expected"), NORMALISE)
def test_normalise_path(target: str, expected: Any) -> None:
    got = normalise_path(target)
    if isinstance(got, Decision):
        assert (got.allow, got.reason) == expected
    else:
        assert got == expected


def test_a_denial_names_what_it_saw() -> None:
    assert normalise_path("/V1.41/_ping") == Decision(False, "invalid api version", "V1.41")
    assert normalise_path("/v1.42/_ping") == Decision(False, "api version too new", "1.42")
    assert normalise_path("/x?a=1&a=2") == Decision(False, "duplicate query parameter", "a")


# --- decide_request: the endpoint table -----------------------------------------------------------

C = "/containers/child"
ALLOWED = [
    # (method, path, route name, kind, ident)
    ("GET", "/_ping", "system.ping", None, None),
    ("HEAD", "/_ping", "system.ping", None, None),
    ("GET", "/version", "system.version", None, None),
    ("GET", "/info", "system.info", None, None),
    ("GET", "/events?since=1&until=2&filters=%7B%7D", "system.events", None, None),
    ("GET", "/containers/json?all=1&limit=3&size=1&filters=%7B%7D", "container.list", None, None),
    ("POST", "/containers/create?name=web&platform=linux", "container.create", None, None),
    ("POST", "/containers/prune?filters=%7B%7D", "container.prune", None, None),
    ("GET", f"{C}/json?size=1", "container.inspect", Kind.CONTAINER, "child"),
    ("GET", f"{C}/top?ps_args=aux", "container.top", Kind.CONTAINER, "child"),
    (
        "GET",
        f"{C}/logs?follow=1&stdout=1&stderr=1&since=0&until=9&timestamps=1&tail=5&details=1",
        "container.logs",
        Kind.CONTAINER,
        "child",
    ),
    ("GET", f"{C}/stats?stream=0&one-shot=1", "container.stats", Kind.CONTAINER, "child"),
    ("GET", f"{C}/changes", "container.changes", Kind.CONTAINER, "child"),
    ("GET", f"{C}/export", "container.export", Kind.CONTAINER, "child"),
    ("HEAD", f"{C}/archive?path=%2Ftmp", "container.archive-stat", Kind.CONTAINER, "child"),
    ("GET", f"{C}/archive?path=%2Fetc%2Fhosts", "container.archive-get", Kind.CONTAINER, "child"),
    (
        "PUT",
        f"{C}/archive?path=%2Ftmp&noOverwriteDirNonDir=true&copyUIDGID=1",
        "container.archive-put",
        Kind.CONTAINER,
        "child",
    ),
    ("POST", f"{C}/start?detachKeys=ctrl-p", "container.start", Kind.CONTAINER, "child"),
    ("POST", f"{C}/stop?t=3", "container.stop", Kind.CONTAINER, "child"),
    ("POST", f"{C}/restart?t=3", "container.restart", Kind.CONTAINER, "child"),
    ("POST", f"{C}/kill?signal=HUP", "container.kill", Kind.CONTAINER, "child"),
    ("POST", f"{C}/pause", "container.pause", Kind.CONTAINER, "child"),
    ("POST", f"{C}/unpause", "container.unpause", Kind.CONTAINER, "child"),
    ("POST", f"{C}/rename?name=other", "container.rename", Kind.CONTAINER, "child"),
    ("POST", f"{C}/resize?h=40&w=80", "container.resize", Kind.CONTAINER, "child"),
    ("POST", f"{C}/wait?condition=next-exit", "container.wait", Kind.CONTAINER, "child"),
    (
        "POST",
        f"{C}/attach?stream=1&stdin=1&stdout=1&stderr=1&logs=1&detachKeys=x",
        "container.attach",
        Kind.CONTAINER,
        "child",
    ),
    ("DELETE", f"{C}?v=1&force=1", "container.remove", Kind.CONTAINER, "child"),
    ("POST", f"{C}/exec", "container.exec", Kind.CONTAINER, "child"),
    ("POST", f"/exec/{FULL_ID}/start", "exec.start", Kind.EXEC, FULL_ID),
    ("POST", f"/exec/{FULL_ID}/resize?h=1&w=2", "exec.resize", Kind.EXEC, FULL_ID),
    ("GET", f"/exec/{FULL_ID}/json", "exec.inspect", Kind.EXEC, FULL_ID),
    ("GET", "/images/json?all=1&filters=%7B%7D&digests=1", "image.list", None, None),
    (
        "GET",
        "/images/registry.test:5000/team/app:1.2/json",
        "image.inspect",
        Kind.IMAGE,
        "registry.test:5000/team/app:1.2",
    ),
    ("GET", "/images/sha256:abc123/json", "image.inspect", Kind.IMAGE, "sha256:abc123"),
    ("GET", "/networks?filters=%7B%7D", "network.list", None, None),
    (
        "GET",
        "/networks/ac-acme-researcher?verbose=1&scope=local",
        "network.inspect",
        Kind.NETWORK,
        "ac-acme-researcher",
    ),
    ("GET", "/volumes?filters=%7B%7D", "volume.list", None, None),
    ("POST", "/volumes/create", "volume.create", None, None),
    ("POST", "/volumes/prune?filters=%7B%7D", "volume.prune", None, None),
    ("GET", "/volumes/data", "volume.inspect", Kind.VOLUME, "data"),
    ("DELETE", "/volumes/data?force=1", "volume.remove", Kind.VOLUME, "data"),
    # names the path may hold: a full id, an id prefix, a name (ATTACKS.md C6)
    ("GET", f"/containers/{FULL_ID}/json", "container.inspect", Kind.CONTAINER, FULL_ID),
    ("GET", "/containers/4f1c/json", "container.inspect", Kind.CONTAINER, "4f1c"),
    ("GET", "/containers/my_child.1-a/json", "container.inspect", Kind.CONTAINER, "my_child.1-a"),
    ("GET", "/containers/json/json", "container.inspect", Kind.CONTAINER, "json"),
    ("DELETE", "/containers/json", "container.remove", Kind.CONTAINER, "json"),
    ("GET", "/volumes/create", "volume.inspect", Kind.VOLUME, "create"),
]

DENIED_ENDPOINTS = [
    # (why, method, path)
    ("commit writes a shared image", "POST", "/commit?container=x"),
    ("build writes a shared image", "POST", "/build"),
    ("build cache prune", "POST", "/build/prune"),
    ("pull (images create) writes a shared image", "POST", "/images/create?fromImage=alpine"),
    ("image push", "POST", "/images/alpine/push"),
    ("image tag poisons a shared name", "POST", "/images/alpine/tag?repo=x"),
    ("image load", "POST", "/images/load"),
    ("image save (get) of one", "GET", "/images/alpine/get"),
    ("image save (get) of many", "GET", "/images/get?names=alpine"),
    ("image delete", "DELETE", "/images/alpine"),
    ("image prune", "POST", "/images/prune"),
    ("image search", "GET", "/images/search?term=x"),
    ("image history", "GET", "/images/alpine/history"),
    ("network create (C8)", "POST", "/networks/create"),
    ("network connect (C8)", "POST", "/networks/ac-acme-researcher/connect"),
    ("network disconnect", "POST", "/networks/ac-acme-researcher/disconnect"),
    ("network remove", "DELETE", "/networks/ac-acme-researcher"),
    ("network prune", "POST", "/networks/prune"),
    ("container update (limits after the quota)", "POST", f"{C}/update"),
    ("container copy (gone since 1.12)", "POST", f"{C}/copy"),
    ("attach over websocket", "GET", f"{C}/attach/ws"),
    ("checkpoints", "GET", f"{C}/checkpoints"),
    ("system df lists every object", "GET", "/system/df"),
    ("auth", "POST", "/auth"),
    ("swarm", "GET", "/swarm"),
    ("swarm init", "POST", "/swarm/init"),
    ("nodes", "GET", "/nodes"),
    ("services", "GET", "/services"),
    ("service create", "POST", "/services/create"),
    ("tasks", "GET", "/tasks"),
    ("secrets", "GET", "/secrets"),
    ("secret create", "POST", "/secrets/create"),
    ("configs", "GET", "/configs"),
    ("plugins", "GET", "/plugins"),
    ("plugin install", "POST", "/plugins/pull"),
    ("session", "POST", "/session"),
    ("distribution", "GET", "/distribution/alpine/json"),
    ("grpc", "POST", "/grpc"),
    ("an unknown path (a new API version's endpoint, C9)", "GET", "/containers/x/mounts"),
    ("OPTIONS (CORS preflight)", "OPTIONS", "/containers/json"),
    ("HEAD of a GET endpoint", "HEAD", "/containers/json"),
    ("a lower-case method", "get", "/containers/json"),
    ("GET of a POST endpoint", "GET", "/containers/create"),
    ("POST of a GET endpoint", "POST", "/containers/json"),
    ("PUT of a volume (cluster volumes, 1.42)", "PUT", "/volumes/data"),
    ("a name with a slash (mux's {name:.*})", "GET", "/containers/a/b/json"),
    ("the networks list with its own trailing-slash route", "GET", "/networks/x/y"),
]

NAMES_AND_QUERIES = [
    # (why, method, path, reason)
    ("a name starting with a dot", "GET", "/containers/.hidden/json", "invalid object name"),
    ("a name starting with a dash", "GET", "/containers/-x/json", "invalid object name"),
    ("a name starting with an underscore", "DELETE", "/volumes/_x", "invalid object name"),
    ("a name with a colon", "GET", "/containers/a:b/json", "invalid object name"),
    ("an exec id with an at", "GET", "/exec/a@b/json", "invalid object name"),
    (
        "a name over 255 characters",
        "GET",
        "/containers/" + "a" * 256 + "/json",
        "invalid object name",
    ),
    ("an image name starting with a colon", "GET", "/images/:x/json", "invalid object name"),
    (
        "remove with link (removes another container's link)",
        "DELETE",
        f"{C}?link=1",
        "unknown query parameter",
    ),
    (
        "create with a privileged parameter (C1 query on create)",
        "POST",
        "/containers/create?name=x&privileged=1",
        "unknown query parameter",
    ),
    (
        "create with a HostConfig parameter (C1 query on create)",
        "POST",
        "/containers/create?HostConfig=%7B%7D",
        "unknown query parameter",
    ),
    ("start with a checkpoint", "POST", f"{C}/start?checkpoint=x", "unknown query parameter"),
    (
        "create named as a platform container (a tenant-enumeration oracle)",
        "POST",
        "/containers/create?name=agentcell-green-c1-g1",
        "reserved name",
    ),
    (
        "create named in the namespace, upper case",
        "POST",
        "/containers/create?name=AgentCell-x",
        "reserved name",
    ),
    ("create named /agentcell-x", "POST", "/containers/create?name=/agentcell-x", "reserved name"),
    (
        "create named %2Fagentcell-x",
        "POST",
        "/containers/create?name=%2Fagentcell-x",
        "reserved name",
    ),
    (
        "rename into the namespace",
        "POST",
        f"{C}/rename?name=agentcell-blue-egress",
        "reserved name",
    ),
    ("an empty parameter name", "GET", "/containers/json?=1", "unknown query parameter"),
    ("a parameter in another case", "GET", "/containers/json?All=1", "unknown query parameter"),
    ("stop with a 1.42 signal", "POST", f"{C}/stop?signal=KILL", "unknown query parameter"),
    (
        "images list with a 1.42 shared-size",
        "GET",
        "/images/json?shared-size=1",
        "unknown query parameter",
    ),
]

REQUESTS = [
    *(
        pytest.param(method, prefix + path, (name, kind, ident), id=f"allowed: {method} {label}")
        for method, path, name, kind, ident in ALLOWED
        for prefix, label in (("", path), ("/v1.41", "/v1.41" + path))
    ),
    *(
        pytest.param(
            method,
            prefix + path,
            deny("endpoint not allowed"),
            id=f"denied: {why} ({'/v1.41' if prefix else 'unversioned'})",
        )
        for why, method, path in DENIED_ENDPOINTS
        for prefix in ("", "/v1.41")
    ),
    *(
        pytest.param(
            method,
            prefix + path,
            deny(reason),
            id=f"refused: {why} ({'/v1.41' if prefix else 'unversioned'})",
        )
        for why, method, path, reason in NAMES_AND_QUERIES
        for prefix in ("", "/v1.41")
    ),
    pytest.param("GET", "/", deny("endpoint not allowed"), id="denied: the root (unversioned)"),
    pytest.param("GET", "/v1.41", deny("endpoint not allowed"), id="denied: the root (/v1.41)"),
]


@pytest.mark.parametrize(("method", "target", "expected"), REQUESTS)
def test_decide_request(method: str, target: str, expected: Any) -> None:
    got = decide_request(method, target)
    if isinstance(got, Decision):
        assert (got.allow, got.reason) == expected
    else:
        assert (got.route.name, got.route.kind, got.route.ident) == expected


def test_every_endpoint_of_the_table_has_an_allowed_row() -> None:
    covered = {(m, name) for m, _, name, _, _ in ALLOWED}
    assert {(r.method, r.name) for r in ENDPOINTS} == covered


def test_every_endpoint_is_served_on_both_spellings_alike() -> None:
    for method, path, *_ in ALLOWED:
        plain, versioned = decide_request(method, path), decide_request(method, "/v1.41" + path)
        assert isinstance(plain, Request) and isinstance(versioned, Request)
        assert plain == versioned  # unversioned requests are pinned to MAX_API_VERSION


def test_the_target_forwarded_is_built_not_copied() -> None:
    got = decide_request("GET", "/containers/json?size=1&all=1&filters=%7B%22a%22%3A+1%7D")
    assert isinstance(got, Request)
    assert got.version == MAX_API_VERSION
    assert got.target == "/v1.41/containers/json?all=1&filters=%7B%22a%22%3A+1%7D&size=1"
    older = decide_request("GET", "/v1.40/containers/json")
    assert isinstance(older, Request) and older.target == "/v1.40/containers/json"
    assert build_target("/x", "1.41", {"k": "a b/c&d=e"}) == "/v1.41/x?k=a+b%2Fc%26d%3De"


def test_the_sidecar_forwards_the_id_it_checked_not_the_name() -> None:
    got = decide_request("POST", "/v1.40/containers/web/kill?signal=HUP")
    assert isinstance(got, Request) and got.route.ident == "web"
    resolved = got.with_ident(FULL_ID)
    assert resolved.target == f"/v1.40/containers/{FULL_ID}/kill?signal=HUP"
    assert resolved.route.ident == FULL_ID and resolved.route.name == "container.kill"
    assert decide_request("POST", resolved.target) == resolved
    image = decide_request("GET", "/images/alpine:3/json")
    assert isinstance(image, Request)
    assert image.with_ident("sha256:ab").target == "/v1.41/images/sha256:ab/json"
    listing = decide_request("GET", "/containers/json")
    assert isinstance(listing, Request)
    with pytest.raises(ValueError, match="names no object"):
        listing.with_ident(FULL_ID)


FLAGS = [
    # C7 streams, creation, scoping: what the sidecar must do with each endpoint
    ("POST", f"{C}/attach", {"streams": True, "upgrades": True, "owned": True}),
    (
        "POST",
        f"/exec/{FULL_ID}/start",
        {"streams": True, "upgrades": True, "owned": True, "body": BodyKind.EXEC_START},
    ),
    ("GET", f"{C}/logs", {"streams": True, "upgrades": False}),
    ("GET", "/events", {"streams": True, "scope": Kind.CONTAINER}),
    ("GET", f"{C}/stats", {"streams": True}),
    ("POST", f"{C}/wait", {"streams": True}),
    ("GET", f"{C}/export", {"streams": True, "owned": True}),
    (
        "POST",
        "/containers/create",
        {"creates": Kind.CONTAINER, "body": BodyKind.CONTAINER_CREATE, "owned": False},
    ),
    (
        "POST",
        f"{C}/exec",
        {"creates": Kind.EXEC, "body": BodyKind.EXEC_CREATE, "owned": True, "kind": Kind.CONTAINER},
    ),
    ("POST", "/volumes/create", {"creates": Kind.VOLUME, "body": BodyKind.VOLUME_CREATE}),
    ("PUT", f"{C}/archive", {"body": BodyKind.TAR, "owned": True}),
    ("POST", f"{C}/start", {"body": BodyKind.NONE, "streams": False}),
    ("GET", "/containers/json", {"scope": Kind.CONTAINER, "streams": False}),
    ("POST", "/containers/prune", {"scope": Kind.CONTAINER}),
    ("GET", "/volumes", {"scope": Kind.VOLUME}),
    ("POST", "/volumes/prune", {"scope": Kind.VOLUME}),
    ("GET", "/networks", {"scope": Kind.NETWORK}),
    ("GET", "/info", {"scrub": True}),
    ("GET", "/images/alpine/json", {"kind": Kind.IMAGE, "owned": False}),
    ("GET", "/images/json", {"scope": None, "owned": False}),
    ("GET", "/networks/n", {"kind": Kind.NETWORK, "owned": True}),
    ("DELETE", "/volumes/v", {"kind": Kind.VOLUME, "owned": True}),
]


@pytest.mark.parametrize(
    ("method", "path", "flags"), [pytest.param(*f, id=f"{f[0]} {f[1]}") for f in FLAGS]
)
def test_route_flags(method: str, path: str, flags: dict[str, Any]) -> None:
    found = route(method, path)
    assert not isinstance(found, Decision)
    assert {k: getattr(found, k) for k in flags} == flags


def test_only_attach_and_exec_start_upgrade_and_only_creates_carry_json_bodies() -> None:
    assert {r.name for r in ENDPOINTS if r.upgrades} == {"container.attach", "exec.start"}
    bodies = {r.name: r.body for r in ENDPOINTS if r.body is not BodyKind.NONE}
    assert bodies == {
        "container.create": BodyKind.CONTAINER_CREATE,
        "container.archive-put": BodyKind.TAR,
        "container.exec": BodyKind.EXEC_CREATE,
        "exec.start": BodyKind.EXEC_START,
        "volume.create": BodyKind.VOLUME_CREATE,
    }
    # every endpoint that names an object other than an image must prove it owned
    assert all(r.owned == (r.kind not in (None, Kind.IMAGE)) for r in ENDPOINTS)
    # no DELETE or write outside what the cell owns
    writes = {r.name for r in ENDPOINTS if r.method in ("POST", "PUT", "DELETE")}
    assert all(r.owned or r.creates or r.scope for r in ENDPOINTS if r.name in writes)


# --- ownership ------------------------------------------------------------------------------------

OWNERSHIP = [
    # 1. tenant, 2. cell, 3. role; images never
    (
        "1 a container of another tenant is not owned",
        Kind.CONTAINER,
        {**CHILD, LABEL_TENANT: "other"},
        Decision(False, "not owned", LABEL_TENANT),
    ),
    (
        "1 a container without labels is not owned",
        Kind.CONTAINER,
        {},
        Decision(False, "not owned", LABEL_TENANT),
    ),
    (
        "1 labels that are not a mapping are not owned",
        Kind.CONTAINER,
        None,
        Decision(False, "not owned", LABEL_TENANT),
    ),
    (
        "1 a tenant label in another case is not owned",
        Kind.CONTAINER,
        {**CHILD, LABEL_TENANT: "ACME"},
        Decision(False, "not owned", LABEL_TENANT),
    ),
    (
        "2 a container of another cell of the tenant is not owned",
        Kind.CONTAINER,
        {**CHILD, LABEL_CELL: "writer"},
        Decision(False, "not owned", LABEL_CELL),
    ),
    (
        "2 a container naming only the tenant is not owned",
        Kind.CONTAINER,
        {LABEL_TENANT: TENANT},
        Decision(False, "not owned", LABEL_CELL),
    ),
    (
        "3 the agent container itself is not the agent's",
        Kind.CONTAINER,
        {**CHILD, LABEL_ROLE: "agent"},
        Decision(False, "not owned", LABEL_ROLE),
    ),
    (
        "3 the cell's egress gate is not the agent's",
        Kind.CONTAINER,
        {**CHILD, LABEL_ROLE: "egress"},
        Decision(False, "not owned", LABEL_ROLE),
    ),
    (
        "3 the docker proxy (the engine socket) is not the agent's",
        Kind.CONTAINER,
        {**CHILD, LABEL_ROLE: "dockerproxy"},
        Decision(False, "not owned", LABEL_ROLE),
    ),
    (
        "3 a dedicated engine is not the agent's",
        Kind.CONTAINER,
        {**CHILD, LABEL_ROLE: "engine"},
        Decision(False, "not owned", LABEL_ROLE),
    ),
    (
        "3 a container without a role is not owned",
        Kind.CONTAINER,
        {LABEL_TENANT: TENANT, LABEL_CELL: CELL},
        Decision(False, "not owned", LABEL_ROLE),
    ),
    ("3 a child is owned", Kind.CONTAINER, CHILD, Decision(True, "owned", "container")),
    (
        "3 a child with more labels is owned",
        Kind.CONTAINER,
        {**CHILD, "team": "ml"},
        Decision(True, "owned", "container"),
    ),
    ("3 an exec of a child is owned", Kind.EXEC, CHILD, Decision(True, "owned", "exec")),
    (
        "3 an exec of the proxy is not owned",
        Kind.EXEC,
        {**CHILD, LABEL_ROLE: "dockerproxy"},
        Decision(False, "not owned", LABEL_ROLE),
    ),
    ("3 a volume the agent made is owned", Kind.VOLUME, CHILD, Decision(True, "owned", "volume")),
    (
        "3 the cell's workspace volume is not the agent's to remove",
        Kind.VOLUME,
        {**CHILD, LABEL_ROLE: "workspace"},
        Decision(False, "not owned", LABEL_ROLE),
    ),
    (
        "3 a volume of another cell is not owned",
        Kind.VOLUME,
        {**CHILD, LABEL_CELL: "writer"},
        Decision(False, "not owned", LABEL_CELL),
    ),
    (
        "3 the cell network is owned",
        Kind.NETWORK,
        {**CHILD, LABEL_ROLE: "network"},
        Decision(True, "owned", "network"),
    ),
    (
        "3 the tenant's egress network is not owned",
        Kind.NETWORK,
        {LABEL_TENANT: TENANT, LABEL_ROLE: "egress-network"},
        Decision(False, "not owned", LABEL_CELL),
    ),
    (
        "3 a network labelled child is not the cell network",
        Kind.NETWORK,
        CHILD,
        Decision(False, "not owned", LABEL_ROLE),
    ),
    (
        "images are shared and never owned",
        Kind.IMAGE,
        CHILD,
        Decision(False, "not owned", "image objects are shared"),
    ),
]


@pytest.mark.parametrize(
    ("kind", "labels", "expected"), [pytest.param(*r[1:], id=r[0]) for r in OWNERSHIP]
)
def test_decide_ownership(kind: Kind, labels: Any, expected: Decision) -> None:
    assert decide_ownership(kind, labels, tenant=TENANT, cell=CELL) == expected


# --- answers to a request naming a name the agent chose ----------------------------------------

WORKSPACE = {LABEL_TENANT: "other", LABEL_CELL: CELL, LABEL_ROLE: "workspace"}
CREATED_VOLUMES = [
    (
        "a volume the proxy just made for the cell reaches the agent",
        {"Name": "data", "Labels": CHILD, "Mountpoint": "/var/lib/docker/volumes/data/_data"},
        Decision(True, "owned", "volume"),
    ),
    (
        "another tenant's workspace, answered for a create naming it, does not",
        {"Name": "agentcell-other-c1-workspace", "Labels": WORKSPACE},
        Decision(False, "name in use", "agentcell-other-c1-workspace"),
    ),
    (
        "the cell's own workspace is the cell's, not the agent's",
        {"Name": "ws", "Labels": {**CHILD, LABEL_ROLE: "workspace"}},
        Decision(False, "name in use", "ws"),
    ),
    (
        "an unlabelled volume of the host does not",
        {"Name": "db", "Labels": None},
        Decision(False, "name in use", "db"),
    ),
    (
        "a sibling cell's child volume does not",
        {"Name": "v", "Labels": {**CHILD, LABEL_CELL: "writer"}},
        Decision(False, "name in use", "v"),
    ),
    (
        "an answer that is no volume does not",
        ["x"],
        Decision(False, "name in use", "no volume in the answer"),
    ),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [pytest.param(*r[1:], id=r[0]) for r in CREATED_VOLUMES]
)
def test_decide_created_volume(doc: Any, expected: Decision) -> None:
    assert decide_created_volume(doc, tenant=TENANT, cell=CELL) == expected


@given(
    st.dictionaries(
        st.sampled_from([LABEL_TENANT, LABEL_CELL, LABEL_ROLE, "x"]), st.text(max_size=8)
    )
)
def test_a_created_volume_reaches_the_agent_only_with_all_owner_labels(
    labels: dict[str, str],
) -> None:
    got = decide_created_volume({"Name": "v", "Labels": labels}, tenant=TENANT, cell=CELL)
    owned = all(labels.get(k) == v for k, v in CHILD.items())
    assert got.allow is owned
    assert got.reason == ("owned" if owned else "name in use")


FOREIGN_ID = "9d2b" + "7" * 60
SCRUBBED_ERRORS = [
    (
        "a name taken by another tenant's container hides its id",
        {
            "message": f'Conflict. The container name "/agentcell-green-c1-g1" is already in use '
            f'by container "{FOREIGN_ID}". You have to remove (or rename) that container to be '
            "able to reuse that name."
        },
        {
            "message": 'Conflict. The container name "/agentcell-green-c1-g1" is already in use '
            'by container "<id>". You have to remove (or rename) that container to be '
            "able to reuse that name."
        },
    ),
    (
        "a short id too",
        {"message": f"Error when allocating new name: in use by {FOREIGN_ID[:12]}"},
        {"message": "Error when allocating new name: in use by <id>"},
    ),
    (
        "a message without an id is kept",
        {"message": "No such image: nope:latest"},
        {"message": "No such image: nope:latest"},
    ),
    ("no message at all", "garbage", {"message": "the engine refused the request"}),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [pytest.param(*r[1:], id=r[0]) for r in SCRUBBED_ERRORS]
)
def test_scrub_engine_error(doc: Any, expected: dict[str, str]) -> None:
    assert scrub_engine_error(doc) == expected


_NAME_CHARS = string.ascii_letters + string.digits + "_.-"


@given(
    st.sampled_from(["/containers/create", f"{C}/rename"]),
    st.sampled_from(["", "/"]),
    st.text(alphabet="aAgGeEnNtTcClL-.", min_size=0, max_size=12),
    st.text(alphabet=_NAME_CHARS, max_size=20),
)
def test_a_name_is_reserved_exactly_when_it_starts_with_the_prefix_in_any_case(
    path: str, slash: str, head: str, tail: str
) -> None:
    name = head + tail
    got = decide_request("POST", f"{path}?name={quote(slash + name, safe='')}")
    reserved = name.lower().startswith(("agentcell-", "agentcell."))
    assert (isinstance(got, Decision) and got.reason == "reserved name") is reserved
    assert reserved_name(slash + name) is reserved


@given(st.text(), st.text(alphabet="0123456789abcdefABCDEF", min_size=12, max_size=64), st.text())
def test_no_id_survives_the_scrub(before: str, ident: str, after: str) -> None:
    got = scrub_engine_error({"message": before + ident + after})["message"]
    assert ident not in got


# --- filters, lists, events, info -----------------------------------------------------------------

OWN = {
    f"{LABEL_TENANT}={TENANT}": True,
    f"{LABEL_CELL}={CELL}": True,
    f"{LABEL_ROLE}=child": True,
}
FILTERS = [
    ("no filters become the owner labels", None, {"label": OWN}),
    ("empty filters become the owner labels", "", {"label": OWN}),
    ("an empty object becomes the owner labels", "{}", {"label": OWN}),
    (
        "the map form keeps the client's filters",
        '{"status":{"running":true}}',
        {"status": {"running": True}, "label": OWN},
    ),
    (
        "the legacy list form is read as the engine does",
        '{"label":["team=ml"],"name":["web"]}',
        {"label": {"team=ml": True, **OWN}, "name": {"web": True}},
    ),
    (
        "a false value still filters (the engine reads only the keys)",
        '{"name":{"web":false}}',
        {"name": {"web": True}, "label": OWN},
    ),
    (
        "a client label naming another tenant only narrows",
        '{"label":["agentcell.tenant=other"]}',
        {"label": {"agentcell.tenant=other": True, **OWN}},
    ),
]
BAD_FILTERS = [
    ("not JSON", "{label"),
    ("trailing data", '{"a":["b"]} {"label":{}}'),
    ("duplicate keys", '{"label":["a"],"label":["b"]}'),
    ("not an object", '["label"]'),
    ("a value that is neither form", '{"label":"a=b"}'),
    ("a list of non-strings", '{"label":[1]}'),
    ("a map of non-bools", '{"label":{"a":1}}'),
]


@pytest.mark.parametrize(("raw", "expected"), [pytest.param(*f[1:], id=f[0]) for f in FILTERS])
def test_scope_filters(raw: str | None, expected: dict[str, Any]) -> None:
    got = scope_filters(Kind.CONTAINER, raw, tenant=TENANT, cell=CELL)
    assert isinstance(got, str)
    assert json.loads(got) == expected


@pytest.mark.parametrize("raw", [pytest.param(f[1], id=f[0]) for f in BAD_FILTERS])
def test_scope_filters_refuses_what_the_engine_could_read_otherwise(raw: str) -> None:
    got = scope_filters(Kind.CONTAINER, raw, tenant=TENANT, cell=CELL)
    assert isinstance(got, Decision) and got.reason == "invalid filters"


def test_networks_and_volumes_are_scoped_to_their_roles() -> None:
    nets = scope_filters(Kind.NETWORK, None, tenant=TENANT, cell=CELL)
    vols = scope_filters(Kind.VOLUME, None, tenant=TENANT, cell=CELL)
    assert isinstance(nets, str) and f"{LABEL_ROLE}=network" in json.loads(nets)["label"]
    assert isinstance(vols, str) and f"{LABEL_ROLE}=child" in json.loads(vols)["label"]


def test_filter_list_keeps_only_owned_items() -> None:
    items = [
        {"Id": "a", "Labels": CHILD},
        {"Id": "b", "Labels": {**CHILD, LABEL_CELL: "writer"}},
        {"Id": "c", "Labels": {**CHILD, LABEL_ROLE: "dockerproxy"}},
        {"Id": "d", "Labels": None},
        {"Id": "e"},
        "not an item",
    ]
    kept = filter_list(Kind.CONTAINER, items, tenant=TENANT, cell=CELL)
    assert [i["Id"] for i in kept] == ["a"]


EVENTS = [
    (
        "a child's container event passes",
        {"Type": "container", "Action": "start", "Actor": {"ID": "x", "Attributes": CHILD}},
        True,
    ),
    (
        "an exec event of a child passes",
        {
            "Type": "container",
            "Action": "exec_create: sh",
            "Actor": {"Attributes": {**CHILD, "name": "c"}},
        },
        True,
    ),
    (
        "another cell's event is dropped",
        {"Type": "container", "Actor": {"Attributes": {**CHILD, LABEL_CELL: "writer"}}},
        False,
    ),
    (
        "the proxy's own events are dropped",
        {"Type": "container", "Actor": {"Attributes": {**CHILD, LABEL_ROLE: "dockerproxy"}}},
        False,
    ),
    (
        "an image event carrying the labels is dropped",
        {"Type": "image", "Actor": {"Attributes": CHILD}},
        False,
    ),
    ("a network event is dropped", {"Type": "network", "Actor": {"Attributes": {}}}, False),
    ("an event without an actor is dropped", {"Type": "container"}, False),
    ("an event with a bad actor is dropped", {"Type": "container", "Actor": "x"}, False),
    ("not an event is dropped", ["container"], False),
]


@pytest.mark.parametrize(("event", "expected"), [pytest.param(*e[1:], id=e[0]) for e in EVENTS])
def test_filter_event(event: Any, expected: bool) -> None:
    assert filter_event(event, tenant=TENANT, cell=CELL) is expected


def test_scrub_info_keeps_the_engine_and_drops_the_host() -> None:
    info = {
        "ServerVersion": "20.10.24",
        "OSType": "linux",
        "NCPU": 2,
        "Containers": 40,
        "ContainersRunning": 30,
        "Images": 12,
        "Name": "host-7",
        "DockerRootDir": "/var/lib/docker",
        "HttpProxy": "http://user:secret@proxy",
        "Labels": ["rack=3"],
        "Swarm": {"NodeID": "x"},
        "Runtimes": {"runc": {"path": "runc"}, "secret-rt": {"path": "/opt/x"}},
        "RegistryConfig": {"Mirrors": ["m"]},
    }
    out = scrub_info(info, runtimes=["runc"])
    assert out["ServerVersion"] == "20.10.24" and out["NCPU"] == 2
    assert out["Containers"] == out["ContainersRunning"] == out["Images"] == 0
    assert out["Runtimes"] == {"runc": {}}
    for gone in ("Name", "DockerRootDir", "HttpProxy", "Labels", "Swarm", "RegistryConfig"):
        assert gone not in out


def test_error_body_is_what_the_docker_cli_prints() -> None:
    body = json.loads(error_body(Decision(False, "not owned", LABEL_TENANT)))
    assert body == {"message": "agentcell docker proxy: not owned: agentcell.tenant"}
    assert json.loads(error_body(Decision(False, "endpoint not allowed")))["message"].endswith(
        "endpoint not allowed"
    )


# --- properties -----------------------------------------------------------------------------------

PIECES = st.sampled_from(
    [
        "containers",
        "json",
        "create",
        "child",
        "v1.41",
        "V1.41",
        "v1.42",
        "v1.40",
        "_ping",
        "exec",
        "images",
        "alpine:3",
        "volumes",
        ".",
        "..",
        "",
        "%2e",
        "%2E%2e",
        "%2f",
        "%2F",
        "%25",
        "%252e",
        "%00",
        "%31",
        "%v",
        ";x=1",
        "#f",
        "?",
        "&",
        "=",
        "+",
        " ",
        "\\",
        "é",
        "attach",
        "archive",
        "prune",
        "networks",
        "a",
        "%",
        "%%",
    ]
)
TARGETS = st.one_of(
    st.text(max_size=80),
    st.lists(PIECES, max_size=8).map(lambda parts: "/" + "/".join(parts)),
    st.tuples(st.lists(PIECES, max_size=6), st.lists(PIECES, max_size=4)).map(
        lambda p: "/" + "/".join(p[0]) + "?" + "&".join(p[1])
    ),
)


@given(TARGETS)
def test_no_target_crashes_and_every_refusal_is_in_the_vocabulary(target: str) -> None:
    got = normalise_path(target)
    if isinstance(got, Decision):
        assert not got.allow and got.reason in API_REASONS


@given(TARGETS)
def test_an_accepted_path_reads_the_same_to_every_decoder(target: str) -> None:
    """Zero, one or two decodings and any path cleaning all see the same path."""
    got = normalise_path(target)
    if isinstance(got, Decision):
        return
    path, version, _ = got
    raw_path = target.partition("?")[0]
    assert unquote(raw_path) == raw_path == unquote(unquote(raw_path))
    assert posixpath.normpath(raw_path) == raw_path or raw_path == "/"
    assert set(raw_path) <= set(string.ascii_letters + string.digits + "._~:@/-")
    assert version is None or version in ("1.40", "1.41")
    assert path.startswith("/")


@given(TARGETS, st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]))
def test_the_forwarded_target_decides_as_the_original(target: str, method: str) -> None:
    """Re-reading the target the proxy forwards gives the same request: a fixpoint."""
    got = decide_request(method, target)
    if isinstance(got, Decision):
        assert got.reason in API_REASONS
        return
    again = decide_request(method, got.target)
    assert again == got


def _reason(got: object) -> str:
    return got.reason if isinstance(got, Decision) else ""


def test_every_reason_in_the_vocabulary_has_a_row() -> None:
    seen = set()
    for target, _ in (p.values for p in NORMALISE):
        seen.add(_reason(normalise_path(str(target))))
    for method, target, _ in (p.values for p in REQUESTS):
        seen.add(_reason(decide_request(str(method), str(target))))
    for _, kind, labels, _ in OWNERSHIP:
        seen.add(decide_ownership(kind, labels, tenant=TENANT, cell=CELL).reason)
    for _, raw in BAD_FILTERS:
        seen.add(_reason(scope_filters(Kind.CONTAINER, raw, tenant=TENANT, cell=CELL)))
    for _, doc, _ in CREATED_VOLUMES:
        seen.add(decide_created_volume(doc, tenant=TENANT, cell=CELL).reason)
    assert set(API_REASONS) - seen == set()
