"""The admin token: made once with mode 0600, then checked with a fixed-phrase reason."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from agentcell.control import TOKEN_FILE, ensure_admin_token


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_first_start_creates_a_private_token_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    token = ensure_admin_token(state)
    path = state / TOKEN_FILE
    assert TOKEN_FILE == "admin.token"
    assert mode(path) == 0o600
    assert mode(state) == 0o700
    assert path.read_text() == token + "\n"
    assert re.fullmatch(r"ac_[A-Za-z0-9_-]{43}", token)


def test_the_token_is_stable_across_starts(tmp_path: Path) -> None:
    first = ensure_admin_token(tmp_path)
    assert ensure_admin_token(tmp_path) == first
    assert ensure_admin_token(tmp_path) == first


def test_each_state_directory_gets_its_own_token(tmp_path: Path) -> None:
    assert ensure_admin_token(tmp_path / "a") != ensure_admin_token(tmp_path / "b")


@pytest.mark.parametrize("content", ["", "\n", "   \n\n"], ids=["empty", "a newline", "blanks"])
def test_an_empty_token_file_is_filled_anew(tmp_path: Path, content: str) -> None:
    path = tmp_path / TOKEN_FILE
    path.write_text(content)
    token = ensure_admin_token(tmp_path)
    assert token.startswith("ac_")
    assert path.read_text() == token + "\n"
    assert mode(path) == 0o600
    assert ensure_admin_token(tmp_path) == token


def test_a_token_file_others_could_read_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / TOKEN_FILE
    path.write_text("ac_existing\n")
    path.chmod(0o644)
    assert ensure_admin_token(tmp_path) == "ac_existing"
    assert mode(path) == 0o600


def test_a_token_written_by_hand_is_kept_without_its_whitespace(tmp_path: Path) -> None:
    (tmp_path / TOKEN_FILE).write_text("  my-own-token \n")
    assert ensure_admin_token(tmp_path) == "my-own-token"
