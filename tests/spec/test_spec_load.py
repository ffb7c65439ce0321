"""Loading spec YAML: good files load; every bad input is refused with a located message.

A located message names the file, the document (1-based), the line, the dotted field path
and says what would be valid (DESIGN.md rule 4). Each row of the tables below asserts all
five exactly.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentcell.errors import SpecError, SpecIssue
from agentcell.spec import (
    API_VERSION,
    DEFAULT_USER,
    Agent,
    Tenant,
    load_file,
    load_text,
    unsupported,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
SOURCE = "cells.yaml"

# Lines 1-7 of every Agent document below; a row's own lines start at line 8.
AGENT = """\
apiVersion: agentcell/v1
kind: Agent
metadata:
  name: researcher
  tenant: acme
spec:
  image: agentcell/demo-agent:latest
"""

TENANT = """\
apiVersion: agentcell/v1
kind: Tenant
metadata:
  name: acme
"""

Located = tuple[int, int | None, str, str]
"""(document, line, field, message) of one issue; the source is always SOURCE."""


def issues_of(text: str) -> list[Located]:
    with pytest.raises(SpecError) as caught:
        load_text(text, source=SOURCE)
    assert all(i.source == SOURCE for i in caught.value.issues)
    return [(i.document, i.line, i.field, i.message) for i in caught.value.issues]


def only_agent(text: str) -> Agent:
    docs = load_text(text, source=SOURCE)
    assert len(docs) == 1
    assert isinstance(docs[0], Agent)
    return docs[0]


# --- good files ------------------------------------------------------------------------------


def test_the_example_file_loads_a_tenant_and_its_agent() -> None:
    tenant, agent = load_file(EXAMPLE)

    assert isinstance(tenant, Tenant)
    assert tenant.metadata.name == "acme"
    assert tenant.spec.quota.agents == 10
    assert tenant.spec.quota.cpus == 4
    assert tenant.spec.quota.memory == 8 * 1024**3

    assert isinstance(agent, Agent)
    assert agent.ref == "acme/researcher"
    assert agent.tenant == "acme"
    assert agent.name == "researcher"
    s = agent.spec
    assert s.image == "agentcell/demo-agent:latest"
    assert s.command == ["python3", "/app/agent.py"]
    assert s.env == {"LOG_LEVEL": "info"}
    assert s.user == "10001:10001"
    assert s.workspace.access == "rw"
    assert (s.resources.cpus, s.resources.memory, s.resources.pids) == (1.0, 512 * 1024**2, 256)
    assert s.health is not None
    assert s.health.http is not None
    assert (s.health.http.port, s.health.http.path) == (8080, "/healthz")
    assert (s.health.interval, s.health.timeout, s.health.retries) == (10.0, 2.0, 3)


def test_load_file_and_load_text_agree_on_the_example() -> None:
    assert load_file(EXAMPLE) == load_text(EXAMPLE.read_text(), source=str(EXAMPLE))


def test_a_minimal_agent_needs_only_an_image_and_gets_safe_defaults() -> None:
    agent = only_agent(AGENT)
    s = agent.spec
    assert s.command is None
    assert s.env == {}
    assert s.user == DEFAULT_USER == "10001:10001"
    assert s.workspace.access == "rw"
    assert s.workspace.size is None
    assert (s.resources.cpus, s.resources.memory, s.resources.pids) == (1.0, 512 * 1024**2, 256)
    assert s.egress.is_empty()
    assert s.docker.access == "none"
    assert s.health is None
    assert s.secrets == []
    assert (s.restart.max_restarts, s.restart.window) == (5, 600.0)
    assert unsupported(agent) == []


def test_a_minimal_tenant_needs_only_a_name() -> None:
    (tenant,) = load_text(TENANT, source=SOURCE)
    assert isinstance(tenant, Tenant)
    q = tenant.spec.quota
    assert (q.agents, q.cpus, q.memory) == (None, None, None)
    assert unsupported(tenant) == []


def test_several_documents_load_in_file_order() -> None:
    text = "\n---\n".join(
        [
            TENANT,
            AGENT,
            AGENT.replace("name: researcher", "name: writer"),
            # the same cell name in another tenant is another cell
            AGENT.replace("tenant: acme", "tenant: globex"),
            # a Tenant and an Agent may share a name: they are different kinds
            TENANT.replace("name: acme", "name: researcher"),
        ]
    )
    docs = load_text(text, source=SOURCE)
    assert [(d.kind, d.metadata.tenant, d.metadata.name) for d in docs] == [
        ("Tenant", None, "acme"),
        ("Agent", "acme", "researcher"),
        ("Agent", "acme", "writer"),
        ("Agent", "globex", "researcher"),
        ("Tenant", None, "researcher"),
    ]


def test_a_leading_document_marker_and_comments_are_fine() -> None:
    assert only_agent("# my cells\n---\n" + AGENT + "# the end\n").name == "researcher"


def test_a_document_end_marker_is_fine() -> None:
    assert only_agent(AGENT + "...\n").name == "researcher"


@pytest.mark.parametrize(
    "text",
    [AGENT + "---\n", "---\n" + AGENT + "---\n# nothing more\n", AGENT + "---\nnull\n"],
    ids=["a trailing separator", "a trailing separator and a comment", "an explicit null"],
)
def test_empty_documents_are_skipped(text: str) -> None:
    assert only_agent(text).name == "researcher"


def test_a_uid_alone_means_the_same_gid() -> None:
    assert only_agent(AGENT + '  user: "4242"\n').spec.user == "4242:4242"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  resources: {memory: 1Gi}\n", 1024**3),
        ("  resources: {memory: 2G}\n", 2 * 1000**3),
        ("  resources: {memory: 16Mi}\n", 16 * 1024**2),
        ("  resources: {memory: 1073741824}\n", 1024**3),
        ('  resources: {memory: "1.5Gi"}\n', 3 * 1024**3 // 2),
    ],
    ids=["binary unit", "decimal unit", "the smallest memory allowed", "plain bytes", "fraction"],
)
def test_sizes_are_read_in_bytes(text: str, expected: int) -> None:
    assert only_agent(AGENT + text).spec.resources.memory == expected


def test_health_accepts_a_timeout_equal_to_the_interval() -> None:
    agent = only_agent(
        AGENT + "  health: {exec: {command: [check]}, interval: 500ms, timeout: 500ms}\n"
    )
    assert agent.spec.health is not None
    assert agent.spec.health.interval == agent.spec.health.timeout == 0.5


@pytest.mark.parametrize(
    "probe",
    ["{http: {port: 8080}}", "{tcp: {port: 5432}}", "{exec: {command: [check, --quick]}}"],
    ids=["http", "tcp", "exec"],
)
def test_health_accepts_each_probe_alone(probe: str) -> None:
    health = only_agent(AGENT + f"  health: {probe}\n").spec.health
    assert health is not None
    assert (health.interval, health.timeout, health.retries, health.start_period) == (
        10.0,
        2.0,
        3,
        0.0,
    )


def test_an_http_probe_checks_slash_by_default() -> None:
    health = only_agent(AGENT + "  health: {http: {port: 8080}}\n").spec.health
    assert health is not None
    assert health.http is not None
    assert health.http.path == "/"


# --- files -----------------------------------------------------------------------------------


def test_a_missing_file_is_located_at_document_zero(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as caught:
        load_file(path)
    assert caught.value.issues == [SpecIssue(str(path), 0, None, "", "file not found")]


def test_a_file_that_is_not_utf8_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"kind: \xe9t\xe9\n")
    with pytest.raises(SpecError) as caught:
        load_file(path)
    (issue,) = caught.value.issues
    assert (issue.source, issue.document, issue.line, issue.field) == (str(path), 0, None, "")
    assert issue.message.startswith("cannot read: ")


def test_load_file_names_the_file_in_every_issue(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(AGENT + '  user: "0"\n')
    with pytest.raises(SpecError) as caught:
        load_file(path)
    assert [i.source for i in caught.value.issues] == [str(path)]


def test_load_text_names_an_unnamed_source() -> None:
    with pytest.raises(SpecError) as caught:
        load_text("")
    assert caught.value.issues[0].source == "<spec>"


def test_an_issue_reads_as_file_document_line_field_message() -> None:
    issue = SpecIssue("a.yaml", 2, 9, "spec.user", "root is refused")
    assert str(issue) == "a.yaml: document 2, line 9: spec.user: root is refused"
    assert (
        str(SpecIssue("a.yaml", 1, None, "", "no documents")) == "a.yaml: document 1: no documents"
    )


def test_a_spec_error_prints_one_issue_per_line() -> None:
    error = SpecError([SpecIssue("a", 1, 1, "f", "m1"), SpecIssue("a", 2, None, "", "m2")])
    assert str(error) == "a: document 1, line 1: f: m1\na: document 2: m2"


# --- bad inputs ------------------------------------------------------------------------------

SPEC_FIELDS = (
    "image, command, env, user, workspace, resources, egress, docker, health, secrets, restart"
)
SIZE_HELP = (
    "is not a size: use a number of bytes or a number with one of the units Ki, Mi, Gi, Ti "
    "(powers of 1024) or k, M, G, T (powers of 1000), e.g. 512Mi"
)
DURATION_HELP = "is not a duration: use a number with one of the units ms, s, m, h, d, e.g. 10s"
NAME_HELP = (
    "must be lowercase letters, digits and '-', 1 to 40 characters, "
    "starting and ending with a letter or digit"
)
NOT_A_MAPPING = "a document must be a mapping with apiVersion, kind, metadata and spec"
LATER = "not supported yet: "

BAD: list[tuple[str, str, list[Located]]] = [
    (
        "an unknown spec field lists the valid fields",
        AGENT + "  imagePullPolicy: Always\n",
        [
            (
                1,
                8,
                "spec.imagePullPolicy",
                f"unknown field 'imagePullPolicy'; valid fields here: {SPEC_FIELDS}",
            )
        ],
    ),
    (
        "an unknown nested field lists the valid fields of its block",
        AGENT + "  resources:\n    cpu: 1\n",
        [
            (
                1,
                9,
                "spec.resources.cpu",
                "unknown field 'cpu'; valid fields here: cpus, memory, pids",
            )
        ],
    ),
    (
        "a snake_case spelling is an unknown field",
        AGENT + "  restart: {max_restarts: 3}\n",
        [
            (
                1,
                8,
                "spec.restart.max_restarts",
                "unknown field 'max_restarts'; valid fields here: maxRestarts, window",
            )
        ],
    ),
    (
        "an unknown top-level field lists the document's fields",
        AGENT + "status: {}\n",
        [
            (
                1,
                8,
                "status",
                "unknown field 'status'; valid fields here: apiVersion, kind, metadata, spec",
            )
        ],
    ),
    (
        "the root user is refused",
        AGENT + '  user: "0:0"\n',
        [
            (
                1,
                8,
                "spec.user",
                "root (uid or gid 0) is refused; use a non-root id such as 10001:10001",
            )
        ],
    ),
    (
        "uid 0 alone is refused",
        AGENT + '  user: "0"\n',
        [
            (
                1,
                8,
                "spec.user",
                "root (uid or gid 0) is refused; use a non-root id such as 10001:10001",
            )
        ],
    ),
    (
        "gid 0 with a non-root uid is refused",
        AGENT + '  user: "10001:0"\n',
        [
            (
                1,
                8,
                "spec.user",
                "root (uid or gid 0) is refused; use a non-root id such as 10001:10001",
            )
        ],
    ),
    (
        "a user name instead of ids is refused",
        AGENT + "  user: nobody\n",
        [(1, 8, "spec.user", "'nobody' is not 'uid:gid' with numeric ids, e.g. '10001:10001'")],
    ),
    (
        "a user with three parts is refused",
        AGENT + '  user: "1:2:3"\n',
        [(1, 8, "spec.user", "'1:2:3' is not 'uid:gid' with numeric ids, e.g. '10001:10001'")],
    ),
    (
        "ids past 2^31-1 are refused",
        AGENT + '  user: "2147483648"\n',
        [(1, 8, "spec.user", "ids must be below 2147483648")],
    ),
    (
        "a size with an unknown unit is refused",
        AGENT + "  resources:\n    memory: 512MB\n",
        [(1, 9, "spec.resources.memory", f"'512MB' {SIZE_HELP}")],
    ),
    (
        "a negative size is refused",
        AGENT + "  resources:\n    memory: -1\n",
        [(1, 9, "spec.resources.memory", "must not be negative")],
    ),
    (
        "memory below 16Mi is refused",
        AGENT + "  resources:\n    memory: 1Mi\n",
        [
            (
                1,
                9,
                "spec.resources.memory",
                "Input should be greater than or equal to 16777216, got 1048576",
            )
        ],
    ),
    (
        "a tenant quota with a bad size is refused",
        TENANT + "spec:\n  quota:\n    memory: lots\n",
        [(1, 7, "spec.quota.memory", f"'lots' {SIZE_HELP}")],
    ),
    (
        "a duration without a unit is refused",
        AGENT + '  restart:\n    window: "600"\n',
        [(1, 9, "spec.restart.window", f"'600' {DURATION_HELP}")],
    ),
    (
        "a duration in weeks is refused",
        AGENT + "  health:\n    tcp: {port: 80}\n    interval: 1w\n",
        [(1, 10, "spec.health.interval", f"'1w' {DURATION_HELP}")],
    ),
    (
        "a negative duration is refused",
        AGENT + "  restart:\n    window: -5\n",
        [(1, 9, "spec.restart.window", "must not be negative")],
    ),
    (
        "a wrong apiVersion is refused",
        AGENT.replace("agentcell/v1", "agentcell/v2"),
        [(1, 1, "apiVersion", "must be 'agentcell/v1', got 'agentcell/v2'")],
    ),
    (
        "a missing apiVersion is refused",
        "kind: Agent\n",
        [(1, 1, "apiVersion", "must be 'agentcell/v1'")],
    ),
    (
        "a wrong kind is refused",
        AGENT.replace("kind: Agent", "kind: Pod"),
        [(1, 2, "kind", "must be one of Tenant, Agent, got 'Pod'")],
    ),
    (
        "a missing kind is refused",
        "apiVersion: agentcell/v1\nmetadata: {name: a}\n",
        [(1, 1, "kind", "must be one of Tenant, Agent")],
    ),
    (
        "missing metadata is refused",
        "apiVersion: agentcell/v1\nkind: Agent\nspec: {image: busybox}\n",
        [(1, 1, "metadata", "required field is missing")],
    ),
    (
        "a missing image is refused",
        AGENT.replace("  image: agentcell/demo-agent:latest\n", "  command: [sh]\n"),
        [(1, 6, "spec.image", "required field is missing")],
    ),
    (
        "a missing spec on an Agent is refused",
        AGENT.replace("spec:\n  image: agentcell/demo-agent:latest\n", ""),
        [(1, 1, "spec", "required field is missing")],
    ),
    (
        "a cell name with capitals and '_' is refused",
        AGENT.replace("name: researcher", "name: Re_searcher"),
        [(1, 4, "metadata.name", f"{NAME_HELP}, got 'Re_searcher'")],
    ),
    (
        "a cell name of 41 characters is refused",
        AGENT.replace("name: researcher", "name: " + "a" * 41),
        [(1, 4, "metadata.name", f"{NAME_HELP}, got '{'a' * 41}'")],
    ),
    (
        "a tenant name ending in '-' is refused",
        AGENT.replace("tenant: acme", "tenant: acme-"),
        [(1, 5, "metadata.tenant", f"{NAME_HELP}, got 'acme-'")],
    ),
    (
        "a key given twice is refused at its second line",
        AGENT + "  image: busybox\n",
        [(1, 8, "spec.image", "duplicate key")],
    ),
    (
        "the same Agent twice is refused in the second document",
        AGENT + "---\n" + AGENT,
        [(2, 12, "metadata.name", "Agent 'acme/researcher' is already defined in document 1")],
    ),
    (
        "the same Tenant twice is refused in the second document",
        TENANT + "---\n" + TENANT,
        [(2, 9, "metadata.name", "Tenant 'acme' is already defined in document 1")],
    ),
    (
        "a YAML syntax error names its line",
        AGENT + "  env: {A: [\n",
        [(1, 9, "", "not valid YAML: expected the node content, but found '<stream end>'")],
    ),
    (
        "bad indentation names its line",
        AGENT + "  env:\n    A: b\n   B: c\n",
        [(1, 10, "", "not valid YAML: expected <block end>, but found '<block mapping start>'")],
    ),
    (
        "a tab in indentation names its line",
        AGENT + "  env:\n\tA: b\n",
        [(1, 9, "", "not valid YAML: found character '\\t' that cannot start any token")],
    ),
    (
        "a syntax error in the second document names document 2",
        AGENT + "---\nkind: [\n",
        [(2, 10, "", "not valid YAML: expected the node content, but found '<stream end>'")],
    ),
    (
        "an empty file holds no documents",
        "",
        [(1, None, "", "no documents: expected at least one Tenant or Agent")],
    ),
    (
        "a file of comments holds no documents",
        "# nothing here\n\n# still nothing\n",
        [(1, None, "", "no documents: expected at least one Tenant or Agent")],
    ),
    ("a scalar document is not a mapping", "just words\n", [(1, 1, "", NOT_A_MAPPING)]),
    ("a list document is not a mapping", "- kind: Agent\n", [(1, 1, "", NOT_A_MAPPING)]),
    (
        "a bad document after a good one is located in document 2",
        AGENT + "---\n- 1\n",
        [(2, 9, "", NOT_A_MAPPING)],
    ),
    (
        "a non-scalar key is refused",
        AGENT + "  ? [a, b]\n  : c\n",
        [(1, 8, "spec", "keys must be plain strings")],
    ),
    (
        "an address in a host rule is refused: that is what cidr is for",
        AGENT + "  egress:\n    allow:\n      - host: 10.0.0.5\n",
        [
            (
                1,
                10,
                "spec.egress.allow[0].host",
                "'10.0.0.5' is an address: write it as a cidr rule, e.g. {cidr: 10.0.0.5/32}",
            )
        ],
    ),
    (
        "a URL in a host rule is refused",
        AGENT + "  egress:\n    allow:\n      - host: https://example.com/\n",
        [
            (
                1,
                10,
                "spec.egress.allow[0].host",
                "'https://example.com/' is not a host name: write a name such as "
                "api.example.com, or *.example.com for its subdomains (no scheme, port, path, "
                "user or wildcard elsewhere)",
            )
        ],
    ),
    (
        "docker limits must be positive",
        AGENT + "  docker:\n    access: own\n    limits: {cpus: 0}\n",
        [(1, 10, "spec.docker.limits.cpus", "Input should be greater than 0, got 0")],
    ),
    (
        "a secret name follows the name rule",
        AGENT + "  secrets: [DB_Password]\n",
        [
            (
                1,
                8,
                "spec.secrets[0]",
                "String should match pattern '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$', "
                "got 'DB_Password'",
            )
        ],
    ),
    (
        "a workspace size is not supported yet",
        AGENT + "  workspace:\n    size: 1Gi\n",
        [
            (
                1,
                9,
                "spec.workspace.size",
                LATER + "this engine's volume driver cannot enforce a size; omit it",
            )
        ],
    ),
    (
        "secrets are supported: an unsupported field next to them is the only issue",
        AGENT + "  workspace: {size: 1Gi}\n  secrets: [a]\n",
        [
            (
                1,
                8,
                "spec.workspace.size",
                LATER + "this engine's volume driver cannot enforce a size; omit it",
            ),
        ],
    ),
    (
        "a wildcard anywhere but the first label is refused",
        AGENT + "  egress:\n    allow:\n      - host: api.*.example.com\n",
        [
            (
                1,
                10,
                "spec.egress.allow[0].host",
                "'api.*.example.com' is not a host name: write a name such as "
                "api.example.com, or *.example.com for its subdomains (no scheme, port, path, "
                "user or wildcard elsewhere)",
            )
        ],
    ),
    (
        "an egress rule with both host and cidr is refused before support is checked",
        AGENT + "  egress:\n    allow:\n      - {host: a.example, cidr: 10.0.0.0/8}\n",
        [(1, 10, "spec.egress.allow[0]", "give exactly one of 'host' or 'cidr'")],
    ),
    (
        "an egress CIDR with host bits set is refused",
        AGENT + "  egress:\n    allow:\n      - cidr: 10.0.0.1/8\n",
        [
            (
                1,
                10,
                "spec.egress.allow[0].cidr",
                "not a CIDR such as 198.51.100.0/24: 10.0.0.1/8 has host bits set",
            )
        ],
    ),
    (
        "an invalid image reference is refused",
        AGENT.replace("agentcell/demo-agent:latest", "Agentcell/Demo"),
        [
            (
                1,
                7,
                "spec.image",
                "'Agentcell/Demo' is not an image reference such as agentcell/demo-agent:latest",
            )
        ],
    ),
    (
        "an env name that is not a variable name is refused",
        AGENT + "  env:\n    9LIVES: x\n",
        [(1, 8, "spec.env", "'9LIVES' is not a variable name (letters, digits, '_')")],
    ),
    (
        "an env value that is not a string is refused",
        AGENT + "  env:\n    PORT: 8080\n",
        [(1, 9, "spec.env.PORT", "Input should be a valid string, got 8080")],
    ),
    (
        "an empty command is refused",
        AGENT + "  command: []\n",
        [(1, 8, "spec.command", "List should have at least 1 item after validation, not 0")],
    ),
    (
        "a workspace access other than rw, ro, none is refused",
        AGENT + "  workspace:\n    access: wo\n",
        [(1, 9, "spec.workspace.access", "Input should be 'rw', 'ro' or 'none', got 'wo'")],
    ),
    (
        "health without a probe is refused",
        AGENT + "  health:\n    interval: 5s\n",
        [(1, 8, "spec.health", "give exactly one probe: 'http', 'tcp' or 'exec'")],
    ),
    (
        "health with two probes is refused",
        AGENT + "  health:\n    tcp: {port: 80}\n    exec: {command: [check]}\n",
        [(1, 8, "spec.health", "give exactly one probe: 'http', 'tcp' or 'exec'")],
    ),
    (
        "a health timeout above the interval is refused",
        AGENT + "  health:\n    tcp: {port: 80}\n    interval: 1s\n    timeout: 2s\n",
        [(1, 8, "spec.health", "timeout must not exceed interval")],
    ),
    (
        "a probe port above 65535 is refused",
        AGENT + "  health:\n    tcp:\n      port: 70000\n",
        [(1, 10, "spec.health.tcp.port", "Input should be less than or equal to 65535, got 70000")],
    ),
    (
        "an http probe path must start with '/'",
        AGENT + "  health:\n    http: {port: 80, path: healthz}\n",
        [
            (
                1,
                9,
                "spec.health.http.path",
                "String should match pattern '^/[^\\s]*$', got 'healthz'",
            )
        ],
    ),
    (
        "a negative agents quota is refused",
        TENANT + "spec:\n  quota: {agents: -1}\n",
        [(1, 6, "spec.quota.agents", "Input should be greater than or equal to 0, got -1")],
    ),
    (
        "issues of several documents are all reported, good documents are not",
        AGENT + '  user: "0"\n---\n' + TENANT + "---\n" + AGENT.replace("kind: Agent", "kind: Job"),
        [
            (
                1,
                8,
                "spec.user",
                "root (uid or gid 0) is refused; use a non-root id such as 10001:10001",
            ),
            (3, 16, "kind", "must be one of Tenant, Agent, got 'Job'"),
        ],
    ),
    (
        "several issues of one document are all reported",
        AGENT + '  user: "0"\n  resources: {pids: 1}\n',
        [
            (
                1,
                8,
                "spec.user",
                "root (uid or gid 0) is refused; use a non-root id such as 10001:10001",
            ),
            (1, 9, "spec.resources.pids", "Input should be greater than or equal to 16, got 1"),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [r[1:] for r in BAD], ids=[r[0] for r in BAD])
def test_a_bad_input_is_refused_with_a_located_message(text: str, expected: list[Located]) -> None:
    assert issues_of(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            AGENT.replace("  tenant: acme\n", ""),
            [
                (
                    1,
                    3,
                    "metadata.tenant",
                    "required: the tenant this agent belongs to",
                )
            ],
        ),
        (
            TENANT + "  tenant: other\n",
            [(1, 5, "metadata.tenant", "a Tenant's metadata has no 'tenant' field")],
        ),
    ],
    ids=["an Agent without a tenant", "a Tenant given a tenant"],
)
def test_the_tenant_rule_names_metadata_tenant_and_its_line(
    text: str, expected: list[Located]
) -> None:
    assert issues_of(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            AGENT.replace("  tenant: acme\n", ""),
            "required: the tenant this agent belongs to",
        ),
        (TENANT + "  tenant: other\n", "a Tenant's metadata has no 'tenant' field"),
    ],
    ids=["an Agent without a tenant", "a Tenant given a tenant"],
)
def test_the_tenant_rule_is_enforced(text: str, message: str) -> None:
    ((document, _line, _field, got),) = issues_of(text)
    assert (document, got) == (1, message)


# --- reserved environment variables ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "DOCKER_HOST",
        "http_proxy",
        "https_proxy",
        "Docker_Host",
        "AGENTCELL_TENANT",
        "AGENTCELL_CELL",
        "AGENTCELL_ANYTHING",
        "agentcell_lowercase",
    ],
)
def test_a_variable_agentcell_sets_itself_cannot_be_given(name: str) -> None:
    assert issues_of(AGENT + f"  env:\n    {name}: x\n") == [
        (1, 8, "spec.env", f"{name!r} is set by agentcell itself and cannot be given")
    ]


@pytest.mark.parametrize(
    "name", ["PROXY", "MY_HTTP_PROXY", "HTTP_PROXY_URL", "AGENTCELL", "AGENTCELLX", "_X", "a1"]
)
def test_a_variable_that_only_resembles_a_reserved_one_is_kept(name: str) -> None:
    assert only_agent(AGENT + f"  env:\n    {name}: x\n").spec.env == {name: "x"}


# --- image references ------------------------------------------------------------------------

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "agentcell/demo-agent",
        "agentcell/demo-agent:latest",
        "agentcell/demo-agent:v1.2.3-rc_1",
        "localhost:5000/team/app:1.2",
        "registry.example.com/a/b/c",
        "my_app.v2",
        f"busybox@{DIGEST}",
        f"busybox:1.36@{DIGEST}",
        "app:" + "t" * 128,
    ],
)
def test_an_image_reference_is_accepted(image: str) -> None:
    assert only_agent(AGENT.replace("agentcell/demo-agent:latest", image)).spec.image == image


@pytest.mark.parametrize(
    "image",
    [
        "BusyBox",
        "busybox:",
        "busybox:-tag",
        "busybox:a:b",
        "app:" + "t" * 129,
        "busybox@sha256:abc",
        f"busybox@{DIGEST.upper()}",
        "http://registry/app",
        "/app",
        "app/",
        "-app",
        "app-",
        "app name",
        "app;rm -rf",
    ],
)
def test_an_invalid_image_reference_is_refused(image: str) -> None:
    text = AGENT.replace("agentcell/demo-agent:latest", f"{image!r}".replace("'", '"'))
    assert issues_of(text) == [
        (
            1,
            7,
            "spec.image",
            f"{image!r} is not an image reference such as agentcell/demo-agent:latest",
        )
    ]


# --- never anything but SpecError ------------------------------------------------------------

# Tags (!), anchors and aliases (& *) and merge keys (<<) are left out: the HOSTILE rows below
# show that they escape as other errors. Widen both strategies when that bug is fixed.
NOT_HOSTILE = set("!&*<")
YAMLISH = st.text(
    alphabet=st.sampled_from(list("ab:-{}[],'\"#\n\t ?|>.0123456789%@`")), max_size=80
)
ANY_TEXT = st.text(max_size=80).filter(lambda t: not NOT_HOSTILE & set(t))
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
SPEC_KEYS = st.sampled_from([*SPEC_FIELDS.split(", "), "other"])


def issues_or_none(text: str) -> list[SpecIssue] | None:
    """The issues load_text raises, or None when the text loads; any other error propagates."""
    try:
        load_text(text, source=SOURCE)
    except SpecError as e:
        return e.issues
    return None


@settings(max_examples=300, deadline=None)
@given(YAMLISH | ANY_TEXT)
def test_arbitrary_text_raises_only_spec_error(text: str) -> None:
    issues = issues_or_none(text)
    if issues is not None:
        assert issues
        assert all(i.source == SOURCE and i.document >= 1 for i in issues)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_arbitrary_yaml_data_raises_only_spec_error(data: object) -> None:
    assert issues_or_none(yaml.safe_dump(data)) != []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["Agent", "Tenant", "Other"]),
    metadata=st.dictionaries(
        st.sampled_from(["name", "tenant", "labels", "x"]), VALUES, max_size=3
    ),
    spec=st.dictionaries(SPEC_KEYS, VALUES, max_size=4),
)
def test_arbitrary_near_miss_documents_raise_only_spec_error(
    kind: str, metadata: dict[str, object], spec: dict[str, object]
) -> None:
    doc = {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}
    assert issues_or_none(yaml.safe_dump(doc)) != []


HOSTILE = [
    ("a recursive sequence alias", "a: &x [*x]\n"),
    ("a recursive mapping alias", "&x {a: *x}\n"),
    ("an unknown local tag", AGENT + "  command: [!shell ls]\n"),
    ("a python object tag", "a: !!python/object:os.system x\n"),
    ("undecodable !!binary", "a: !!binary 'x'\n"),
    ("a merge key", "base: &b {image: busybox}\nspec:\n  <<: *b\n"),
    ("a bare merge key, two characters", "<<"),
]


@pytest.mark.parametrize("text", [r[1] for r in HOSTILE], ids=[r[0] for r in HOSTILE])
def test_hostile_yaml_raises_only_spec_error(text: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_text(text, source=SOURCE)
    assert all(i.line is not None for i in caught.value.issues)


def laughs(depth: int, fan: int) -> str:
    lines = ["a0: &a0 x"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]" for i in range(1, depth + 1)]
    return "\n".join(lines) + "\n"


def test_nested_aliases_are_refused_quickly() -> None:
    text = laughs(depth=6, fan=8)  # 8**6 = 262144 leaves once expanded
    start = time.perf_counter()
    with pytest.raises(SpecError):
        load_text(text, source=SOURCE)
    assert time.perf_counter() - start < 0.05


def test_loading_retains_no_yaml_nodes() -> None:
    import gc

    def live_nodes() -> int:
        gc.collect()
        return sum(isinstance(o, yaml.Node) for o in gc.get_objects())

    load_text(AGENT, source=SOURCE)  # warm up
    before = live_nodes()
    for _ in range(50):
        load_text(AGENT, source=SOURCE)
    assert live_nodes() - before < 50


# --- what the store relies on: a loaded spec survives JSON ------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        EXAMPLE.read_text(),
        AGENT,
        AGENT
        + "  health: {exec: {command: [c]}, interval: 250ms, timeout: 100ms, startPeriod: 1m}\n",
        AGENT + "  restart: {window: 1h}\n",
        AGENT + "  resources: {memory: 1500000000}\n",
    ],
    ids=["the example", "a minimal agent", "millisecond durations", "hours", "decimal memory"],
)
def test_a_loaded_document_survives_a_json_round_trip(text: str) -> None:
    for doc in load_text(text, source=SOURCE):
        assert type(doc).model_validate_json(doc.model_dump_json(by_alias=True)) == doc


@pytest.mark.parametrize(
    "spec",
    [
        "  restart: {window: 300h}\n",
        "  restart: {window: 1000000}\n",
        "  restart: {window: .inf}\n",
        "  health: {exec: {command: [c]}, startPeriod: .nan}\n",
        "  health: {exec: {command: [c]}, startPeriod: 1.5ms}\n",
        "  health: {exec: {command: [c]}, startPeriod: 1234.56789}\n",
    ],
    ids=[
        "300 hours",
        "a million seconds",
        "infinity",
        "not a number",
        "1.5 milliseconds",
        "many digits",
    ],
)
def test_every_duration_survives_a_json_round_trip(spec: str) -> None:
    try:
        agent = only_agent(AGENT + spec)
    except SpecError:
        return  # refusing a duration (infinity) at load is a fine fix too
    assert Agent.model_validate_json(agent.model_dump_json(by_alias=True)) == agent
