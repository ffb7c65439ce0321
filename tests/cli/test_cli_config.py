"""The CLI's config file: read with clear errors, written private and whole."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agentcell.cli._config import config_path, load_config, save_config
from agentcell.errors import ClientError


def test_no_file_means_no_settings(tmp_path: Path) -> None:
    assert load_config(tmp_path / "missing.yaml") == {}


def test_settings_round_trip_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "config.yaml"
    save_config({"url": "http://127.0.0.1:7878", "token": "act_x"}, path)
    assert load_config(path) == {"url": "http://127.0.0.1:7878", "token": "act_x"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left


def test_an_empty_setting_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    save_config({"url": "http://h:1", "token": ""}, path)
    assert load_config(path) == {"url": "http://h:1"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("url: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("url: http://h\npassword: x\n", "unknown key(s) password; valid: url, token"),
        ("token: 12\n", "token must be a non-empty string"),
        ("token: ''\n", "token must be a non-empty string"),
    ],
    ids=["bad yaml", "a list", "an unknown key", "a number", "empty"],
)
def test_a_bad_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ClientError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


def test_an_empty_file_is_no_settings(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("")
    assert load_config(path) == {}


def test_the_environment_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTCELL_CONFIG", str(tmp_path / "c.yaml"))
    assert config_path() == tmp_path / "c.yaml"
    monkeypatch.delenv("AGENTCELL_CONFIG")
    assert config_path().name == "config.yaml"
