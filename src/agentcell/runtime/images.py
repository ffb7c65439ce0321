"""Builds every image agentcell needs, offline and cached.

This module owns the three images and how they are made:

    agentcell/base:bookworm       Debian bookworm made with debootstrap and ``docker import``
                                  (or any image named by ``AGENTCELL_BASE_IMAGE``, re-tagged)
    agentcell/runtime:latest      FROM base: the agentcell package and its sidecar deps only
    agentcell/demo-agent:latest   FROM base: the stdlib demo agent

Builds are hermetic: Debian packages come in through debootstrap and Python wheels
through ``pip download`` on the host; Dockerfile builds run with no network. Each image
carries a label with the hash of everything it was made from (``agentcell.recipe`` for
the base, ``agentcell.image-hash`` for the others) and is rebuilt only when that changes.

Environment: ``AGENTCELL_BASE_IMAGE`` (use that image as the base),
``AGENTCELL_DEBIAN_MIRROR`` (debootstrap mirror), ``AGENTCELL_CACHE_DIR`` (cache root,
default ``~/.cache/agentcell``; wheels are kept under ``wheels/``).
"""

from __future__ import annotations

__all__ = ["IMAGE_NAMES", "ImageResult", "build_images"]

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import platformdirs

from agentcell.errors import ImageBuildError

BASE = "agentcell/base:bookworm"
RUNTIME = "agentcell/runtime:latest"
DEMO_AGENT = "agentcell/demo-agent:latest"
IMAGE_NAMES: tuple[str, ...] = (BASE, RUNTIME, DEMO_AGENT)

RECIPE_LABEL = "agentcell.recipe"
HASH_LABEL = "agentcell.image-hash"

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_IMAGES_DIR = _PACKAGE_DIR / "images"
_CONTEXT_DIRS = {RUNTIME: "runtime", DEMO_AGENT: "demo-agent"}
_DEPENDS_ON = {RUNTIME: BASE, DEMO_AGENT: BASE}
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
_DEFAULT_MIRROR = "http://deb.debian.org/debian"
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_OUTPUT_TAIL = 20

# The runtime image holds the sidecar dependencies only, at the versions installed here.
_RUNTIME_DISTRIBUTIONS = (
    "pydantic",
    "pydantic_core",
    "annotated-types",
    "typing_extensions",
    "typing-inspection",
    "PyYAML",
    "h11",
)
_WHEEL_TARGET = "cp311-manylinux2014_x86_64"
_PIP_TARGET_ARGS = (
    *("--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11"),
    *("--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64"),
)


@dataclass(frozen=True)
class ImageResult:
    """One image that ``build_images`` built or found up to date."""

    name: str
    image_id: str
    built: bool
    seconds: float


@dataclass(frozen=True)
class _BaseRecipe:
    """Everything that decides the content of the debootstrap base."""

    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = ("python3", "curl", "ca-certificates")
    strip: tuple[str, ...] = (
        "var/lib/apt/lists/*",
        "var/cache/apt/*",
        "var/cache/debconf/*-old",
        "var/lib/dpkg/*-old",
        "var/log/*.log",
        "usr/share/doc/*",
        "usr/share/man/*",
        "usr/share/info/*",
        "usr/share/locale/*",
        "dev/*",
        "etc/hostname",
        "etc/resolv.conf",
    )
    changes: tuple[str, ...] = (
        "ENV LANG=C.UTF-8",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )


_BASE_RECIPE = _BaseRecipe()


def build_images(
    client: docker.DockerClient,
    *,
    force: bool = False,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[ImageResult]:
    """Build the images in ``only`` (default: all of ``IMAGE_NAMES``), in dependency order.

    An image whose label matches the hash of its inputs is reused (``built=False``). The
    base an image needs is always included (built if missing or stale); ``force`` rebuilds,
    without the builder cache, only the images named in ``only`` (all when ``only`` is None).
    Raises ``ImageBuildError`` when an image cannot be built.
    """
    order, requested = _plan_targets(only)
    results: list[ImageResult] = []
    for name in order:
        forced = force and name in requested
        started = time.monotonic()
        try:
            previous = _find_image(client, name)
            if name == BASE:
                image_id, built = _ensure_base(client, forced, log)
            else:
                image_id, built = _ensure_dockerfile_image(client, name, forced, log)
            if previous is not None and previous.id != image_id:
                _remove_if_untagged(client, str(previous.id), log)
        except (docker.errors.DockerException, OSError) as exc:
            raise ImageBuildError(f"{name}: {exc}") from exc
        seconds = time.monotonic() - started
        if built:
            log(f"images: {name} built in {seconds:.1f}s ({image_id[:19]})")
        else:
            log(f"images: {name} up to date ({image_id[:19]})")
        results.append(ImageResult(name=name, image_id=image_id, built=built, seconds=seconds))
    return results


def _plan_targets(only: Sequence[str] | None) -> tuple[list[str], frozenset[str]]:
    """Return the images to process in build order, and the set the caller asked for."""
    requested = frozenset(IMAGE_NAMES if only is None else only)
    unknown = sorted(requested.difference(IMAGE_NAMES))
    if unknown:
        raise ImageBuildError(
            f"unknown image(s) {', '.join(unknown)}; known: {', '.join(IMAGE_NAMES)}"
        )
    needed = requested | {_DEPENDS_ON[n] for n in requested if n in _DEPENDS_ON}
    return [n for n in IMAGE_NAMES if n in needed], requested


# --- hashing (pure) ------------------------------------------------------------------------


def _recipe_hash(recipe: _BaseRecipe) -> str:
    """Hash of the base recipe; the package order does not matter."""
    document = {
        "suite": recipe.suite,
        "variant": recipe.variant,
        "packages": sorted(recipe.packages),
        "strip": list(recipe.strip),
        "changes": list(recipe.changes),
    }
    return _sha256_json(document)


def _digest_tree(root: Path) -> str:
    """Hash of every file below ``root``: relative path, executable bit and content."""
    digest = hashlib.sha256()
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())
    for relative, path in files:
        executable = "x" if path.stat().st_mode & 0o111 else "-"
        digest.update(f"{relative}\0{executable}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _image_hash(context_digest: str, build_args: Mapping[str, str], base_id: str) -> str:
    """Hash of a Dockerfile build's inputs: its context, its build args and its base image."""
    document = {"context": context_digest, "build_args": dict(build_args), "base": base_id}
    return _sha256_json(document)


def _sha256_json(document: Mapping[str, Any]) -> str:
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def _normalize_distribution(name: str) -> str:
    """PEP 503/427 normal form, as used in wheel file names."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _find_wheel(directory: Path, distribution: str, version: str) -> Path | None:
    """The wheel of ``distribution`` at ``version`` in ``directory``, if one is there."""
    wanted = _normalize_distribution(distribution)
    for path in sorted(directory.glob("*.whl")):
        parts = path.name.split("-")
        if len(parts) >= 5 and _normalize_distribution(parts[0]) == wanted and parts[1] == version:
            return path
    return None


# --- base image ------------------------------------------------------------------------------


def _ensure_base(
    client: docker.DockerClient, force: bool, log: Callable[[str], None]
) -> tuple[str, bool]:
    external = os.environ.get("AGENTCELL_BASE_IMAGE")
    if external:
        return _tag_external_base(client, external, log)
    recipe_hash = _recipe_hash(_BASE_RECIPE)
    current = _find_image(client, BASE)
    if not force and current is not None and current.labels.get(RECIPE_LABEL) == recipe_hash:
        return str(current.id), False
    mirror = os.environ.get("AGENTCELL_DEBIAN_MIRROR") or _DEFAULT_MIRROR
    _debootstrap_base(client, _BASE_RECIPE, recipe_hash, mirror, log)
    return str(client.images.get(BASE).id), True


def _tag_external_base(
    client: docker.DockerClient, reference: str, log: Callable[[str], None]
) -> tuple[str, bool]:
    image = _find_image(client, reference)
    if image is None:
        log(f"images: pulling {reference} (AGENTCELL_BASE_IMAGE)")
        try:
            image = client.images.pull(reference)
        except docker.errors.APIError as exc:
            raise ImageBuildError(
                f"{BASE}: AGENTCELL_BASE_IMAGE={reference} is not here and could not be "
                f"pulled ({exc.explanation}); load it, or unset it to build the base locally"
            ) from exc
    current = _find_image(client, BASE)
    if current is not None and current.id == image.id:
        return str(image.id), False
    log(f"images: tagging {reference} as {BASE} (AGENTCELL_BASE_IMAGE)")
    repository, tag = BASE.rsplit(":", 1)
    image.tag(repository, tag)
    return str(image.id), True


def _debootstrap_base(
    client: docker.DockerClient,
    recipe: _BaseRecipe,
    recipe_hash: str,
    mirror: str,
    log: Callable[[str], None],
) -> None:
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    debootstrap = shutil.which("debootstrap", path=search_path)
    if debootstrap is None:
        raise ImageBuildError(
            f"{BASE}: debootstrap is not installed; run scripts/setup.sh, or set "
            "AGENTCELL_BASE_IMAGE to an existing image (e.g. python:3.11-slim-bookworm)"
        )
    work_parent = _cache_dir() / "tmp"
    work_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="base-", dir=work_parent))
    rootfs = work / "rootfs"
    try:
        log(
            f"images: debootstrap {recipe.suite} ({recipe.variant}, "
            f"{','.join(recipe.packages)}) from {mirror}, about 40 s"
        )
        _run(
            [
                debootstrap,
                f"--variant={recipe.variant}",
                f"--include={','.join(recipe.packages)}",
                recipe.suite,
                str(rootfs),
                mirror,
            ],
            what="debootstrap",
            env={**os.environ, "PATH": search_path},
        )
        _unmount_below(rootfs)
        _strip(rootfs, recipe.strip)
        archive = work / "rootfs.tar"
        _run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=security.capability",
                "-C",
                str(rootfs),
                "-cf",
                str(archive),
                ".",
            ],
            what="tar",
        )
        log(f"images: importing the root filesystem as {BASE}")
        repository, tag = BASE.rsplit(":", 1)
        client.api.import_image_from_file(
            str(archive),
            repository=repository,
            tag=tag,
            changes=[*recipe.changes, f"LABEL {RECIPE_LABEL}={recipe_hash}"],
        )
    finally:
        _unmount_below(rootfs)
        shutil.rmtree(work)


def _strip(rootfs: Path, patterns: Iterable[str]) -> None:
    """Delete what an image does not need (apt lists and caches, docs, man pages, locales)."""
    for pattern in patterns:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _unmount_below(root: Path) -> None:
    """Detach anything a failed debootstrap left mounted under ``root`` before deleting it.

    Deleting a tree that still has the host's /proc, /sys or /dev bound into it would
    reach the host, so refuse (raise) when something stays mounted.
    """
    prefix = str(root.resolve()) + "/"
    for mountpoint in sorted(_mountpoints_below(prefix), reverse=True):
        subprocess.run(["umount", "--lazy", mountpoint], check=False, capture_output=True)
    left = _mountpoints_below(prefix)
    if left:
        raise ImageBuildError(
            f"{BASE}: {', '.join(left)} still mounted; {root} left in place, remove it by hand"
        )


def _mountpoints_below(prefix: str) -> list[str]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [_unescape_mount_field(line.split()[1]) for line in mounts if line.strip()]
    return [p for p in points if p.startswith(prefix)]


def _unescape_mount_field(text: str) -> str:
    """/proc/self/mounts writes spaces, tabs, newlines and backslashes as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


# --- Dockerfile images -------------------------------------------------------------------


def _ensure_dockerfile_image(
    client: docker.DockerClient, name: str, force: bool, log: Callable[[str], None]
) -> tuple[str, bool]:
    base_id = str(client.images.get(_DEPENDS_ON[name]).id)
    build_args = {"BASE_IMAGE": _DEPENDS_ON[name]}
    with tempfile.TemporaryDirectory(prefix="agentcell-context-") as tmp:
        context = Path(tmp)
        shutil.copytree(
            _IMAGES_DIR / _CONTEXT_DIRS[name], context, ignore=_IGNORED, dirs_exist_ok=True
        )
        if name == RUNTIME:
            (context / "wheels").mkdir()
            for wheel in _runtime_wheels(log):
                shutil.copy2(wheel, context / "wheels" / wheel.name)
            shutil.copytree(_PACKAGE_DIR, context / "agentcell", ignore=_IGNORED)
        image_hash = _image_hash(_digest_tree(context), build_args, base_id)
        current = _find_image(client, name)
        if not force and current is not None and current.labels.get(HASH_LABEL) == image_hash:
            return str(current.id), False
        log(f"images: building {name} (no network inside the build)")
        _docker_build(
            client,
            context,
            name=name,
            build_args=build_args,
            image_hash=image_hash,
            nocache=force,
            log=log,
        )
    return str(client.images.get(name).id), True


def _runtime_wheels(log: Callable[[str], None]) -> list[Path]:
    """The runtime's wheels, from the cache; ``pip download`` fetches the missing ones."""
    directory = _cache_dir() / "wheels" / _WHEEL_TARGET
    directory.mkdir(parents=True, exist_ok=True)
    pins: dict[str, str] = {}
    for distribution in _RUNTIME_DISTRIBUTIONS:
        try:
            pins[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ImageBuildError(
                f"{RUNTIME}: {distribution} is not installed here; its version pins the image"
            ) from exc
    missing = [f"{d}=={v}" for d, v in pins.items() if _find_wheel(directory, d, v) is None]
    if missing:
        log(f"images: pip download {' '.join(missing)} into {directory}")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                *_PIP_TARGET_ARGS,
                "--dest",
                str(directory),
                *missing,
            ],
            what="pip download",
        )
    wheels = []
    for distribution, version in pins.items():
        wheel = _find_wheel(directory, distribution, version)
        if wheel is None:
            raise ImageBuildError(
                f"{RUNTIME}: pip download gave no {_WHEEL_TARGET} wheel for "
                f"{distribution}=={version}"
            )
        wheels.append(wheel)
    return wheels


def _docker_build(
    client: docker.DockerClient,
    context: Path,
    *,
    name: str,
    build_args: Mapping[str, str],
    image_hash: str,
    nocache: bool,
    log: Callable[[str], None],
) -> None:
    lines: list[str] = []
    error: str | None = None
    stream = client.api.build(
        path=str(context),
        tag=name,
        buildargs=dict(build_args),
        labels={HASH_LABEL: image_hash},
        network_mode="none",
        nocache=nocache,
        pull=False,
        rm=True,
        forcerm=True,
        decode=True,
    )
    for chunk in stream:
        lines.extend(line for line in str(chunk.get("stream", "")).splitlines() if line.strip())
        if "error" in chunk:
            error = str(chunk.get("errorDetail", {}).get("message") or chunk["error"])
            lines.append(error)
    if error is not None:
        for line in lines:
            log(line)
        tail = "\n".join(lines[-_OUTPUT_TAIL:])
        raise ImageBuildError(f"{name}: docker build failed: {error}\n{tail}")
    _remove_stages(client, lines, log)


def _remove_stages(
    client: docker.DockerClient, lines: list[str], log: Callable[[str], None]
) -> None:
    """Remove what a multi-stage build leaves dangling: the classic builder keeps each
    earlier ``FROM ... AS`` stage's result as an untagged image (about 140 MB here).

    Only images this build's output names (`` ---> <id>`` lines) are candidates, so a
    dangling image someone else made is never touched.
    """
    named = {line.split("--->", 1)[1].strip() for line in lines if line.lstrip().startswith("--->")}
    for image in client.images.list(filters={"dangling": True}):
        if str(image.id).removeprefix("sha256:")[:12] in named:
            _remove_if_untagged(client, str(image.id), log)


# --- helpers -------------------------------------------------------------------------------


def _cache_dir() -> Path:
    configured = os.environ.get("AGENTCELL_CACHE_DIR")
    return Path(configured) if configured else platformdirs.user_cache_path("agentcell")


def _find_image(client: docker.DockerClient, reference: str) -> Any:
    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None


def _remove_if_untagged(
    client: docker.DockerClient, image_id: str, log: Callable[[str], None]
) -> None:
    """Remove an image a build replaced, unless it is still tagged or a container uses it."""
    image = _find_image(client, image_id)
    if image is None or image.tags:
        return
    try:
        client.images.remove(image_id)
    except docker.errors.APIError as exc:
        log(f"images: kept replaced image {image_id[:19]} ({exc.explanation})")


def _run(argv: list[str], *, what: str, env: Mapping[str, str] | None = None) -> None:
    """Run a host command; on failure raise with the last lines of its output."""
    completed = subprocess.run(
        argv, env=env, check=False, capture_output=True, text=True, errors="replace"
    )
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).splitlines()
        tail = "\n".join(output[-_OUTPUT_TAIL:])
        raise ImageBuildError(f"{what} failed (exit {completed.returncode}):\n{tail}")
