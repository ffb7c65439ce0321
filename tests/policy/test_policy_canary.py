"""The isolation canary's judges: tables in each judge's decision order, then properties.

The process rows start from a status text captured from a live hardened agent (python3
under docker-init, engine 20.10, cgroup v1) and change one field at a time.
"""

from __future__ import annotations

import random

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.gate._http import simple_response
from agentcell.policy import (
    CANARY_HOST,
    CANARY_PORT,
    GATE_REASONS,
    PROCESS_REASONS,
    REACH_REASONS,
    SETUP_REASONS,
    Decision,
    EgressPolicy,
    GateProbe,
    HostProbe,
    ProbeOutcome,
    canary_request,
    decide_egress,
    judge_gate,
    judge_process,
    judge_reach,
)

LIVE_STATUS = """\
Name:\tpython3
Umask:\t0022
State:\tS (sleeping)
Tgid:\t5175
Ngid:\t0
Pid:\t5175
PPid:\t5093
TracerPid:\t0
Uid:\t10001\t10001\t10001\t10001
Gid:\t10001\t10001\t10001\t10001
FDSize:\t64
Groups:\t10001\x20
NStgid:\t5175\t8
NSpid:\t5175\t8
NSpgid:\t5175\t8
NSsid:\t5093\t1
Kthread:\t0
VmPeak:\t  247548 kB
Threads:\t3
SigQ:\t0/96365
SigIgn:\t0000000081001000
SigCgt:\t0000000100000002
CapInh:\t0000000000000000
CapPrm:\t0000000000000000
CapEff:\t0000000000000000
CapBnd:\t0000000000000000
CapAmb:\t0000000000000000
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t1
Speculation_Store_Bypass:\tvulnerable
Cpus_allowed_list:\t0-1
voluntary_ctxt_switches:\t81
"""

FIELDS = (
    "Pid",
    "Uid",
    "Gid",
    "Groups",
    "NSpid",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
)
ALL_CAPS = "000001ffffffffff"  # what a root shell on this kernel holds


def with_field(name: str, value: str | None, text: str = LIVE_STATUS) -> str:
    """``text`` with field ``name`` set to ``value`` (None: the line removed)."""
    out = []
    for line in text.splitlines():
        if line.partition(":")[0] != name:
            out.append(line)
        elif value is not None:
            out.append(f"{name}:\t{value}")
    return "\n".join(out) + "\n"


def deny(reason: str, rule: str = "pid 5175") -> Decision:
    return Decision(False, reason, rule)


HARDENED = Decision(True, "process is hardened", "pid 5175")

# --- judge_process ------------------------------------------------------------------------------

PROCESS_ROWS: list[tuple[str, str, Decision]] = [
    ("a hardened agent process as the kernel shows it", LIVE_STATUS, HARDENED),
    ("no supplementary groups", with_field("Groups", ""), HARDENED),
    ("several supplementary groups", with_field("Groups", "10001 10002 65534"), HARDENED),
    ("nested two pid namespaces deep", with_field("NSpid", "5175\t8\t1"), HARDENED),
    (
        "Windows line endings are not a status text",
        LIVE_STATUS.replace("\n", "\r\n"),
        deny("process status unreadable", ""),
    ),
    # 1. unreadable
    ("an empty text", "", deny("process status unreadable", "")),
    ("garbage", "\x00\xff not a status\n", deny("process status unreadable", "")),
    *[
        (f"the {name} field missing", with_field(name, None), deny("process status unreadable", ""))
        for name in FIELDS
    ],
    (
        "CapEff given twice, the second time empty",
        LIVE_STATUS + "CapEff:\t0000000000000000\n",
        deny("process status unreadable", ""),
    ),
    (
        "a duplicated Uid line hiding root",
        LIVE_STATUS + "Uid:\t0\t0\t0\t0\n",
        deny("process status unreadable", ""),
    ),
    ("CapEff not hex", with_field("CapEff", "zz"), deny("process status unreadable", "")),
    (
        "CapEff too long",
        with_field("CapEff", "1" + "0" * 16),
        deny("process status unreadable", ""),
    ),
    ("CapEff empty", with_field("CapEff", ""), deny("process status unreadable", "")),
    ("Uid with three ids", with_field("Uid", "1\t1\t1"), deny("process status unreadable", "")),
    ("Uid negative", with_field("Uid", "-1\t1\t1\t1"), deny("process status unreadable", "")),
    ("Gid with a name", with_field("Gid", "root\t1\t1\t1"), deny("process status unreadable", "")),
    ("Groups with a name", with_field("Groups", "wheel"), deny("process status unreadable", "")),
    ("NSpid empty", with_field("NSpid", ""), deny("process status unreadable", "")),
    ("NoNewPrivs empty", with_field("NoNewPrivs", ""), deny("process status unreadable", "")),
    (
        "NoNewPrivs two values",
        with_field("NoNewPrivs", "1 1"),
        deny("process status unreadable", ""),
    ),
    ("Seccomp a word", with_field("Seccomp", "filter"), deny("process status unreadable", "")),
    ("Pid empty", with_field("Pid", ""), deny("process status unreadable", "")),
    # 2. root
    ("real uid 0", with_field("Uid", "0\t10001\t10001\t10001"), deny("process runs as root")),
    ("effective uid 0", with_field("Uid", "10001\t0\t10001\t10001"), deny("process runs as root")),
    ("saved uid 0", with_field("Uid", "10001\t10001\t0\t10001"), deny("process runs as root")),
    ("filesystem uid 0", with_field("Uid", "10001\t10001\t10001\t0"), deny("process runs as root")),
    # 3. group root
    (
        "real gid 0",
        with_field("Gid", "0\t10001\t10001\t10001"),
        deny("process runs with group root"),
    ),
    (
        "saved gid 0",
        with_field("Gid", "10001\t10001\t0\t10001"),
        deny("process runs with group root"),
    ),
    (
        "group 0 supplementary",
        with_field("Groups", "10001 0"),
        deny("process runs with group root"),
    ),
    # 4. pid namespace
    (
        "in the reader's pid namespace",
        with_field("NSpid", "5175"),
        deny("process is not in its own pid namespace"),
    ),
    # 5. capabilities, in order
    (
        "an effective capability",
        with_field("CapEff", "0000000000000400"),
        deny("process has effective capabilities"),
    ),
    (
        "a permitted capability",
        with_field("CapPrm", "0000000000000400"),
        deny("process has permitted capabilities"),
    ),
    (
        "an inheritable capability",
        with_field("CapInh", "0000000000000400"),
        deny("process has inheritable capabilities"),
    ),
    (
        "an ambient capability",
        with_field("CapAmb", "0000000000000400"),
        deny("process has ambient capabilities"),
    ),
    (
        "a bounding capability",
        with_field("CapBnd", "0000000000000001"),
        deny("capability bounding set is not empty"),
    ),
    (
        "short hex still read",
        with_field("CapBnd", "1"),
        deny("capability bounding set is not empty"),
    ),
    # 6., 7.
    ("no-new-privileges off", with_field("NoNewPrivs", "0"), deny("no-new-privileges is not set")),
    ("no seccomp", with_field("Seccomp", "0"), deny("seccomp filter is not active")),
    (
        "seccomp strict mode is not the filter",
        with_field("Seccomp", "1"),
        deny("seccomp filter is not active"),
    ),
    # precedence
    (
        "unreadable before root",
        with_field("Seccomp", None, with_field("Uid", "0\t0\t0\t0")),
        deny("process status unreadable", ""),
    ),
    (
        "root before capabilities",
        with_field("CapEff", ALL_CAPS, with_field("Uid", "0\t0\t0\t0")),
        deny("process runs as root"),
    ),
    (
        "group root before the pid namespace",
        with_field("NSpid", "5175", with_field("Gid", "0\t0\t0\t0")),
        deny("process runs with group root"),
    ),
    (
        "the pid namespace before capabilities",
        with_field("CapEff", ALL_CAPS, with_field("NSpid", "5175")),
        deny("process is not in its own pid namespace"),
    ),
    (
        "effective before bounding",
        with_field("CapBnd", ALL_CAPS, with_field("CapEff", ALL_CAPS)),
        deny("process has effective capabilities"),
    ),
    (
        "capabilities before no-new-privileges",
        with_field("NoNewPrivs", "0", with_field("CapBnd", ALL_CAPS)),
        deny("capability bounding set is not empty"),
    ),
    (
        "no-new-privileges before seccomp",
        with_field("Seccomp", "0", with_field("NoNewPrivs", "0")),
        deny("no-new-privileges is not set"),
    ),
    (
        "an unhardened root shell",
        with_field(
            "Seccomp",
            "0",
            with_field(
                "NoNewPrivs",
                "0",
                with_field("CapEff", ALL_CAPS, with_field("Uid", "0\t0\t0\t0")),
            ),
        ),
        deny("process runs as root"),
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [r[1:] for r in PROCESS_ROWS], ids=[r[0] for r in PROCESS_ROWS]
)
def test_judge_process_table(text: str, expected: Decision) -> None:
    assert judge_process(text) == expected


def test_process_table_covers_every_reason() -> None:
    assert {r[2].reason for r in PROCESS_ROWS} == set(PROCESS_REASONS)


def test_reason_vocabularies_are_distinct() -> None:
    every = [*PROCESS_REASONS, *REACH_REASONS, *GATE_REASONS, *SETUP_REASONS]
    assert len(every) == len(set(every))


ids = st.integers(min_value=0, max_value=70000)
nonzero = st.integers(min_value=1, max_value=70000)
caps = st.one_of(st.just(0), st.integers(min_value=1, max_value=2**41 - 1))


@st.composite
def statuses(draw: st.DrawFn) -> tuple[str, str]:
    """A well-formed status text and the reason the decision order gives it."""
    root_bias = st.one_of(st.just(0), nonzero)
    uids = draw(st.lists(root_bias, min_size=4, max_size=4))
    gids = draw(st.lists(root_bias, min_size=4, max_size=4))
    groups = draw(st.lists(root_bias, max_size=4))
    nspid = draw(st.lists(nonzero, min_size=1, max_size=3))
    cap = {name: draw(caps) for name in ("CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd")}
    nnp = draw(st.sampled_from([0, 1]))
    seccomp = draw(st.sampled_from([0, 1, 2]))
    lines = {
        "Name": "agent",
        "Pid": str(nspid[0]),
        "Uid": "\t".join(map(str, uids)),
        "Gid": "\t".join(map(str, gids)),
        "Groups": " ".join(map(str, groups)) + " ",
        "NSpid": "\t".join(map(str, nspid)),
        **{name: f"{v:016x}" for name, v in cap.items()},
        "NoNewPrivs": str(nnp),
        "Seccomp": str(seccomp),
        "Seccomp_filters": "1",
        "VmRSS": "  20964 kB",
    }
    order = draw(st.permutations(list(lines)))
    text = "".join(f"{k}:\t{lines[k]}\n" for k in order)
    if 0 in uids:
        reason = "process runs as root"
    elif 0 in gids or 0 in groups:
        reason = "process runs with group root"
    elif len(nspid) < 2:
        reason = "process is not in its own pid namespace"
    elif cap["CapEff"]:
        reason = "process has effective capabilities"
    elif cap["CapPrm"]:
        reason = "process has permitted capabilities"
    elif cap["CapInh"]:
        reason = "process has inheritable capabilities"
    elif cap["CapAmb"]:
        reason = "process has ambient capabilities"
    elif cap["CapBnd"]:
        reason = "capability bounding set is not empty"
    elif nnp != 1:
        reason = "no-new-privileges is not set"
    elif seccomp != 2:
        reason = "seccomp filter is not active"
    else:
        reason = "process is hardened"
    return text, reason


@given(statuses())
def test_judge_process_follows_the_decision_order(case: tuple[str, str]) -> None:
    text, reason = case
    got = judge_process(text)
    assert got.reason == reason
    assert got.allow is (reason == "process is hardened")


@given(st.text())
def test_judge_process_never_raises_and_speaks_its_vocabulary(text: str) -> None:
    got = judge_process(text)
    assert got.reason in PROCESS_REASONS


@given(st.text(max_size=200), st.sampled_from(FIELDS))
def test_a_second_copy_of_any_field_is_unreadable(value: str, name: str) -> None:
    text = LIVE_STATUS + f"{name}:\t{value}\n"
    assert judge_process(text) == Decision(False, "process status unreadable")


@given(st.lists(st.sampled_from(LIVE_STATUS.splitlines()), unique=True), st.randoms())
def test_allow_needs_every_field(lines: list[str], rnd: random.Random) -> None:
    rnd.shuffle(lines)
    got = judge_process("\n".join(lines))
    present = {line.partition(":")[0] for line in lines}
    assert got.allow is set(FIELDS).issubset(present)


# --- judge_reach --------------------------------------------------------------------------------

T, U, C, R, E = (
    ProbeOutcome.TIMEOUT,
    ProbeOutcome.UNREACHABLE,
    ProbeOutcome.CONNECTED,
    ProbeOutcome.REFUSED,
    ProbeOutcome.ERROR,
)


def probes(*outcomes: ProbeOutcome) -> list[HostProbe]:
    return [HostProbe(f"10.216.0.{i + 1}", o) for i, o in enumerate(outcomes)]


REACH_ROWS: list[tuple[str, list[HostProbe], Decision]] = [
    ("nothing probed", [], Decision(False, "no host address probed")),
    ("one address, dropped", probes(T), Decision(True, "host unreachable from the cell")),
    ("every address dropped", probes(T, T, T), Decision(True, "host unreachable from the cell")),
    ("no route to any", probes(U, U), Decision(True, "host unreachable from the cell")),
    ("dropped or no route", probes(T, U, T), Decision(True, "host unreachable from the cell")),
    (
        "the gateway answers",
        probes(C),
        Decision(False, "host reachable from the cell", "10.216.0.1"),
    ),
    (
        "one address among many answers",
        probes(T, T, C, U),
        Decision(False, "host reachable from the cell", "10.216.0.3"),
    ),
    (
        "the first connected address is named",
        probes(T, C, C),
        Decision(False, "host reachable from the cell", "10.216.0.2"),
    ),
    ("a reset came back", probes(T, R), Decision(False, "host answered the cell", "10.216.0.2")),
    ("a local failure", probes(T, E), Decision(False, "host probe failed", "10.216.0.2")),
    (
        "connected before refused, whatever the order",
        probes(R, E, C),
        Decision(False, "host reachable from the cell", "10.216.0.3"),
    ),
    (
        "refused before a local failure, whatever the order",
        probes(E, R),
        Decision(False, "host answered the cell", "10.216.0.2"),
    ),
]


@pytest.mark.parametrize(
    ("results", "expected"), [r[1:] for r in REACH_ROWS], ids=[r[0] for r in REACH_ROWS]
)
def test_judge_reach_table(results: list[HostProbe], expected: Decision) -> None:
    assert judge_reach(results) == expected


def test_reach_table_covers_every_reason() -> None:
    assert {r[2].reason for r in REACH_ROWS} == set(REACH_REASONS)


@given(st.lists(st.sampled_from(list(ProbeOutcome)), max_size=30))
def test_judge_reach_allows_only_when_nothing_got_through(outcomes: list[ProbeOutcome]) -> None:
    got = judge_reach(probes(*outcomes))
    assert got.reason in REACH_REASONS
    assert got.allow is (bool(outcomes) and set(outcomes) <= {T, U})
    if C in outcomes:
        assert got.reason == "host reachable from the cell"
        assert got.rule == f"10.216.0.{outcomes.index(C) + 1}"


# --- judge_gate ---------------------------------------------------------------------------------


def answer(status: int, reason: str) -> GateProbe:
    """What the gate really writes (its own response builder)."""
    return GateProbe(C, simple_response(status, f"{reason}\n"))


GATE_ROWS: list[tuple[str, GateProbe, Decision]] = [
    (
        "the gate refuses: no rule allows the host",
        answer(403, "no rule allows this host"),
        Decision(True, "gate denied the destination", "no rule allows this host"),
    ),
    (
        "the gate refuses: it has no policy",
        answer(403, "no policy"),
        Decision(True, "gate denied the destination", "no policy"),
    ),
    (
        "a 403 with a body that is not a phrase",
        GateProbe(C, b"HTTP/1.1 403 Forbidden\r\n\r\n\xff\xfe"),
        Decision(True, "gate denied the destination", ""),
    ),
    (
        "a 403 cut short after the status line",
        GateProbe(C, b"HTTP/1.1 403"),
        Decision(True, "gate denied the destination", ""),
    ),
    (
        "HTTP/1.0 403",
        GateProbe(C, b"HTTP/1.0 403 Forbidden\r\n\r\n"),
        Decision(True, "gate denied the destination", ""),
    ),
    (
        "the tunnel is established",
        GateProbe(C, b"HTTP/1.1 200 Connection established\r\n\r\n"),
        Decision(False, "gate allowed a denied destination", "200"),
    ),
    (
        "any 2xx",
        GateProbe(C, b"HTTP/1.1 204 No Content\r\n\r\n"),
        Decision(False, "gate allowed a denied destination", "204"),
    ),
    (
        "a bad request",
        answer(400, "bad request"),
        Decision(False, "gate answered without a denial", "400"),
    ),
    ("a gateway error", answer(502, "x"), Decision(False, "gate answered without a denial", "502")),
    (
        "a redirect",
        GateProbe(C, b"HTTP/1.1 302 Found\r\n\r\n"),
        Decision(False, "gate answered without a denial", "302"),
    ),
    (
        "proxy auth asked",
        GateProbe(C, b"HTTP/1.1 407 x\r\n\r\n"),
        Decision(False, "gate answered without a denial", "407"),
    ),
    (
        "connected, closed without a word",
        GateProbe(C, b""),
        Decision(False, "gate gave no valid answer"),
    ),
    (
        "connected, not HTTP",
        GateProbe(C, b"SSH-2.0-OpenSSH\r\n"),
        Decision(False, "gate gave no valid answer"),
    ),
    (
        "HTTP/2 is not what the gate speaks",
        GateProbe(C, b"HTTP/2 403\r\n\r\n"),
        Decision(False, "gate gave no valid answer"),
    ),
    (
        "a four-digit status",
        GateProbe(C, b"HTTP/1.1 4030 x\r\n"),
        Decision(False, "gate gave no valid answer"),
    ),
    (
        "leading junk",
        GateProbe(C, b" HTTP/1.1 403 x\r\n"),
        Decision(False, "gate gave no valid answer"),
    ),
    ("nothing listens", GateProbe(R), Decision(False, "gate did not answer", "refused")),
    (
        "the gate is gone and its address with it",
        GateProbe(U),
        Decision(False, "gate did not answer", "unreachable"),
    ),
    ("the gate hangs", GateProbe(T), Decision(False, "gate did not answer", "timeout")),
    ("a local failure", GateProbe(E), Decision(False, "gate did not answer", "error")),
    (
        "an answer without a connection is no answer",
        GateProbe(T, b"HTTP/1.1 403 Forbidden\r\n\r\n"),
        Decision(False, "gate did not answer", "timeout"),
    ),
]


@pytest.mark.parametrize(
    ("probe", "expected"), [r[1:] for r in GATE_ROWS], ids=[r[0] for r in GATE_ROWS]
)
def test_judge_gate_table(probe: GateProbe, expected: Decision) -> None:
    assert judge_gate(probe) == expected


def test_gate_table_covers_every_reason() -> None:
    assert {r[2].reason for r in GATE_ROWS} == set(GATE_REASONS)


@given(st.sampled_from(list(ProbeOutcome)), st.binary(max_size=300))
def test_judge_gate_never_raises_and_allows_only_a_403(outcome: ProbeOutcome, data: bytes) -> None:
    got = judge_gate(GateProbe(outcome, data))
    assert got.reason in GATE_REASONS
    if got.allow:
        assert outcome is C
        assert data.startswith((b"HTTP/1.1 403", b"HTTP/1.0 403"))


@given(st.integers(min_value=100, max_value=599), st.text(max_size=40))
def test_judge_gate_by_status(status: int, phrase: str) -> None:
    got = judge_gate(GateProbe(C, f"HTTP/1.1 {status} x\r\n\r\n".encode() + phrase.encode()))
    if status == 403:
        assert got.reason == "gate denied the destination"
    elif 200 <= status < 300:
        assert got.reason == "gate allowed a denied destination"
    else:
        assert got.reason == "gate answered without a denial"
    assert got.allow is (status == 403)


# --- the request --------------------------------------------------------------------------------


def test_canary_request_is_one_well_formed_connect_for_the_canary_host() -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(canary_request())
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert event.method == b"CONNECT"
    assert event.target == f"{CANARY_HOST}:{CANARY_PORT}".encode()
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    assert conn.next_event() is h11.PAUSED  # nothing after the request


@pytest.mark.parametrize(
    "policy",
    [
        {"allow": [{"host": "api.allowed.test", "ports": [80]}]},
        {"allow": [{"host": "*.allowed.test"}], "deny": [{"host": "evil.test"}]},
        {"allow": [{"cidr": "0.0.0.0/0", "ports": [443]}]},
        {"deny": [{"host": "evil.test"}]},
    ],
)
def test_no_ordinary_policy_allows_the_canary_host(policy: dict[str, object]) -> None:
    decision = decide_egress(EgressPolicy.from_json(policy), CANARY_HOST, CANARY_PORT)
    assert not decision.allow
