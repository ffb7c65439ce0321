"""Unit tests of the pure helpers of agentcell.runtime.images (no Docker Engine needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agentcell.errors import ImageBuildError
from agentcell.runtime import images
from agentcell.runtime.images import IMAGE_NAMES

BASE, RUNTIME, DEMO = IMAGE_NAMES
RECIPE = images._BASE_RECIPE


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


# --- recipe hash -----------------------------------------------------------------------------


def test_recipe_hash_is_stable() -> None:
    assert images._recipe_hash(RECIPE) == images._recipe_hash(images._BaseRecipe())


def test_recipe_hash_ignores_package_order() -> None:
    shuffled = dataclasses.replace(RECIPE, packages=tuple(reversed(RECIPE.packages)))
    assert images._recipe_hash(shuffled) == images._recipe_hash(RECIPE)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"suite": "trixie"}, id="another suite"),
        pytest.param({"variant": "buildd"}, id="another variant"),
        pytest.param({"packages": (*RECIPE.packages, "git")}, id="one more package"),
        pytest.param({"strip": RECIPE.strip[1:]}, id="less stripped"),
        pytest.param({"changes": ("ENV LANG=C",)}, id="other image config"),
    ],
)
def test_recipe_hash_changes_with_every_input(change: dict[str, object]) -> None:
    other = dataclasses.replace(RECIPE, **change)  # type: ignore[arg-type]
    assert images._recipe_hash(other) != images._recipe_hash(RECIPE)


# --- context digest ------------------------------------------------------------------------


CONTEXT = {"Dockerfile": "FROM base\n", "app/agent.py": "print('hi')\n"}


def test_same_files_in_two_places_digest_the_same(tmp_path: Path) -> None:
    one = write(tmp_path / "one", CONTEXT)
    two = write(tmp_path / "two", dict(reversed(CONTEXT.items())))
    assert images._digest_tree(one) == images._digest_tree(two)


def test_empty_directories_do_not_count(tmp_path: Path) -> None:
    one = write(tmp_path / "one", CONTEXT)
    two = write(tmp_path / "two", CONTEXT)
    (two / "empty").mkdir()
    assert images._digest_tree(one) == images._digest_tree(two)


@pytest.mark.parametrize(
    "files",
    [
        pytest.param({**CONTEXT, "Dockerfile": "FROM other\n"}, id="content changed"),
        pytest.param({"Dockerfile": "FROM base\n", "agent.py": "print('hi')\n"}, id="file moved"),
        pytest.param({**CONTEXT, "wheels/x.whl": ""}, id="file added"),
        pytest.param({"Dockerfile": "FROM base\n"}, id="file removed"),
    ],
)
def test_digest_changes_with_the_files(tmp_path: Path, files: dict[str, str]) -> None:
    reference = write(tmp_path / "reference", CONTEXT)
    other = write(tmp_path / "other", files)
    assert images._digest_tree(other) != images._digest_tree(reference)


def test_digest_changes_with_the_executable_bit(tmp_path: Path) -> None:
    context = write(tmp_path / "context", CONTEXT)
    before = images._digest_tree(context)
    (context / "app/agent.py").chmod(0o755)
    assert images._digest_tree(context) != before


# --- image hash ----------------------------------------------------------------------------


ARGS = {"BASE_IMAGE": BASE}


def test_image_hash_ignores_build_arg_order() -> None:
    two = {"A": "1", "B": "2"}
    assert images._image_hash("c", two, "sha256:1") == images._image_hash(
        "c", dict(reversed(two.items())), "sha256:1"
    )


@pytest.mark.parametrize(
    ("context", "args", "base_id"),
    [
        pytest.param("other context", ARGS, "sha256:1", id="context changed"),
        pytest.param("context", {"BASE_IMAGE": "python:3.11"}, "sha256:1", id="build arg changed"),
        pytest.param("context", ARGS, "sha256:2", id="base image rebuilt"),
    ],
)
def test_image_hash_changes_with_every_input(
    context: str, args: dict[str, str], base_id: str
) -> None:
    assert images._image_hash(context, args, base_id) != images._image_hash(
        "context", ARGS, "sha256:1"
    )


# --- wheels ----------------------------------------------------------------------------------

WHEELS = (
    "pyyaml-6.0.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "typing_inspection-0.4.5-py3-none-any.whl",
    "pydantic_core-2.50.5-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "pydantic-2.14.4-py3-none-any.whl",
)


@pytest.mark.parametrize(
    ("distribution", "version", "expected"),
    [
        pytest.param("PyYAML", "6.0.4", WHEELS[0], id="case folded"),
        pytest.param("typing-inspection", "0.4.5", WHEELS[1], id="dash as underscore"),
        pytest.param("pydantic", "2.14.4", WHEELS[3], id="not confused with pydantic_core"),
        pytest.param("pydantic_core", "2.50.5", WHEELS[2], id="underscore name"),
        pytest.param("PyYAML", "6.0.3", None, id="other version"),
        pytest.param("h11", "0.16.0", None, id="absent"),
    ],
)
def test_find_wheel(tmp_path: Path, distribution: str, version: str, expected: str | None) -> None:
    for name in WHEELS:
        (tmp_path / name).touch()
    found = images._find_wheel(tmp_path, distribution, version)
    assert (found.name if found else None) == expected


# --- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("only", "order", "requested"),
    [
        pytest.param(None, [BASE, RUNTIME, DEMO], {BASE, RUNTIME, DEMO}, id="all by default"),
        pytest.param([DEMO], [BASE, DEMO], {DEMO}, id="the base comes along"),
        pytest.param([DEMO, RUNTIME], [BASE, RUNTIME, DEMO], {RUNTIME, DEMO}, id="build order"),
        pytest.param([BASE], [BASE], {BASE}, id="base alone"),
    ],
)
def test_plan_targets(only: list[str] | None, order: list[str], requested: set[str]) -> None:
    assert images._plan_targets(only) == (order, frozenset(requested))


def test_unknown_image_is_refused() -> None:
    with pytest.raises(ImageBuildError, match="unknown image"):
        images._plan_targets(["agentcell/nope:latest"])


def test_mount_fields_are_unescaped() -> None:
    assert images._unescape_mount_field(r"/tmp/a\040b\011c\134d") == "/tmp/a b\tc\\d"
