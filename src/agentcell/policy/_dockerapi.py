"""The docker proxy's request decisions: which request-targets it reads, which endpoints it serves.

Pure: no sockets, no engine. The docker proxy sidecar frames a request (h11), asks
``decide_request`` what it is, resolves the object the path names against the engine,
asks ``decide_ownership`` whether the cell owns it, and forwards only a request-target
this module built (``build_target``), never the one it was sent. Lists, prunes and events
go out with ``scope_filters`` and come back through ``filter_list``/``filter_event``.

Decision order of ``normalise_path`` (the one place it is written;
``tests/policy/test_policy_dockerapi.py`` mirrors it row by row). The engine's router (Go's
net/http and gorilla/mux) decodes the path once and matches the result; a proxy that
matches anything else is bypassed (Tecnativa #1: ``/v%31.41/``). So the target is decoded
once, as Go does, and anything whose meaning could depend on who decodes it is refused:

1. The target: longer than ``MAX_TARGET`` ("request-target too long"); a byte outside
   visible ASCII ("invalid character in request-target"); not starting with ``/``, as the
   absolute-form, authority-form and asterisk-form do ("request-target not in origin
   form"); a ``#`` ("fragment in request-target"). The path ends at the first ``?``.
2. Percent-encoding in the path: a malformed escape ("invalid percent-encoding"); one that
   decodes to a control character, ``%00`` ("control character in path"); an encoded
   slash ("encoded slash in path"); an encoded ``%``, ``%252e`` ("double encoding in
   path"); any other escape, ``%2e%2e`` and ``/v%31.41`` among them ("percent-encoding in
   path"). No path the proxy serves needs one.
3. Characters: ``;`` ("semicolon in path"); anything but ``A-Z a-z 0-9 . _ ~ : @ / -``
   ("invalid character in path").
4. Segments: an empty one, ``//`` ("empty segment in path"); a trailing slash ("trailing
   slash in path"); ``.`` or ``..`` ("dot segment in path"). The router would redirect or
   404 these; the proxy does not guess which.
5. Version: a first segment that starts with ``v`` or ``V`` and a digit or dot is a version
   prefix, and must be exactly ``v<major>.<minor>`` without leading zeros ("invalid api
   version"), at most ``MAX_API_VERSION`` ("api version too new") and at least
   ``MIN_API_VERSION`` ("api version too old"). It is taken off the path; versioned and
   unversioned paths then go through the same checks.
6. Query (Go's ``url.ParseQuery``: ``&`` separates, ``+`` is a space): a ``;`` ("semicolon
   in query"); a malformed escape ("invalid percent-encoding"); bytes that are not UTF-8
   ("query not UTF-8"); a control character ("control character in query"); a parameter
   given twice ("duplicate query parameter").

Decision order of ``decide_request``: ``normalise_path``; then the endpoint table
``ENDPOINTS``, matched on the exact method and the path ("endpoint not allowed"); the
object name in the path, an id, id prefix or name, never ``/name`` ("invalid object
name"); each query parameter one the endpoint takes ("unknown query parameter"); a name
the agent gives a container (create, rename) in the platform's namespace
(``reserved_name``: ``agentcell.`` or ``agentcell-``, in any case: "reserved name"). The
engine keeps one namespace of names for every tenant:
were such a name passed on, "in use" or not would tell the agent which tenants and cells
exist. Refused before the engine is asked, every such name answers alike.

Decision order of ``decide_ownership``: the object's labels must name the tenant
(``agentcell.tenant``), then the cell (``agentcell.cell``), then the role the proxy stamps
on what the agent made, ``child`` (``network`` for the cell's network) (each "not owned",
the rule naming the label). Images are shared and never owned. The cell's own containers
(the agent, its egress gate, this proxy) are the cell's, not the agent's: a docker exec
into the proxy would reach the engine socket.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from agentcell.policy._decision import Decision
from agentcell.policy._enginejson import load_strict_json
from agentcell.policy._hardening import LABEL_CELL, LABEL_ROLE, LABEL_TENANT
from agentcell.policy._names import reserved_name

__all__ = [
    "API_REASONS",
    "ENDPOINTS",
    "MAX_API_VERSION",
    "MAX_TARGET",
    "MIN_API_VERSION",
    "ROLE_CHILD",
    "ROLE_NETWORK",
    "BodyKind",
    "Kind",
    "Request",
    "Route",
    "build_target",
    "decide_created_volume",
    "decide_ownership",
    "decide_request",
    "error_body",
    "filter_event",
    "filter_list",
    "normalise_path",
    "owner_labels",
    "route",
    "scope_filters",
    "scrub_engine_error",
    "scrub_info",
]

MAX_API_VERSION = "1.41"
"""The engine's (20.10) API version: the body schemas of ``_enginejson`` are this version's."""
MIN_API_VERSION = "1.40"
"""Older versions read requests differently (before 1.24 a start body carried a HostConfig)."""
MAX_TARGET = 8192
ROLE_CHILD = "child"
ROLE_NETWORK = "network"
_NAMED_BY_QUERY = frozenset({"container.create", "container.rename"})

API_REASONS: tuple[str, ...] = (
    "request-target too long",
    "invalid character in request-target",
    "request-target not in origin form",
    "fragment in request-target",
    "invalid percent-encoding",
    "control character in path",
    "encoded slash in path",
    "double encoding in path",
    "percent-encoding in path",
    "semicolon in path",
    "invalid character in path",
    "empty segment in path",
    "trailing slash in path",
    "dot segment in path",
    "invalid api version",
    "api version too new",
    "api version too old",
    "semicolon in query",
    "query not UTF-8",
    "control character in query",
    "duplicate query parameter",
    "endpoint not allowed",
    "invalid object name",
    "unknown query parameter",
    "reserved name",
    "owned",
    "not owned",
    "invalid filters",
    "name in use",
)
"""Every reason this module gives: the log vocabulary and the test vocabulary."""


class Kind(StrEnum):
    """The kinds of engine object a path can name."""

    CONTAINER = "container"
    EXEC = "exec"  # owned through its container
    VOLUME = "volume"
    NETWORK = "network"
    IMAGE = "image"  # shared, read-only, never owned


class BodyKind(StrEnum):
    """What the request body of an endpoint is; NONE means the proxy refuses any body."""

    NONE = "none"
    CONTAINER_CREATE = "container-create"  # decode_engine_json, then harden_child
    EXEC_CREATE = "exec-create"  # decode_engine_json(EXEC_CREATE), then harden_exec
    EXEC_START = "exec-start"  # decode_engine_json(EXEC_START), then harden_exec_start
    VOLUME_CREATE = "volume-create"  # decode_engine_json(VOLUME_CREATE), then harden_volume
    TAR = "tar"  # a tar stream, relayed as it comes


@dataclass(frozen=True)
class Route:
    """One endpoint the proxy serves, and what a matched request names.

    ``kind``/``ident``: the object the path names (the id, id prefix or name as written;
    the sidecar resolves it against the engine), or None for a collection endpoint.
    ``owned``: the named object must be proven owned first (``decide_ownership``).
    ``creates``: the kind of object it creates, which the proxy stamps as owned.
    ``streams``: the response may be long-lived or unbounded (relay it as it comes, no
    read timeout); ``upgrades``: the connection may be hijacked (101 Switching Protocols,
    or a raw stream after 200) and relayed both ways.
    ``scope``: a list, prune or event stream whose ``filters`` must be narrowed with
    ``scope_filters`` and whose answer is checked with ``filter_list``/``filter_event``.
    ``scrub``: the answer is host-wide and goes back only through ``scrub_info``.
    """

    name: str
    method: str
    pattern: str
    kind: Kind | None = None
    ident: str | None = None
    owned: bool = False
    creates: Kind | None = None
    body: BodyKind = BodyKind.NONE
    streams: bool = False
    upgrades: bool = False
    scope: Kind | None = None
    scrub: bool = False
    query: frozenset[str] = frozenset()


def _ep(method: str, pattern: str, name: str, *query: str, **flags: Any) -> Route:
    kind = flags.pop("kind", None)
    if kind is None and "{id}" in pattern:
        kind = Kind(name.partition(".")[0])
    return Route(
        name=name,
        method=method,
        pattern=pattern,
        kind=kind,
        owned=kind is not None and kind is not Kind.IMAGE,
        query=frozenset(query),
        **flags,
    )


_C, _E, _V, _N, _I = Kind.CONTAINER, Kind.EXEC, Kind.VOLUME, Kind.NETWORK, Kind.IMAGE
_LOGS = ("follow", "stdout", "stderr", "since", "until", "timestamps", "tail", "details")
_ATTACH = ("detachKeys", "logs", "stream", "stdin", "stdout", "stderr")

ENDPOINTS: tuple[Route, ...] = (
    # --- system ---
    # Version negotiation; answers "OK" and the API version, nothing of anyone.
    _ep("GET", "/_ping", "system.ping"),
    _ep("HEAD", "/_ping", "system.ping"),
    # The engine's and API's versions: every client asks first.
    _ep("GET", "/version", "system.version"),
    # Host-wide counts, names and paths: served, but only what scrub_info keeps.
    _ep("GET", "/info", "system.info", scrub=True),
    # Scoped to the cell's children; each event is checked again on the way back.
    _ep("GET", "/events", "system.events", "since", "until", "filters", streams=True, scope=_C),
    # Denied by absence: /system/df (every object on the host), /auth, /build, /commit,
    # /session, /distribution, /grpc, /swarm, /nodes, /services, /tasks, /secrets,
    # /configs, /plugins: none is needed to run containers, each reaches beyond the cell.
    #
    # --- containers ---
    _ep("GET", "/containers/json", "container.list", "all", "limit", "size", "filters", scope=_C),
    # The body is decoded the engine's way and hardened (harden_child); name and platform
    # are the only parameters of 1.41.
    _ep(
        "POST",
        "/containers/create",
        "container.create",
        "name",
        "platform",
        creates=_C,
        body=BodyKind.CONTAINER_CREATE,
    ),
    # Prune only what the filters scope to: the cell's stopped children.
    _ep("POST", "/containers/prune", "container.prune", "filters", scope=_C),
    # Read-only views of an owned child.
    _ep("GET", "/containers/{id}/json", "container.inspect", "size"),
    _ep("GET", "/containers/{id}/top", "container.top", "ps_args"),
    _ep("GET", "/containers/{id}/logs", "container.logs", *_LOGS, streams=True),
    _ep("GET", "/containers/{id}/stats", "container.stats", "stream", "one-shot", streams=True),
    _ep("GET", "/containers/{id}/changes", "container.changes"),
    # The child's filesystem is the agent's own data; the engine reads it chrooted
    # (CVE-2018-15664 fixed in 19.03.1). Copy out (GET), stat (HEAD) and copy in (PUT,
    # a tar stream; the child's root is read-only, so only its volumes and tmpfs take it).
    _ep("GET", "/containers/{id}/export", "container.export", streams=True),
    _ep("HEAD", "/containers/{id}/archive", "container.archive-stat", "path"),
    _ep("GET", "/containers/{id}/archive", "container.archive-get", "path", streams=True),
    _ep(
        "PUT",
        "/containers/{id}/archive",
        "container.archive-put",
        "path",
        "noOverwriteDirNonDir",
        "copyUIDGID",
        body=BodyKind.TAR,
    ),
    # Lifecycle of an owned child. No body: before API 1.24 a start body set a HostConfig.
    _ep("POST", "/containers/{id}/start", "container.start", "detachKeys"),
    _ep("POST", "/containers/{id}/stop", "container.stop", "t"),
    _ep("POST", "/containers/{id}/restart", "container.restart", "t"),
    _ep("POST", "/containers/{id}/kill", "container.kill", "signal"),
    _ep("POST", "/containers/{id}/pause", "container.pause"),
    _ep("POST", "/containers/{id}/unpause", "container.unpause"),
    _ep("POST", "/containers/{id}/rename", "container.rename", "name"),
    _ep("POST", "/containers/{id}/resize", "container.resize", "h", "w"),
    _ep("POST", "/containers/{id}/wait", "container.wait", "condition", streams=True),
    # docker run -it / docker attach: the 101 upgrade is relayed both ways (Tecnativa #132).
    _ep(
        "POST", "/containers/{id}/attach", "container.attach", *_ATTACH, streams=True, upgrades=True
    ),
    # v and force, never link (removes a link between two other containers).
    _ep("DELETE", "/containers/{id}", "container.remove", "v", "force"),
    # Denied by absence: /attach/ws (a second upgrade kind no client needs), /update
    # (changes limits after the quota check), /copy (gone since 1.12), /commit (writes a
    # shared image), /checkpoints.
    #
    # --- exec: an exec instance is owned through its container ---
    # The body is decoded and hardened (harden_exec: no privileged exec, no root user).
    _ep(
        "POST",
        "/containers/{id}/exec",
        "container.exec",
        creates=_E,
        body=BodyKind.EXEC_CREATE,
        kind=_C,
    ),
    _ep(
        "POST",
        "/exec/{id}/start",
        "exec.start",
        body=BodyKind.EXEC_START,
        streams=True,
        upgrades=True,
    ),
    _ep("POST", "/exec/{id}/resize", "exec.resize", "h", "w"),
    _ep("GET", "/exec/{id}/json", "exec.inspect"),
    #
    # --- images: shared by every cell on the engine, so read-only ---
    _ep("GET", "/images/json", "image.list", "all", "filters", "digests"),
    _ep("GET", "/images/{image}/json", "image.inspect", kind=_I),
    # Denied by absence: create (pull), build, push, tag, load, get (save), delete,
    # prune, search, history: each writes, poisons or exports what other cells use.
    #
    # --- networks: only the cell's own, read-only ---
    _ep("GET", "/networks", "network.list", "filters", scope=_N),
    _ep("GET", "/networks/{id}", "network.inspect", "verbose", "scope"),
    # Denied by absence: create, connect, disconnect, remove, prune: a child joins the cell
    # network at create and nothing else (ATTACKS.md C8).
    #
    # --- volumes ---
    _ep("GET", "/volumes", "volume.list", "filters", scope=_V),
    # The body is decoded and hardened (harden_volume: local driver, no options).
    _ep("POST", "/volumes/create", "volume.create", creates=_V, body=BodyKind.VOLUME_CREATE),
    _ep("POST", "/volumes/prune", "volume.prune", "filters", scope=_V),
    _ep("GET", "/volumes/{id}", "volume.inspect"),
    _ep("DELETE", "/volumes/{id}", "volume.remove", "force"),
)
"""Every endpoint the proxy serves (paths without the version prefix). Anything else is
"endpoint not allowed"; the comments say why each is here and what is left out."""

_OBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,511}")


def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\{id\}|\{image\})", pattern):
        if piece == "{id}":
            parts.append("(?P<ident>[^/]+)")
        elif piece == "{image}":
            parts.append("(?P<ident>.+)")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


_TABLE = tuple((_compile(r.pattern), r) for r in ENDPOINTS)


# --- normalise_path ---------------------------------------------------------------------------

_HEX = frozenset("0123456789abcdefABCDEF")
_PATH_CHARS = re.compile(r"[A-Za-z0-9._~:@/-]*")
_VERSION_LIKE = re.compile(r"[vV][0-9.]")
_VERSION = re.compile(r"v(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})")


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor)


def _deny(reason: str, rule: str = "") -> Decision:
    return Decision(False, reason, rule)


def _unescape(raw: str, *, plus: bool) -> bytes | None:
    """Go's unescape: ``%XX`` to a byte (and ``+`` to a space in a query); None if malformed."""
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "%":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                return None
            out.append(int(pair, 16))
            i += 3
            continue
        out += b" " if plus and c == "+" else c.encode("ascii")
        i += 1
    return bytes(out)


def _control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def normalise_path(  # noqa: C901, PLR0912 (one precedence chain, written once)
    raw_target: str,
) -> tuple[str, str | None, dict[str, list[str]]] | Decision:
    """(path without the version prefix, API version or None, query) of a request-target.

    The query maps each parameter to its one value (a list, as Go's ``url.Values``, of
    exactly one: a parameter given twice is refused).
    """
    if len(raw_target) > MAX_TARGET:
        return _deny("request-target too long", str(len(raw_target)))
    if any(not "\x21" <= c <= "\x7e" for c in raw_target):
        return _deny("invalid character in request-target")
    if not raw_target.startswith("/"):
        return _deny("request-target not in origin form", raw_target[:40])
    if "#" in raw_target:
        return _deny("fragment in request-target")
    raw_path, has_query, raw_query = raw_target.partition("?")

    # 2. percent-encoding
    if "%" in raw_path:
        decoded = _unescape(raw_path, plus=False)
        if decoded is None:
            return _deny("invalid percent-encoding", "path")
        text = decoded.decode("latin-1")
        if _control(text):
            return _deny("control character in path")
        if "%2f" in raw_path.lower():
            return _deny("encoded slash in path")
        if "%" in text:
            return _deny("double encoding in path")
        return _deny("percent-encoding in path")
    path = raw_path

    # 3. characters
    if ";" in path:
        return _deny("semicolon in path")
    if not _PATH_CHARS.fullmatch(path):
        return _deny("invalid character in path")

    # 4. segments
    segments = path.split("/")[1:]
    if "" in segments[:-1]:
        return _deny("empty segment in path")
    if len(segments) > 1 and segments[-1] == "":
        return _deny("trailing slash in path")
    if any(s in (".", "..") for s in segments):
        return _deny("dot segment in path")

    # 5. version
    version: str | None = None
    if _VERSION_LIKE.match(segments[0]):
        if not _VERSION.fullmatch(segments[0]):
            return _deny("invalid api version", segments[0])
        version = segments[0][1:]
        if _version(version) > _version(MAX_API_VERSION):
            return _deny("api version too new", version)
        if _version(version) < _version(MIN_API_VERSION):
            return _deny("api version too old", version)
        path = "/" + "/".join(segments[1:])

    # 6. query
    query: dict[str, list[str]] = {}
    if has_query:
        if ";" in raw_query:
            return _deny("semicolon in query")
        for pair in raw_query.split("&"):
            if not pair:
                continue
            raw_key, _, raw_value = pair.partition("=")
            key_bytes = _unescape(raw_key, plus=True)
            value_bytes = _unescape(raw_value, plus=True)
            if key_bytes is None or value_bytes is None:
                return _deny("invalid percent-encoding", "query")
            try:
                key, value = key_bytes.decode("utf-8"), value_bytes.decode("utf-8")
            except UnicodeDecodeError:
                return _deny("query not UTF-8")
            if _control(key) or _control(value):
                return _deny("control character in query", key)
            if key in query:
                return _deny("duplicate query parameter", key)
            query[key] = [value]
    return path, version, query


# --- route and decide_request -----------------------------------------------------------------


def route(method: str, path: str) -> Route | Decision:
    """The endpoint of ``method`` and a normalised, unversioned ``path``; or a refusal."""
    for regex, template in _TABLE:
        if template.method != method:
            continue
        m = regex.fullmatch(path)
        if m is None:
            continue
        ident = m.groupdict().get("ident")
        if ident is None:
            return template
        pattern = _IMAGE_NAME if template.kind is Kind.IMAGE else _OBJECT_NAME
        if not pattern.fullmatch(ident):
            return _deny("invalid object name", ident[:80])
        return replace(template, ident=ident)
    return _deny("endpoint not allowed", f"{method} {path}"[:120])


@dataclass(frozen=True)
class Request:
    """A request the proxy understands: its endpoint, and the parts it forwards."""

    route: Route
    path: str
    version: str
    """The API version to ask the engine for: the client's, or ``MAX_API_VERSION``."""
    query: dict[str, str]

    @property
    def target(self) -> str:
        """The request-target to forward, built here rather than copied from the client."""
        return build_target(self.path, self.version, self.query)

    def with_ident(self, ident: str) -> Request:
        """The request naming the object by ``ident``: the full id the sidecar resolved.

        Forwarding the id that was checked, never the name or prefix that was sent, keeps a
        name deleted and recreated between the check and the call from reaching another
        object (ATTACKS.md C6).
        """
        if self.route.ident is None:
            raise ValueError(f"{self.route.name} names no object")
        path = self.route.pattern.replace("{id}", ident).replace("{image}", ident)
        return replace(self, route=replace(self.route, ident=ident), path=path)


def build_target(path: str, version: str, query: Mapping[str, str]) -> str:
    """``/v<version><path>?<query>``, the query encoded as Go's ``url.Values.Encode``."""
    target = f"/v{version}{path}"
    if query:
        target += "?" + "&".join(
            f"{_query_escape(k)}={_query_escape(v)}" for k, v in sorted(query.items())
        )
    return target


def _query_escape(text: str) -> str:
    return quote(text, safe="").replace("%20", "+")


def decide_request(method: str, raw_target: str) -> Request | Decision:
    """What a request is, by the decision order of the module docstring; or a refusal."""
    normal = normalise_path(raw_target)
    if isinstance(normal, Decision):
        return normal
    path, version, query = normal
    found = route(method, path)
    if isinstance(found, Decision):
        return found
    for key in query:
        if key not in found.query:
            return _deny("unknown query parameter", key[:80])
    if found.name in _NAMED_BY_QUERY and reserved_name(query.get("name", [""])[0]):
        return _deny("reserved name", "name")
    return Request(
        route=found,
        path=path,
        version=version or MAX_API_VERSION,
        query={k: v[0] for k, v in query.items()},
    )


# --- ownership, filters, answers --------------------------------------------------------------

_ROLES = {
    Kind.CONTAINER: ROLE_CHILD,
    Kind.EXEC: ROLE_CHILD,  # the labels of the exec's container
    Kind.VOLUME: ROLE_CHILD,
    Kind.NETWORK: ROLE_NETWORK,
}


def decide_ownership(kind: Kind, labels: object, *, tenant: str, cell: str) -> Decision:
    """Whether the cell owns an object with these labels (the engine's ``Labels``)."""
    role = _ROLES.get(kind)
    if role is None:
        return _deny("not owned", f"{kind} objects are shared")
    if not isinstance(labels, Mapping):
        return _deny("not owned", LABEL_TENANT)
    for label, wanted in ((LABEL_TENANT, tenant), (LABEL_CELL, cell), (LABEL_ROLE, role)):
        if labels.get(label) != wanted:
            return _deny("not owned", label)
    return Decision(True, "owned", str(kind))


def decide_created_volume(doc: object, *, tenant: str, cell: str) -> Decision:
    """Whether the engine's answer to ``POST /volumes/create`` may reach the agent.

    The engine answers a create naming an existing volume with that volume, unchanged,
    whoever made it: relayed as it comes, another tenant's volume (its labels, mountpoint,
    creation time) would reach the agent. Only a volume the cell owns may; any other is
    "name in use", the rule naming the volume the agent asked for.
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("Name"), str):
        return _deny("name in use", "no volume in the answer")
    owned = decide_ownership(Kind.VOLUME, doc.get("Labels"), tenant=tenant, cell=cell)
    if not owned.allow:
        return _deny("name in use", str(doc["Name"])[:80])
    return owned


_ENGINE_ID = re.compile(r"[0-9a-fA-F]{12,64}")


def scrub_engine_error(doc: object) -> dict[str, str]:
    """An engine error answer (``{"message": ...}``) without object ids in its message.

    A create or rename whose name is taken answers ``409 ... already in use by container
    "<full id>"``: the id of a container that may be another tenant's. Every run of 12 to
    64 hex digits (an id or an id prefix) becomes ``<id>``; the rest of the message stays,
    so the CLI still says what went wrong.
    """
    message = doc.get("message") if isinstance(doc, Mapping) else None
    if not isinstance(message, str):
        return {"message": "the engine refused the request"}
    return {"message": _ENGINE_ID.sub("<id>", message)}


def owner_labels(kind: Kind, *, tenant: str, cell: str) -> dict[str, str]:
    """The labels that make an object of ``kind`` owned by the cell."""
    return {LABEL_TENANT: tenant, LABEL_CELL: cell, LABEL_ROLE: _ROLES[kind]}


def scope_filters(kind: Kind, raw: str | None, *, tenant: str, cell: str) -> str | Decision:
    """The ``filters`` parameter to forward for a list, prune or events request.

    The client's filters (either of the engine's two forms, ``{"label": {"a=b": true}}`` or
    ``{"label": ["a=b"]}``), plus label filters naming the owner labels of ``kind``; the
    engine ANDs label filters, so nothing of another cell can match. ``"invalid filters"``
    if the client's are not what the engine would read the same way.
    """
    args: dict[str, dict[str, bool]] = {}
    if raw:
        value = load_strict_json(raw)
        if isinstance(value, Decision):
            return _deny("invalid filters", value.reason)
        if not isinstance(value, dict):
            return _deny("invalid filters", "not an object")
        for key, terms in value.items():
            if isinstance(terms, dict) and all(isinstance(v, bool) for v in terms.values()):
                args[key] = dict.fromkeys(terms, True)  # the engine reads only the keys
            elif isinstance(terms, list) and all(isinstance(v, str) for v in terms):
                args[key] = dict.fromkeys(terms, True)
            else:
                return _deny("invalid filters", key[:80])
    labels = args.setdefault("label", {})
    for label, value_ in owner_labels(kind, tenant=tenant, cell=cell).items():
        labels[f"{label}={value_}"] = True
    return json.dumps(args, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def filter_list(
    kind: Kind, items: Iterable[object], *, tenant: str, cell: str
) -> list[Mapping[str, Any]]:
    """The items of a list answer (containers, volumes, networks) that the cell owns."""
    return [
        item
        for item in items
        if isinstance(item, Mapping)
        and decide_ownership(kind, item.get("Labels"), tenant=tenant, cell=cell).allow
    ]


def filter_event(event: object, *, tenant: str, cell: str) -> bool:
    """Whether an event of ``GET /events`` may reach the agent: a container event of a child."""
    if not isinstance(event, Mapping) or event.get("Type") != "container":
        return False
    actor = event.get("Actor")
    attributes = actor.get("Attributes") if isinstance(actor, Mapping) else None
    return decide_ownership(Kind.CONTAINER, attributes, tenant=tenant, cell=cell).allow


_INFO_KEPT = (
    "ServerVersion",
    "OSType",
    "Architecture",
    "OperatingSystem",
    "OSVersion",
    "KernelVersion",
    "NCPU",
    "MemTotal",
    "Driver",
    "CgroupDriver",
    "CgroupVersion",
    "DefaultRuntime",
    "LoggingDriver",
    "SecurityOptions",
    "MemoryLimit",
    "SwapLimit",
    "CpuCfsPeriod",
    "CpuCfsQuota",
    "CPUShares",
    "CPUSet",
    "PidsLimit",
    "OomKillDisable",
    "IPv4Forwarding",
    "Isolation",
    "ExperimentalBuild",
    "Debug",
)


def scrub_info(info: Mapping[str, Any], *, runtimes: Iterable[str] = ()) -> dict[str, Any]:
    """``GET /info`` without what is not the cell's: counts, names, paths, proxies, labels.

    Kept: the engine's and host's kind and capacity, which a client uses to adapt. Counts of
    containers and images are zero; ``Runtimes`` lists only the ones a child may use.
    """
    out = {k: info[k] for k in _INFO_KEPT if k in info}
    out.update(Containers=0, ContainersRunning=0, ContainersPaused=0, ContainersStopped=0, Images=0)
    out["Runtimes"] = {name: {} for name in runtimes}
    return out


def error_body(decision: Decision) -> bytes:
    """A Docker-style error body (``{"message": ...}``) for a refusal: what the CLI prints."""
    detail = f": {decision.rule}" if decision.rule else ""
    message = f"agentcell docker proxy: {decision.reason}{detail}"
    return json.dumps({"message": message}, ensure_ascii=True).encode("ascii")
