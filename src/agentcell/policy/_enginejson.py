"""Decode an Engine API body exactly as the engine does; refuse what it would read differently.

The engine (API 1.41, Go's ``encoding/json``) matches an object key to a struct field
case-insensitively (``privileged`` is ``Privileged``; so are ``\\u0050rivileged`` and, by
Go's Unicode folding, U+017F (long s) for ``s`` and U+212A (Kelvin) for ``k``), keeps the last of
duplicate keys, ignores keys it does not know, reads ``null`` as "leave the field alone",
and, in a create body, also reads every HostConfig field at the top level (a deprecated
embedded struct the engine merges with, or prefers to, the inner ``HostConfig``). Some of
its decoders stop after the first value and ignore what follows. A proxy that reads the
same bytes any other way sees a different container than the engine creates
(docker/cli #7086). This module owns the schemas of the bodies the docker proxy accepts
and the one decoder that reads them; the proxy forwards only what it re-serialises from
the result (``encode_engine_json``), never the bytes it was sent.

Decision order of ``decode_engine_json`` (the one place it is written;
``tests/policy/test_policy_enginejson.py`` mirrors it row by row). A refusal is a
``Decision`` whose reason is a fixed phrase (``JSON_REASONS``) and whose rule is the JSON
path or key it concerns.

1. Size: an empty body ("body is empty"); more than ``MAX_BODY`` bytes ("body too large").
2. Text: strict UTF-8 without a byte order mark ("body not UTF-8").
3. Syntax: one JSON value by RFC 8259, without ``NaN`` or ``Infinity`` ("invalid JSON";
   nesting too deep for the parser to follow is "body nested too deeply"), followed by
   nothing but JSON whitespace ("ambiguous body: trailing data"); an integer longer than
   20 digits, beyond every Go integer type ("number out of range").
4. Keys, in every object at every level, known or not: two keys equal after Go's
   case-folding, exact duplicates included ("ambiguous body: duplicate key").
5. Shape: nesting deeper than ``MAX_DEPTH`` ("body nested too deeply"); a string with a
   lone surrogate escape, which Go reads as U+FFFD ("ambiguous body: lone surrogate");
   a top level that is not an object ("body not an object").
6. Schema, from the top down, each struct's keys in body order: a HostConfig field at the
   top level of a create body ("ambiguous body: host config field outside HostConfig"); a
   key that names no field of its struct, or a newer API version's field other than at
   its zero value ("unknown field"); each key rewritten to its field's spelling.
7. Types: a bool field takes a JSON bool, an integer field a JSON integer (no fraction,
   no exponent), a string field a string, a list a list, an object an object ("wrong
   type"); an integer within its Go type ("number out of range"); a fixed-length array
   exactly its length ("wrong type"). ``null`` as a field's value is the same as absent
   and is dropped; ``null`` inside a list or map is refused ("wrong type"). A string-or-
   list field (``Cmd``, ``Entrypoint``, ``Shell``, ``CapAdd``, ``CapDrop``) becomes a list.

The result is plain ``dict``/``list``/``str``/``int``/``bool`` with canonical keys: what
the engine would have decoded, written so that re-encoding and decoding it again gives it
back unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentcell.policy._decision import Decision

__all__ = [
    "CONFIG_FIELDS",
    "CONTAINER_CREATE",
    "ENDPOINT_SETTINGS",
    "EXEC_CREATE",
    "EXEC_START",
    "HOST_CONFIG",
    "JSON_REASONS",
    "MAX_BODY",
    "MAX_DEPTH",
    "MOUNT",
    "VOLUME_CREATE",
    "Schema",
    "canonicalise",
    "decode_engine_json",
    "encode_engine_json",
    "fold_key",
    "load_strict_json",
]

MAX_BODY = 1024 * 1024
"""Largest body accepted: create bodies are a few KiB; ATTACKS.md C3 refuses over 1 MiB."""
MAX_DEPTH = 16
"""Deepest nesting accepted: the deepest known field (a mount's driver options) is 7."""
_MAX_DIGITS = 20  # 2**64 has 20 digits: anything longer is out of every Go integer type

JSON_REASONS: tuple[str, ...] = (
    "body is empty",
    "body too large",
    "body not UTF-8",
    "invalid JSON",
    "ambiguous body: trailing data",
    "number out of range",
    "ambiguous body: duplicate key",
    "body nested too deeply",
    "ambiguous body: lone surrogate",
    "body not an object",
    "ambiguous body: host config field outside HostConfig",
    "unknown field",
    "wrong type",
)
"""Every reason ``decode_engine_json`` and ``canonicalise`` give."""


class _Refusal(Exception):
    def __init__(self, reason: str, rule: str) -> None:
        super().__init__(reason)
        self.decision = Decision(False, reason, rule)


def fold_key(key: str) -> str:
    """A key as Go's encoding/json compares it with an ASCII field name.

    ASCII case-insensitively, with U+017F (long s) equal to ``s`` and U+212A (Kelvin sign)
    equal to ``k``: the only non-ASCII runes whose simple case folding reaches an ASCII
    letter. Any other non-ASCII rune matches no field.
    """
    if key.isascii():
        return key.lower()
    return "".join(
        c.lower() if c.isascii() else "s" if c == "\u017f" else "k" if c == "\u212a" else c
        for c in key
    )


# --- types ------------------------------------------------------------------------------------


class _Type:
    """A Go type as the JSON decoder sees it."""


@dataclass(frozen=True)
class _Bool(_Type):
    pass


@dataclass(frozen=True)
class _Int(_Type):
    lo: int
    hi: int


@dataclass(frozen=True)
class _Str(_Type):
    pass


@dataclass(frozen=True)
class _StrSlice(_Type):
    """strslice.StrSlice: a JSON string or a list of strings, always a list once decoded."""


@dataclass(frozen=True)
class _List(_Type):
    item: _Type
    length: int | None = None  # a Go array: exactly this many items


@dataclass(frozen=True)
class _Map(_Type):
    value: _Type


@dataclass(frozen=True)
class _Empty(_Type):
    """struct{}: the values of ExposedPorts and Volumes; only ``{}``."""


@dataclass(frozen=True)
class Schema(_Type):
    """A Go struct: its JSON field names, and what its decoder does with other keys."""

    name: str
    fields: Mapping[str, _Type]
    newer: Mapping[str, _Type] = field(default_factory=dict)
    """Fields of newer API versions that current clients send at their zero value."""
    outside: Mapping[str, str] = field(default_factory=dict)
    """Keys the engine also reads into this struct but that are refused, with the reason."""
    _by_fold: dict[str, tuple[str, str]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        groups = (("field", self.fields), ("newer", self.newer), ("outside", self.outside))
        for group, names in groups:
            for name in names:
                folded = fold_key(name)
                if folded in self._by_fold:
                    raise ValueError(f"{self.name}: {name} folds to the key of another field")
                self._by_fold[folded] = (group, name)

    def lookup(self, key: str) -> tuple[str, str] | None:
        """Which field a key names under Go's matching, and its group; None if none.

        The group is ``field`` (a field of the struct), ``newer`` (a newer API version's
        field) or ``outside`` (read by the engine here, refused by the proxy).
        """
        if key in self.fields:
            return ("field", key)
        return self._by_fold.get(fold_key(key))


BOOL = _Bool()
STR = _Str()
STRS = _List(STR)
STR_MAP = _Map(STR)
STR_SLICE = _StrSlice()
INT64 = _Int(-(2**63), 2**63 - 1)
INT = INT64  # Go's int on amd64
UINT16 = _Int(0, 2**16 - 1)
UINT32 = _Int(0, 2**32 - 1)
UINT64 = _Int(0, 2**64 - 1)
UINT = UINT64

_THROTTLE = _List(Schema("ThrottleDevice", {"Path": STR, "Rate": UINT64}))

HEALTHCHECK = Schema(
    "HealthConfig",
    {"Test": STRS, "Interval": INT64, "Timeout": INT64, "StartPeriod": INT64, "Retries": INT},
)

MOUNT = Schema(
    "Mount",
    {
        "Type": STR,
        "Source": STR,
        "Target": STR,
        "ReadOnly": BOOL,
        "Consistency": STR,
        "BindOptions": Schema("BindOptions", {"Propagation": STR, "NonRecursive": BOOL}),
        "VolumeOptions": Schema(
            "VolumeOptions",
            {
                "NoCopy": BOOL,
                "Labels": STR_MAP,
                "DriverConfig": Schema("Driver", {"Name": STR, "Options": STR_MAP}),
            },
        ),
        "TmpfsOptions": Schema("TmpfsOptions", {"SizeBytes": INT64, "Mode": UINT32}),
    },
)

_RESOURCES: dict[str, _Type] = {
    "CpuShares": INT64,
    "Memory": INT64,
    "NanoCpus": INT64,
    "CgroupParent": STR,
    "BlkioWeight": UINT16,
    "BlkioWeightDevice": _List(Schema("WeightDevice", {"Path": STR, "Weight": UINT16})),
    "BlkioDeviceReadBps": _THROTTLE,
    "BlkioDeviceWriteBps": _THROTTLE,
    "BlkioDeviceReadIOps": _THROTTLE,
    "BlkioDeviceWriteIOps": _THROTTLE,
    "CpuPeriod": INT64,
    "CpuQuota": INT64,
    "CpuRealtimePeriod": INT64,
    "CpuRealtimeRuntime": INT64,
    "CpusetCpus": STR,
    "CpusetMems": STR,
    "Devices": _List(
        Schema(
            "DeviceMapping", {"PathOnHost": STR, "PathInContainer": STR, "CgroupPermissions": STR}
        )
    ),
    "DeviceCgroupRules": STRS,
    "DeviceRequests": _List(
        Schema(
            "DeviceRequest",
            {
                "Driver": STR,
                "Count": INT,
                "DeviceIDs": STRS,
                "Capabilities": _List(STRS),
                "Options": STR_MAP,
            },
        )
    ),
    "KernelMemory": INT64,
    "KernelMemoryTCP": INT64,
    "MemoryReservation": INT64,
    "MemorySwap": INT64,
    "MemorySwappiness": INT64,
    "OomKillDisable": BOOL,
    "PidsLimit": INT64,
    "Ulimits": _List(Schema("Ulimit", {"Name": STR, "Hard": INT64, "Soft": INT64})),
    "CpuCount": INT64,
    "CpuPercent": INT64,
    "IOMaximumIOps": UINT64,
    "IOMaximumBandwidth": UINT64,
}

HOST_CONFIG = Schema(
    "HostConfig",
    {
        "Binds": STRS,
        "ContainerIDFile": STR,
        "LogConfig": Schema("LogConfig", {"Type": STR, "Config": STR_MAP}),
        "NetworkMode": STR,
        "PortBindings": _Map(_List(Schema("PortBinding", {"HostIp": STR, "HostPort": STR}))),
        "RestartPolicy": Schema("RestartPolicy", {"Name": STR, "MaximumRetryCount": INT}),
        "AutoRemove": BOOL,
        "VolumeDriver": STR,
        "VolumesFrom": STRS,
        "CapAdd": STR_SLICE,
        "CapDrop": STR_SLICE,
        "CgroupnsMode": STR,
        "Dns": STRS,
        "DnsOptions": STRS,
        "DnsSearch": STRS,
        "ExtraHosts": STRS,
        "GroupAdd": STRS,
        "IpcMode": STR,
        "Cgroup": STR,
        "Links": STRS,
        "OomScoreAdj": INT,
        "PidMode": STR,
        "Privileged": BOOL,
        "PublishAllPorts": BOOL,
        "ReadonlyRootfs": BOOL,
        "SecurityOpt": STRS,
        "StorageOpt": STR_MAP,
        "Tmpfs": STR_MAP,
        "UTSMode": STR,
        "UsernsMode": STR,
        "ShmSize": INT64,
        "Sysctls": STR_MAP,
        "Runtime": STR,
        "ConsoleSize": _List(UINT, length=2),
        "Isolation": STR,
        **_RESOURCES,
        "Mounts": _List(MOUNT),
        "MaskedPaths": STRS,
        "ReadonlyPaths": STRS,
        "Init": BOOL,
    },
)
"""The HostConfig of API 1.41 (moby 20.10); a field not named here is refused as unknown."""

ENDPOINT_SETTINGS = Schema(
    "EndpointSettings",
    {
        "IPAMConfig": Schema(
            "EndpointIPAMConfig", {"IPv4Address": STR, "IPv6Address": STR, "LinkLocalIPs": STRS}
        ),
        "Links": STRS,
        "Aliases": STRS,
        "NetworkID": STR,
        "EndpointID": STR,
        "Gateway": STR,
        "IPAddress": STR,
        "IPPrefixLen": INT,
        "IPv6Gateway": STR,
        "GlobalIPv6Address": STR,
        "GlobalIPv6PrefixLen": INT,
        "MacAddress": STR,
        "DriverOpts": STR_MAP,
    },
    # docker CLI 28 sends these (API 1.45, 1.48) empty even when it speaks 1.41.
    newer={"DNSNames": STRS, "GwPriority": INT},
)

CONFIG_FIELDS: dict[str, _Type] = {
    "Hostname": STR,
    "Domainname": STR,
    "User": STR,
    "AttachStdin": BOOL,
    "AttachStdout": BOOL,
    "AttachStderr": BOOL,
    "ExposedPorts": _Map(_Empty()),
    "Tty": BOOL,
    "OpenStdin": BOOL,
    "StdinOnce": BOOL,
    "Env": STRS,
    "Cmd": STR_SLICE,
    "Healthcheck": HEALTHCHECK,
    "ArgsEscaped": BOOL,
    "Image": STR,
    "Volumes": _Map(_Empty()),
    "WorkingDir": STR,
    "Entrypoint": STR_SLICE,
    "NetworkDisabled": BOOL,
    "MacAddress": STR,
    "OnBuild": STRS,
    "Labels": STR_MAP,
    "StopSignal": STR,
    "StopTimeout": INT,
    "Shell": STR_SLICE,
}

_OUTSIDE = "ambiguous body: host config field outside HostConfig"

CONTAINER_CREATE = Schema(
    "ContainerConfigWrapper",
    {
        **CONFIG_FIELDS,
        "HostConfig": HOST_CONFIG,
        "NetworkingConfig": Schema(
            "NetworkingConfig", {"EndpointsConfig": _Map(ENDPOINT_SETTINGS)}
        ),
    },
    # The wrapper embeds a deprecated *HostConfig and a Cpuset string: the engine reads
    # these keys at the top level too, and uses them when there is no inner HostConfig.
    outside={**dict.fromkeys(HOST_CONFIG.fields, _OUTSIDE), "Cpuset": _OUTSIDE},
)
"""``POST /containers/create``: container.Config, HostConfig and NetworkingConfig."""

EXEC_CREATE = Schema(
    "ExecConfig",
    {
        "User": STR,
        "Privileged": BOOL,
        "Tty": BOOL,
        "AttachStdin": BOOL,
        "AttachStderr": BOOL,
        "AttachStdout": BOOL,
        "Detach": BOOL,
        "DetachKeys": STR,
        "Env": STRS,
        "WorkingDir": STR,
        "Cmd": STRS,
    },
)
"""``POST /containers/{id}/exec`` (API 1.41: no ConsoleSize)."""

EXEC_START = Schema("ExecStartCheck", {"Detach": BOOL, "Tty": BOOL})
"""``POST /exec/{id}/start``."""

VOLUME_CREATE = Schema(
    "VolumeCreateBody", {"Name": STR, "Driver": STR, "DriverOpts": STR_MAP, "Labels": STR_MAP}
)
"""``POST /volumes/create`` (API 1.41: no ClusterVolumeSpec)."""


# --- decoding ---------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_WHITESPACE = " \t\n\r"


def _load(body: bytes) -> Any:
    """Steps 1-5 of the decision order: one strict JSON value, or a _Refusal."""
    if not body:
        raise _Refusal("body is empty", "")
    if len(body) > MAX_BODY:
        raise _Refusal("body too large", str(len(body)))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Refusal("body not UTF-8", f"byte {e.start}") from None
    if text.startswith("\ufeff"):
        raise _Refusal("body not UTF-8", "byte order mark")
    return _load_text(text)


def _load_text(text: str) -> Any:
    # Met while parsing, reported after the syntax is known good: the order of the docstring.
    big: list[_Refusal] = []
    duplicate: list[_Refusal] = []

    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > _MAX_DIGITS:
            big.append(_Refusal("number out of range", digits[:24]))
            return 0
        return int(digits)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if not duplicate:
            seen: set[str] = set()
            for key, _ in items:
                folded = fold_key(key)
                if folded in seen:
                    duplicate.append(_Refusal("ambiguous body: duplicate key", key))
                    break
                seen.add(folded)
        return dict(items)

    decoder = json.JSONDecoder(
        object_pairs_hook=pairs, parse_int=parse_int, parse_constant=_no_constant
    )
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = decoder.raw_decode(text, start)
    except RecursionError:
        raise _Refusal("body nested too deeply", "") from None
    except ValueError as e:  # JSONDecodeError, NaN/Infinity
        raise _Refusal("invalid JSON", str(e)[:80]) from None
    if text[end:].strip(_WHITESPACE):
        raise _Refusal("ambiguous body: trailing data", f"offset {end}")
    for found in (*big, *duplicate):
        raise found
    _check_shape(value)
    return value


def _check_duplicates(value: Any) -> None:
    """Step 4 for a value that did not come from the parser: folded keys, every object."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:  # step 5 says so, once duplicates are known absent above
            continue
        if isinstance(item, Mapping):
            _no_folded_duplicates(item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)


def _check_shape(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise _Refusal("body nested too deeply", f"depth {depth}")
            if isinstance(item, dict):
                for k, v in item.items():
                    if not isinstance(k, str):
                        raise _Refusal("wrong type", repr(k)[:40])
                    _check_string(k)
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)


def _check_string(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        shown = s[:40].encode("utf-8", "backslashreplace").decode("ascii", "replace")
        raise _Refusal("ambiguous body: lone surrogate", shown) from None


def load_strict_json(text: str) -> Any | Decision:
    """One JSON value from text, by steps 3-5 of the decision order (any top level).

    For JSON carried elsewhere than a body, such as a ``filters`` query parameter.
    """
    try:
        return _load_text(text)
    except _Refusal as r:
        return r.decision


def decode_engine_json(body: bytes, schema: Schema = CONTAINER_CREATE) -> dict[str, Any] | Decision:
    """The body as the engine would decode it into ``schema``, keys canonical; or a refusal."""
    try:
        value = _load(body)
    except _Refusal as r:
        return r.decision
    return canonicalise(value, schema)


def canonicalise(value: Any, schema: Schema) -> dict[str, Any] | Decision:
    """Steps 4-7 for a value already decoded: ``_load``'s result, or a dict from anywhere.

    A dict cannot hold exact duplicates; keys that fold together are refused as in step 4.
    """
    if not isinstance(value, Mapping):
        return Decision(False, "body not an object", type(value).__name__)
    try:
        _check_duplicates(value)
        _check_shape(dict(value))
        return _walk_struct(value, schema, "")
    except _Refusal as r:
        return r.decision


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_zero(value: Any) -> bool:
    if value is None or value is False:
        return True
    if type(value) is int:
        return value == 0
    return isinstance(value, str | list | dict) and not value


def _walk(value: Any, t: _Type, path: str) -> Any:  # noqa: C901 (one case per JSON value kind)
    if isinstance(t, Schema):
        return _walk_struct(value, t, path)
    if value is None:  # a field's null is dropped by _walk_struct: this one is in a list or map
        raise _Refusal("wrong type", path)
    if isinstance(t, _Bool):
        if not isinstance(value, bool):
            raise _Refusal("wrong type", path)
        return value
    if isinstance(t, _Int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Refusal("wrong type", path)
        if not t.lo <= value <= t.hi:
            raise _Refusal("number out of range", path)
        return value
    if isinstance(t, _Str):
        if not isinstance(value, str):
            raise _Refusal("wrong type", path)
        return value
    if isinstance(t, _StrSlice):
        return [value] if isinstance(value, str) else _walk(value, STRS, path)
    if isinstance(t, _List):
        if not isinstance(value, list) or (t.length is not None and len(value) != t.length):
            raise _Refusal("wrong type", path)
        return [_walk(v, t.item, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, Mapping):
        raise _Refusal("wrong type", path)
    _no_folded_duplicates(value)
    if isinstance(t, _Empty):
        if value:
            raise _Refusal("unknown field", _join(path, str(next(iter(value)))))
        return {}
    assert isinstance(t, _Map)
    result = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise _Refusal("wrong type", _join(path, repr(k)))
        result[k] = _walk(v, t.value, _join(path, k))
    return result


def _walk_struct(value: Any, t: Schema, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Refusal("wrong type", path or t.name)
    _no_folded_duplicates(value)
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise _Refusal("wrong type", _join(path, repr(key)))
        found = t.lookup(key)
        if found is None:
            raise _Refusal("unknown field", _join(path, key))
        group, name = found
        where = _join(path, name)
        if group == "outside":
            raise _Refusal(t.outside[name], where)
        if group == "newer":
            if not _is_zero(item):
                raise _Refusal("unknown field", where)
            if item is not None:
                _walk(item, t.newer[name], where)  # its zero value, of its type
            continue
        if item is not None:
            out[name] = _walk(item, t.fields[name], where)
    return out


def _no_folded_duplicates(value: Mapping[Any, Any]) -> None:
    seen: set[str] = set()
    for key in value:
        if isinstance(key, str):
            folded = fold_key(key)
            if folded in seen:
                raise _Refusal("ambiguous body: duplicate key", key)
            seen.add(folded)


def encode_engine_json(value: Any) -> bytes:
    """The bytes the proxy forwards: compact, ASCII-only, no NaN; decoded back unchanged."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode(
        "ascii"
    )
