"""Integration tests of agentcell.runtime.images against the real Docker Engine.

Everything a test creates carries the label agentcell.test=images and is removed before
and after the module. All traffic stays on a throwaway --internal network and the host's
own side of it.
"""

from __future__ import annotations

import importlib.metadata
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import pytest

import livecell
from agentcell.runtime.images import IMAGE_NAMES, ImageResult, build_images

pytestmark = pytest.mark.integration

BASE, RUNTIME, DEMO = IMAGE_NAMES
LABELS = {"agentcell.test": "images"}
HARDENED: dict[str, Any] = {
    "read_only": True,
    "tmpfs": {"/tmp": "", "/run": ""},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "user": "10001:10001",
    "labels": LABELS,
}
NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# A stand-in for the egress gate: answers 203 only to a proxy-form request for the probe URL.
FAKE_PROXY = """
import http.server
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        proxied = self.path == "http://api.allowed.test/"
        self.send_response(203 if proxied else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()
http.server.ThreadingHTTPServer(("0.0.0.0", 3128), Handler).serve_forever()
"""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    return livecell.wait_for(check, timeout, what, every=0.2)


def remove_test_objects(client: docker.DockerClient) -> None:
    livecell.remove_labelled(client, "agentcell.test=images")


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    remove_test_objects(client)
    yield client
    remove_test_objects(client)
    client.close()


@pytest.fixture(scope="module")
def first_build(client: docker.DockerClient) -> list[ImageResult]:
    """Build everything once (cold on a fresh machine: debootstrap takes about 40 s)."""
    return build_images(client, log=lambda line: print(line, flush=True))


@pytest.fixture(scope="module")
def network(client: docker.DockerClient, first_build: list[ImageResult]) -> Iterator[Any]:
    network = client.networks.create("agentcell-test-images", internal=True, labels=LABELS)
    yield network
    for container in client.containers.list(
        all=True, filters={"label": "agentcell.test=images"}, ignore_removed=True
    ):
        container.remove(force=True)
    network.remove()


def address(container: Any, network: Any) -> str:
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"])


def workspace_volume(client: docker.DockerClient) -> str:
    """A fresh volume whose root the agent's uid owns (a new volume's root is root's)."""
    volume = client.volumes.create(labels=LABELS)
    client.containers.run(
        DEMO,
        ["chown", "10001:10001", "/workspace"],
        user="0:0",
        cap_drop=["ALL"],
        cap_add=["CHOWN"],
        security_opt=["no-new-privileges"],
        network_mode="none",
        volumes={volume.name: {"bind": "/workspace", "mode": "rw"}},
        labels=LABELS,
        remove=True,
    )
    return str(volume.name)


def healthz(url: str) -> bool:
    try:
        with NO_PROXY_OPENER.open(url, timeout=1) as response:
            return bool(response.status == 200 and response.read() == b"ok")
    except OSError:
        return False


def heartbeat(container: Any) -> str:
    exit_code, output = container.exec_run(["cat", "/workspace/heartbeat"])
    return output.decode() if exit_code == 0 else ""


@pytest.mark.timeout(900)
def test_builds_every_image_then_reuses_them(
    client: docker.DockerClient, first_build: list[ImageResult]
) -> None:
    assert [r.name for r in first_build] == list(IMAGE_NAMES)
    for result in first_build:
        assert client.images.get(result.name).id == result.image_id

    started = time.monotonic()
    again = build_images(client, log=lambda line: None)
    elapsed = time.monotonic() - started

    assert [(r.name, r.image_id, r.built) for r in again] == [
        (r.name, r.image_id, False) for r in first_build
    ]
    assert elapsed < 15, f"a cached build took {elapsed:.1f}s"


def test_only_brings_the_base_along(
    client: docker.DockerClient, first_build: list[ImageResult]
) -> None:
    results = build_images(client, only=[DEMO], log=lambda line: None)
    assert [(r.name, r.built) for r in results] == [(BASE, False), (DEMO, False)]


def test_force_rebuilds_only_what_was_named(
    client: docker.DockerClient, first_build: list[ImageResult]
) -> None:
    results = build_images(client, only=[DEMO], force=True, log=lambda line: None)
    assert [(r.name, r.built) for r in results] == [(BASE, False), (DEMO, True)]
    assert client.images.get(DEMO).id == results[1].image_id


def test_a_rebuild_leaves_no_dangling_image(
    client: docker.DockerClient, first_build: list[ImageResult]
) -> None:
    # The runtime is a two-stage build: the classic builder keeps the first stage's
    # result untagged, and the image it replaces is untagged too. Neither may stay, but
    # for a replaced image that a container still runs (another test's gate, say).
    def dangling() -> set[str]:
        return {str(i.id) for i in client.images.list(filters={"dangling": True})}

    before = dangling()
    replaced = str(client.images.get(RUNTIME).id)
    results = build_images(client, only=[RUNTIME], force=True, log=lambda line: None)

    assert [(r.name, r.built) for r in results] == [(BASE, False), (RUNTIME, True)]
    left = dangling() - before
    in_use = {str(c.attrs["Image"]) for c in client.containers.list(all=True, ignore_removed=True)}
    assert left <= ({replaced} & in_use), f"left behind: {left}"


def test_runtime_image_imports_agentcell_and_its_sidecar_deps(
    client: docker.DockerClient, first_build: list[ImageResult]
) -> None:
    script = (
        "import json, os, agentcell, h11, pydantic, yaml; print(json.dumps({"
        "'uid': os.getuid(), 'agentcell': agentcell.__file__, "
        "'pydantic': pydantic.VERSION, 'yaml': yaml.__version__, 'h11': h11.__version__}))"
    )
    container = client.containers.run(
        RUNTIME, ["-c", script], network_mode="none", detach=True, **HARDENED
    )
    status = container.wait(timeout=60)
    output = container.logs().decode()
    container.remove()

    assert status["StatusCode"] == 0, output
    found = json.loads(output)
    assert found == {
        "uid": 10001,
        "agentcell": "/opt/agentcell/lib/agentcell/__init__.py",
        "pydantic": importlib.metadata.version("pydantic"),
        "yaml": importlib.metadata.version("PyYAML"),
        "h11": importlib.metadata.version("h11"),
    }


def test_demo_agent_runs_hardened(client: docker.DockerClient, network: Any) -> None:
    agent = client.containers.run(
        DEMO,
        network=network.name,
        volumes={workspace_volume(client): {"bind": "/workspace", "mode": "rw"}},
        detach=True,
        **HARDENED,
    )
    url = f"http://{address(agent, network)}:8080/healthz"

    wait_for(f"{url} to answer ok", lambda: healthz(url))
    first_beat = wait_for("the heartbeat file", lambda: heartbeat(agent))
    assert first_beat.split()[1] == "1"
    assert "probe: no proxy configured, egress disabled" in agent.logs().decode()

    started = time.monotonic()
    agent.stop(timeout=10)
    stopped_in = time.monotonic() - started
    agent.reload()
    assert agent.attrs["State"]["ExitCode"] == 0, agent.logs().decode()
    assert stopped_in < 3, f"SIGTERM took {stopped_in:.1f}s"
    assert "SIGTERM received, stopping" in agent.logs().decode()


def test_demo_agent_probes_only_through_its_proxy(
    client: docker.DockerClient, network: Any
) -> None:
    proxy = client.containers.run(
        RUNTIME, ["-c", FAKE_PROXY], network=network.name, detach=True, **HARDENED
    )
    proxy_url = f"http://{address(proxy, network)}:3128"
    agent = client.containers.run(
        DEMO,
        network=network.name,
        environment={"HTTP_PROXY": proxy_url, "AGENT_PROBE_SECONDS": "1"},
        detach=True,
        **HARDENED,
    )

    wait_for(
        "the probe to pass through the proxy",
        lambda: "probe url=http://api.allowed.test/ status=203" in agent.logs().decode(),
    )
    assert "heartbeat: /workspace is not writable" in agent.logs().decode()
