"""Decoding bodies as the engine does: ``decode_engine_json`` and its schemas.

``DECODE`` mirrors the decision order of ``agentcell.policy._enginejson`` step by step
(row ids start with the step's number) and holds every ATTACKS.md C2 parser differential
(docker/cli #7086), C3's oversized body and C9's new-version fields. The bodies the stock
docker CLI sends (captured from docker 28.2 speaking API 1.41) decode. Then properties:
nothing crashes the decoder, what it accepts re-encodes to itself, and a model of Go's
decoder reads every accepted body exactly as the decoder does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentcell.policy import (
    CONFIG_FIELDS,
    CONTAINER_CREATE,
    EXEC_CREATE,
    EXEC_START,
    HOST_CONFIG,
    JSON_REASONS,
    MAX_BODY,
    VOLUME_CREATE,
    Decision,
    Schema,
    canonicalise,
    decode_engine_json,
    encode_engine_json,
    fold_key,
    load_strict_json,
)

# `docker run -it --rm alpine:3 sh`, docker CLI 28.2 negotiated down to API 1.41.
CLI_RUN_IT = (
    b'{"Hostname":"","Domainname":"","User":"","AttachStdin":true,"AttachStdout":true,'
    b'"AttachStderr":true,"Tty":true,"OpenStdin":true,"StdinOnce":true,"Env":null,'
    b'"Cmd":["sh"],"Image":"alpine:3","Volumes":{},"WorkingDir":"","Entrypoint":null,'
    b'"OnBuild":null,"Labels":{},"HostConfig":{"Binds":null,"ContainerIDFile":"",'
    b'"LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","PortBindings":{},'
    b'"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":true,'
    b'"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":null,"CapDrop":null,'
    b'"CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,'
    b'"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"",'
    b'"Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,'
    b'"UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,'
    b'"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],'
    b'"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],'
    b'"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,'
    b'"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],'
    b'"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,'
    b'"MemorySwappiness":-1,"OomKillDisable":false,"PidsLimit":0,"Ulimits":[],"CpuCount":0,'
    b'"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":null,'
    b'"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{"default":{"IPAMConfig":null,'
    b'"Links":null,"Aliases":null,"MacAddress":"","DriverOpts":null,"GwPriority":0,'
    b'"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,'
    b'"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}}}'
)
# `docker exec -it c1 sh` and `docker volume create --label a=b myvol`, same CLI.
CLI_EXEC = (
    b'{"User":"","Privileged":false,"Tty":true,"AttachStdin":true,"AttachStderr":true,'
    b'"AttachStdout":true,"Detach":false,"DetachKeys":"","Env":null,"WorkingDir":"","Cmd":["sh"]}'
)
CLI_EXEC_START = b'{"Detach":false,"Tty":true}'
CLI_VOLUME = b'{"Driver":"local","Labels":{"a":"b"},"Name":"myvol"}'


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def deny(reason: str) -> tuple[bool, str]:
    return (False, reason)


def row(name: str, raw: bytes | str, expected: Any, schema: Schema = CONTAINER_CREATE) -> Any:
    data = raw.encode() if isinstance(raw, str) else raw
    return pytest.param(data, schema, expected, id=name)


DECODE = [
    # 1. size
    row("1 an empty body is refused", b"", deny("body is empty")),
    row(
        "1 a body over 1 MiB is refused (C3)",
        b'{"Image":"' + b"a" * MAX_BODY + b'"}',
        deny("body too large"),
    ),
    row(
        "1 a body of exactly 1 MiB is read",
        b'{"Image":"a"}' + b" " * (MAX_BODY - 13),
        {"Image": "a"},
    ),
    # 2. text
    row("2 invalid UTF-8 is refused", b'{"Image":"\xff"}', deny("body not UTF-8")),
    row("2 an overlong UTF-8 encoding is refused", b'{"Image":"\xc0\xaf"}', deny("body not UTF-8")),
    row("2 a byte order mark is refused", b'\xef\xbb\xbf{"Image":"a"}', deny("body not UTF-8")),
    row("2 UTF-16 is refused", '{"Image":"a"}'.encode("utf-16"), deny("body not UTF-8")),
    # 3. syntax
    row("3 not JSON is refused", b"{Image: a}", deny("invalid JSON")),
    row("3 NaN is refused", b'{"HostConfig":{"Memory":NaN}}', deny("invalid JSON")),
    row("3 Infinity is refused", b'{"HostConfig":{"Memory":-Infinity}}', deny("invalid JSON")),
    row("3 single quotes are refused", b"{'Image':'a'}", deny("invalid JSON")),
    row("3 a comment is refused", b'{"Image":"a"/* x */}', deny("invalid JSON")),
    row("3 a trailing comma is refused", b'{"Image":"a",}', deny("invalid JSON")),
    row(
        "3 a raw control character in a string is refused",
        b'{"Image":"a\tb"}',
        deny("invalid JSON"),
    ),
    row("3 a leading zero is refused", b'{"HostConfig":{"Memory":01}}', deny("invalid JSON")),
    row("3 an unterminated object is refused", b'{"Image":"a"', deny("invalid JSON")),
    row(
        "3 a second object after the first is trailing data (C2)",
        b'{"Image":"a"}{"HostConfig":{"Privileged":true}}',
        deny("ambiguous body: trailing data"),
    ),
    row(
        "3 garbage after the object is trailing data",
        b'{"Image":"a"} x',
        deny("ambiguous body: trailing data"),
    ),
    row(
        "3 a NUL after the object is trailing data",
        b'{"Image":"a"}\x00',
        deny("ambiguous body: trailing data"),
    ),
    row(
        "3 trailing data is found before a duplicate",
        b'{"Image":"a","Image":"b"} x',
        deny("ambiguous body: trailing data"),
    ),
    row("3 whitespace around the object is fine", b' \r\n\t{"Image":"a"} \n', {"Image": "a"}),
    row(
        "3 an integer of 21 digits is out of range",
        b'{"HostConfig":{"Memory":123456789012345678901}}',
        deny("number out of range"),
    ),
    row(
        "3 nesting the parser cannot follow is refused",
        b"[" * 100_000,
        deny("body nested too deeply"),
    ),
    # 4. duplicate keys, at every level
    row(
        "4 an exact duplicate is refused (C2)",
        b'{"Image":"a","Image":"b"}',
        deny("ambiguous body: duplicate key"),
    ),
    row(
        "4 Privileged twice in two cases is refused (C2)",
        b'{"HostConfig":{"Privileged":false,"privileged":true}}',
        deny("ambiguous body: duplicate key"),
    ),
    row(
        "4 Privileged and \\u0050rivileged are the same key (C2)",
        b'{"HostConfig":{"Privileged":false,"\\u0050rivileged":true}}',
        deny("ambiguous body: duplicate key"),
    ),
    row(
        "4 HostConfig and hostconfig are the same key (C2)",
        b'{"HostConfig":{},"hostconfig":{"Privileged":true}}',
        deny("ambiguous body: duplicate key"),
    ),
    row(
        "4 a long s folds to s",
        '{"HostConfig":{"SecurityOpt":[],"\u017fecurityOpt":["seccomp=unconfined"]}}',
        deny("ambiguous body: duplicate key"),
    ),
    row(
        "4 a Kelvin sign folds to k",
        '{"HostConfig":{"Links":[],"Lin\u212as":["x:y"]}}',
        deny("ambiguous body: duplicate key"),
    ),
    row(
        "4 a duplicate label is refused",
        b'{"Labels":{"agentcell.tenant":"a","agentcell.tenant":"b"}}',
        deny("ambiguous body: duplicate key"),
    ),
    row(
        "4 labels differing in case are refused",
        b'{"Labels":{"agentcell.tenant":"a","AGENTCELL.TENANT":"b"}}',
        deny("ambiguous body: duplicate key"),
    ),
    row(
        "4 a duplicate inside an unknown field is still a duplicate",
        b'{"Unknown":{"a":1,"A":2}}',
        deny("ambiguous body: duplicate key"),
    ),
    row(
        "4 a duplicate network endpoint is refused",
        b'{"NetworkingConfig":{"EndpointsConfig":{"n":{},"n":{"Aliases":["x"]}}}}',
        deny("ambiguous body: duplicate key"),
    ),
    # 5. shape
    row(
        "5 nesting deeper than 16 is refused",
        b'{"a":' * 17 + b"1" + b"}" * 17,
        deny("body nested too deeply"),
    ),
    row(
        "5 a lone high surrogate is refused",
        b'{"Image":"\\ud800"}',
        deny("ambiguous body: lone surrogate"),
    ),
    row(
        "5 a lone low surrogate in a key is refused",
        b'{"\\udc00":1}',
        deny("ambiguous body: lone surrogate"),
    ),
    row(
        "5 a surrogate pair is one character",
        b'{"Image":"\\ud83d\\ude00"}',
        {"Image": "\U0001f600"},
    ),
    row("5 a list is not an object", b'[{"Image":"a"}]', deny("body not an object")),
    row("5 a string is not an object", b'"a"', deny("body not an object")),
    row("5 null is not an object", b"null", deny("body not an object")),
    # 6. schema
    row(
        "6 Privileged at the top level is read by the engine (deprecated HostConfig)",
        b'{"Image":"a","Privileged":true}',
        deny("ambiguous body: host config field outside HostConfig"),
    ),
    row(
        "6 binds at the top level, lower case",
        b'{"Image":"a","binds":["/:/host"]}',
        deny("ambiguous body: host config field outside HostConfig"),
    ),
    row(
        "6 Memory at the top level is merged into HostConfig",
        b'{"Image":"a","HostConfig":{},"Memory":1}',
        deny("ambiguous body: host config field outside HostConfig"),
    ),
    row(
        "6 Cpuset at the top level",
        b'{"Image":"a","Cpuset":"0"}',
        deny("ambiguous body: host config field outside HostConfig"),
    ),
    row(
        "6 an unknown top-level field is refused (C9)",
        b'{"Image":"a","Imagee":"b"}',
        deny("unknown field"),
    ),
    row(
        "6 a new API version's HostConfig field is refused (C9: Annotations, 1.43)",
        b'{"HostConfig":{"Annotations":{"a":"b"}}}',
        deny("unknown field"),
    ),
    row(
        "6 Capabilities (replaces the capability set) is unknown",
        b'{"HostConfig":{"Capabilities":[]}}',
        deny("unknown field"),
    ),
    row(
        "6 a new mount option is refused (C9: CreateMountpoint, 1.44)",
        b'{"HostConfig":{"Mounts":[{"Type":"bind","BindOptions":{"CreateMountpoint":true}}]}}',
        deny("unknown field"),
    ),
    row(
        "6 a new healthcheck field is refused (StartInterval, 1.44)",
        b'{"Healthcheck":{"StartInterval":1}}',
        deny("unknown field"),
    ),
    row(
        "6 GwPriority other than 0 is a new field (1.48)",
        b'{"NetworkingConfig":{"EndpointsConfig":{"n":{"GwPriority":1}}}}',
        deny("unknown field"),
    ),
    row(
        "6 DNSNames other than empty is a new field (1.45)",
        b'{"NetworkingConfig":{"EndpointsConfig":{"n":{"DNSNames":["x"]}}}}',
        deny("unknown field"),
    ),
    row(
        "6 GwPriority of the wrong type is refused even at zero",
        b'{"NetworkingConfig":{"EndpointsConfig":{"n":{"GwPriority":false}}}}',
        deny("wrong type"),
    ),
    row(
        "6 GwPriority 0 and DNSNames [] are dropped",
        b'{"NetworkingConfig":{"EndpointsConfig":{"n":{"GwPriority":0,"DNSNames":[]}}}}',
        {"NetworkingConfig": {"EndpointsConfig": {"n": {}}}},
    ),
    row(
        "6 an exposed port with a field is refused",
        b'{"ExposedPorts":{"80/tcp":{"x":1}}}',
        deny("unknown field"),
    ),
    row(
        "6 a dotless i does not fold to i",
        '{"HostConfig":{"Prıvileged":true}}',
        deny("unknown field"),
    ),
    row(
        "6 a capital dotted I does not fold to i",
        '{"HostConfig":{"Prİvileged":true}}',
        deny("unknown field"),
    ),
    row(
        "6 a space around a key is another key",
        b'{"HostConfig":{" Privileged":true}}',
        deny("unknown field"),
    ),
    row(
        "6 hostconfig.privileged is HostConfig.Privileged (C2)",
        b'{"hostconfig":{"privileged":true}}',
        {"HostConfig": {"Privileged": True}},
    ),
    row(
        "6 \\u0050rivileged is Privileged (C2)",
        b'{"HostConfig":{"\\u0050rivileged":true}}',
        {"HostConfig": {"Privileged": True}},
    ),
    row(
        "6 a long s and a Kelvin sign match s and k",
        '{"HostConfig":{"\u017fecurityOpt":["a"],"Lin\u212as":["b"]}}',
        {"HostConfig": {"SecurityOpt": ["a"], "Links": ["b"]}},
    ),
    row(
        "6 keys of every case are canonical",
        b'{"IMAGE":"a","hOsTcOnFiG":{"NETWORKMODE":"n","mounts":[{"TYPE":"volume","target":"/d"}]}}',
        {
            "Image": "a",
            "HostConfig": {"NetworkMode": "n", "Mounts": [{"Type": "volume", "Target": "/d"}]},
        },
    ),
    row(
        "6 exec ConsoleSize is a 1.42 field",
        b'{"Cmd":["sh"],"ConsoleSize":[1,2]}',
        deny("unknown field"),
        EXEC_CREATE,
    ),
    row(
        "6 exec start ConsoleSize is a 1.42 field",
        b'{"Detach":false,"ConsoleSize":[1,2]}',
        deny("unknown field"),
        EXEC_START,
    ),
    row(
        "6 a cluster volume spec is a 1.42 field",
        b'{"Name":"v","ClusterVolumeSpec":{}}',
        deny("unknown field"),
        VOLUME_CREATE,
    ),
    row(
        "6 exec Privileged at any case is read",
        b'{"privileged":true}',
        {"Privileged": True},
        EXEC_CREATE,
    ),
    # 7. types
    row(
        "7 Privileged 1 is not a bool (C2)", b'{"HostConfig":{"Privileged":1}}', deny("wrong type")
    ),
    row(
        '7 Privileged "true" is not a bool',
        b'{"HostConfig":{"Privileged":"true"}}',
        deny("wrong type"),
    ),
    row('7 Memory "1" is not an integer', b'{"HostConfig":{"Memory":"1"}}', deny("wrong type")),
    row("7 Memory 1.0 is not an integer", b'{"HostConfig":{"Memory":1.0}}', deny("wrong type")),
    row("7 Memory 1e3 is not an integer", b'{"HostConfig":{"Memory":1e3}}', deny("wrong type")),
    row("7 Memory true is not an integer", b'{"HostConfig":{"Memory":true}}', deny("wrong type")),
    row(
        "7 Memory beyond int64 is out of range",
        b'{"HostConfig":{"Memory":9223372036854775808}}',
        deny("number out of range"),
    ),
    row(
        "7 Memory at the int64 minimum is read",
        b'{"HostConfig":{"Memory":-9223372036854775808}}',
        {"HostConfig": {"Memory": -(2**63)}},
    ),
    row(
        "7 BlkioWeight beyond uint16 is out of range",
        b'{"HostConfig":{"BlkioWeight":65536}}',
        deny("number out of range"),
    ),
    row(
        "7 a negative uint is out of range",
        b'{"HostConfig":{"ConsoleSize":[-1,0]}}',
        deny("number out of range"),
    ),
    row(
        "7 a fixed array of three is refused",
        b'{"HostConfig":{"ConsoleSize":[1,2,3]}}',
        deny("wrong type"),
    ),
    row(
        "7 a fixed array of one is refused",
        b'{"HostConfig":{"ConsoleSize":[1]}}',
        deny("wrong type"),
    ),
    row(
        "7 Binds as a string is refused", b'{"HostConfig":{"Binds":"/:/host"}}', deny("wrong type")
    ),
    row("7 a bind of a number is refused", b'{"HostConfig":{"Binds":[1]}}', deny("wrong type")),
    row("7 null inside a list is refused", b'{"Env":["A=1",null]}', deny("wrong type")),
    row("7 null as a mount is refused", b'{"HostConfig":{"Mounts":[null]}}', deny("wrong type")),
    row("7 null as a label value is refused", b'{"Labels":{"a":null}}', deny("wrong type")),
    row("7 a label value of a number is refused", b'{"Labels":{"a":1}}', deny("wrong type")),
    row("7 HostConfig as a list is refused", b'{"HostConfig":[]}', deny("wrong type")),
    row(
        "7 a mount as a string is refused",
        b'{"HostConfig":{"Mounts":["/:/x"]}}',
        deny("wrong type"),
    ),
    row(
        "7 an exposed port value of null is refused",
        b'{"ExposedPorts":{"80/tcp":null}}',
        deny("wrong type"),
    ),
    row(
        "7 a null field is the same as absent",
        b'{"Image":"a","Env":null,"HostConfig":null}',
        {"Image": "a"},
    ),
    row("7 Cmd as a string is a list of one", b'{"Cmd":"echo hi"}', {"Cmd": ["echo hi"]}),
    row(
        "7 CapAdd as a string is a list of one",
        b'{"HostConfig":{"CapAdd":"SYS_ADMIN"}}',
        {"HostConfig": {"CapAdd": ["SYS_ADMIN"]}},
    ),
    row("7 Cmd with a number is refused", b'{"Cmd":["echo",1]}', deny("wrong type")),
    row(
        "7 an exec Cmd string is refused (a plain list there)",
        b'{"Cmd":"sh"}',
        deny("wrong type"),
        EXEC_CREATE,
    ),
    # the stock docker CLI
    row(
        "the CLI's docker run -it body decodes",
        CLI_RUN_IT,
        "decodes",
    ),
    row(
        "the CLI's docker exec -it body decodes",
        CLI_EXEC,
        json.loads(CLI_EXEC) | {"Env": None},
        EXEC_CREATE,
    ),
    row(
        "the CLI's exec start body decodes",
        CLI_EXEC_START,
        {"Detach": False, "Tty": True},
        EXEC_START,
    ),
    row("the CLI's volume create body decodes", CLI_VOLUME, json.loads(CLI_VOLUME), VOLUME_CREATE),
]


@pytest.mark.parametrize(("raw", "schema", "expected"), DECODE)
def test_decode_engine_json(raw: bytes, schema: Schema, expected: Any) -> None:
    got = decode_engine_json(raw, schema)
    if isinstance(got, Decision):
        assert (got.allow, got.reason) == expected
    elif expected == "decodes":
        assert isinstance(got, dict)
    else:
        if isinstance(expected, dict):
            expected = {k: v for k, v in expected.items() if v is not None}
        assert got == expected


def test_every_reason_in_the_vocabulary_has_a_row() -> None:
    seen = set()
    for raw, schema, _ in (p.values for p in DECODE):
        got = decode_engine_json(raw, schema)
        if isinstance(got, Decision):
            seen.add(got.reason)
    assert set(JSON_REASONS) - seen == set()


def test_the_cli_run_body_decodes_to_what_it_says() -> None:
    got = decode_engine_json(CLI_RUN_IT)
    assert isinstance(got, dict)
    assert got["Image"] == "alpine:3" and got["Cmd"] == ["sh"]
    assert "Env" not in got and "Entrypoint" not in got  # null: as if absent
    assert got["HostConfig"]["NetworkMode"] == "default"
    assert got["HostConfig"]["AutoRemove"] is True
    assert got["NetworkingConfig"]["EndpointsConfig"]["default"]["IPPrefixLen"] == 0
    assert "GwPriority" not in got["NetworkingConfig"]["EndpointsConfig"]["default"]


def test_a_refusal_names_where() -> None:
    got = decode_engine_json(b'{"HostConfig":{"Mounts":[{"Type":"bind"},{"Type":1}]}}')
    assert got == Decision(False, "wrong type", "HostConfig.Mounts[1].Type")
    got = decode_engine_json(b'{"NetworkingConfig":{"EndpointsConfig":{"n":{"Foo":1}}}}')
    assert got == Decision(False, "unknown field", "NetworkingConfig.EndpointsConfig.n.Foo")
    assert decode_engine_json(b'{"privileged":true}') == Decision(
        False, "ambiguous body: host config field outside HostConfig", "Privileged"
    )


FOLD = [
    ("ASCII letters fold to lower case", "HostConfig", "hostconfig"),
    ("digits and punctuation stay", "IPv4Address_x-1", "ipv4address_x-1"),
    ("long s folds to s", "\u017fecurityOpt", "securityopt"),
    ("Kelvin folds to k", "Lin\u212as", "links"),
    ("dotless i stays", "Prıvileged", "prıvileged"),
    ("sharp s stays (Go does not fold it to ss)", "Maß", "maß"),
]


@pytest.mark.parametrize(("key", "folded"), [pytest.param(*f[1:], id=f[0]) for f in FOLD])
def test_fold_key(key: str, folded: str) -> None:
    assert fold_key(key) == folded


def test_a_schema_whose_fields_fold_together_is_a_bug() -> None:
    with pytest.raises(ValueError, match="folds to the key"):
        Schema(
            "Bad", {"Links": HOST_CONFIG.fields["Links"], "lin\u212as": HOST_CONFIG.fields["Links"]}
        )


def test_the_top_level_refuses_every_host_config_field_and_knows_every_config_field() -> None:
    for name in HOST_CONFIG.fields:
        assert CONTAINER_CREATE.lookup(name) == ("outside", name)
    for name in CONFIG_FIELDS:
        assert CONTAINER_CREATE.lookup(name.upper()) == ("field", name)
    assert CONTAINER_CREATE.lookup("hostconfig") == ("field", "HostConfig")


def test_canonicalise_holds_a_dict_to_the_same_rules() -> None:
    assert canonicalise({"Image": "a", "image": "b"}, CONTAINER_CREATE) == Decision(
        False, "ambiguous body: duplicate key", "image"
    )
    assert canonicalise({"HostConfig": {"Memory": 1.5}}, CONTAINER_CREATE) == Decision(
        False, "wrong type", "HostConfig.Memory"
    )
    assert canonicalise({"Env": ("A=1",)}, CONTAINER_CREATE) == Decision(False, "wrong type", "Env")
    assert canonicalise({"Labels": {1: "a"}}, CONTAINER_CREATE) == Decision(
        False, "wrong type", "1"
    )
    assert canonicalise(["a"], CONTAINER_CREATE) == Decision(False, "body not an object", "list")
    assert canonicalise({"image": "a"}, CONTAINER_CREATE) == {"Image": "a"}


def test_load_strict_json_reads_any_value_strictly() -> None:
    assert load_strict_json('["a"]') == ["a"]
    assert load_strict_json(" 1 ") == 1
    refused = load_strict_json('{"a":1,"A":2}')
    assert isinstance(refused, Decision) and refused.reason == "ambiguous body: duplicate key"
    refused = load_strict_json("[1] [2]")
    assert isinstance(refused, Decision) and refused.reason == "ambiguous body: trailing data"


def test_encode_is_ascii_and_compact() -> None:
    assert encode_engine_json({"Labels": {"é": "\U0001f600"}}) == (
        b'{"Labels":{"\\u00e9":"\\ud83d\\ude00"}}'
    )
    with pytest.raises(ValueError, match="Out of range float"):
        encode_engine_json({"x": float("nan")})


# --- properties -----------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_no_bytes_crash_the_decoder(raw: bytes) -> None:
    got = decode_engine_json(raw)
    assert isinstance(got, dict) or got.reason in JSON_REASONS


def _spell(key: str, how: int) -> str:
    """A key the way an attacker might write it: case, Go's folding runes, or as is."""
    if how == 1:
        return key.lower()
    if how == 2:
        return key.upper()
    if how == 3:
        return key.replace("s", "\u017f").replace("k", "\u212a")
    return key


def _encode_pairs(value: Any, escape: bool) -> str:
    """JSON text of a value whose objects are lists of pairs (duplicates allowed)."""
    if isinstance(value, PairList):
        items = []
        for k, v in value:
            key = json.dumps(k)
            if escape and len(k) > 1:
                key = f'"\\u{ord(k[0]):04x}' + json.dumps(k[1:])[1:]
            items.append(f"{key}:{_encode_pairs(v, escape)}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode_pairs(v, escape) for v in value) + "]"
    return json.dumps(value)


class PairList(list[tuple[str, Any]]):
    pass


def _mostly(valid: list[Any], invalid: list[Any]) -> Any:
    """Values of a field: three in four of its type, the rest type confusion or null."""
    return st.one_of(
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(invalid),
    )


HOST_VALUES: dict[str, Any] = {
    "Privileged": _mostly([True, False], [1, "true", None]),
    "NetworkMode": _mostly(["host", "default", "none", "n"], [1, None]),
    "Memory": _mostly([0, 1, -1], [2**63, 1.5, "1", None]),
    "PidMode": _mostly(["", "host", "container:x"], [None, 0]),
    "Binds": _mostly([[], ["/:/host"]], ["/:/host", None, [None]]),
    "CapAdd": _mostly([[], ["ALL"], "SYS_ADMIN"], [None, [1]]),
    "ReadonlyRootfs": _mostly([True, False], [0]),
    "ConsoleSize": _mostly([[0, 0], [1, 2]], [[1], [1, 2, 3], None]),
}
TOP_VALUES: dict[str, Any] = {
    "Image": _mostly(["alpine", ""], [1, None]),
    "User": _mostly(["0", "1000", ""], [None]),
    "Cmd": _mostly([["sh"], "sh"], [[1], None]),
    "Labels": _mostly([{}, {"a": "b"}], [{"a": None}, None]),
}


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, PairList]:
    """Create bodies with attacker spellings, duplicates, top-level host fields, junk."""

    def pairs(values: dict[str, Any], unknown: list[str], size: int) -> PairList:
        names = draw(st.lists(st.sampled_from([*values, *unknown]), max_size=size))
        out = PairList()
        for name in names:
            value = draw(values[name]) if name in values else draw(st.integers(0, 2))
            out.append((_spell(name, draw(st.integers(0, 3))), value))
        return out

    host = pairs(HOST_VALUES, ["Annotations"], 3)
    top = pairs(TOP_VALUES, ["Imagee"], 4)
    if draw(st.integers(0, 4)) == 0:  # the deprecated top-level HostConfig fields
        top.extend(pairs(HOST_VALUES, ["Cpuset"], 2))
    if draw(st.integers(0, 5)):
        top.append((_spell("HostConfig", draw(st.integers(0, 3))), host))
    draw(st.randoms()).shuffle(top)
    text = _encode_pairs(top, escape=draw(st.booleans()))
    if draw(st.integers(0, 9)) == 0:
        text += draw(st.sampled_from([" ", "{}", " x", "\n"]))
    return text.encode(), top


def _go_match(key: str, fields: Mapping[str, Any]) -> str | None:
    """Go 1.19's field matching for ASCII field names, written from its fold.go.

    An exact match first; else each rune of the key against each byte of the name: ASCII
    letters case-insensitively, U+017F only for s and U+212A only for k.
    """
    if key in fields:
        return key
    for name in fields:
        if len(key) == len(name) and all(
            _go_rune_equal(w, g) for w, g in zip(name, key, strict=True)
        ):
            return name
    return None


def _go_rune_equal(want: str, got: str) -> bool:
    if got.isascii():
        return got == want or (want.isalpha() and got.lower() == want.lower())
    return (want in "sS" and got == "\u017f") or (want in "kK" and got == "\u212a")


def _go_read(top: PairList) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What Go reads of a body: (Config fields, the HostConfig the engine uses).

    Unknown keys are ignored, the last duplicate wins, null leaves a field alone, and the
    wrapper's embedded HostConfig takes top-level host fields (getHostConfig then uses it
    when there is no inner HostConfig).
    """
    config: dict[str, Any] = {}
    outer: dict[str, Any] = {}
    inner: dict[str, Any] | None = None
    fields = {**CONFIG_FIELDS, "HostConfig": None}
    for key, value in top:
        name = _go_match(key, fields)
        if name == "HostConfig":
            if value is None:
                inner = None
            else:
                inner = inner or {}
                for hkey, hvalue in value:
                    hname = _go_match(hkey, HOST_CONFIG.fields)
                    if hname is not None and hvalue is not None:
                        inner[hname] = hvalue
        elif name is not None:
            if value is not None:
                config[name] = value
        else:
            hname = _go_match(key, HOST_CONFIG.fields)
            if hname is not None and value is not None:
                outer[hname] = value
    if inner is None:
        return config, outer or None
    return config, inner


@settings(max_examples=400)
@given(bodies())
def test_an_accepted_body_is_what_go_reads(case: tuple[bytes, PairList]) -> None:
    """The differential of docker/cli #7086: what the proxy reads is what the engine reads."""
    raw, top = case
    got = decode_engine_json(raw)
    if isinstance(got, Decision):
        assert got.reason in JSON_REASONS
        return
    config, host = _go_read(top)
    assert {k: v for k, v in got.items() if k != "HostConfig"} == {
        k: [v] if k == "Cmd" and isinstance(v, str) else v for k, v in config.items()
    }
    want_host = {
        k: [v] if k == "CapAdd" and isinstance(v, str) else v for k, v in (host or {}).items()
    }
    assert got.get("HostConfig", {}) == want_host


@given(bodies())
def test_what_is_accepted_re_encodes_to_itself(case: tuple[bytes, PairList]) -> None:
    got = decode_engine_json(case[0])
    if isinstance(got, dict):
        again = encode_engine_json(got)
        assert decode_engine_json(again) == got
        assert encode_engine_json(decode_engine_json(again)) == again


@settings(max_examples=400)
@given(bodies())
def test_privileged_never_hides(case: tuple[bytes, PairList]) -> None:
    """Whenever Go would run the container privileged, the decoder refuses or says so."""
    raw, top = case
    _, host = _go_read(top)
    got = decode_engine_json(raw)
    if host and host.get("Privileged") is True:
        assert isinstance(got, Decision) or got["HostConfig"]["Privileged"] is True
