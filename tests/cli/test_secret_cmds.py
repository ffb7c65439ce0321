"""`agentcell secret` and `agentcell restart`: input handling and errors, before any call;
and `serve` refusing bad secrets settings before it makes anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentcell.cli._secret_cmds import read_value
from agentcell.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("data", "keep", "value"),
    [
        (b"abc\n", False, b"abc"),
        (b"abc\r\n", False, b"abc"),
        (b"abc\n\n", False, b"abc\n"),
        (b"abc", False, b"abc"),
        (b"abc\n", True, b"abc\n"),
        (b"\x00\xff\n", False, b"\x00\xff"),
        (b"\n", False, b""),
    ],
    ids=[
        "one newline dropped",
        "a CRLF dropped",
        "only one newline dropped",
        "no newline: unchanged",
        "--keep-newline keeps it",
        "binary kept byte for byte",
        "a lone newline is empty",
    ],
)
def test_how_a_trailing_newline_is_treated(data: bytes, keep: bool, value: bytes) -> None:
    assert read_value(data, keep_newline=keep) == value


def cli(*args: str, input: bytes | None = None) -> tuple[int, str]:
    env = {"AGENTCELL_URL": "http://127.0.0.1:9", "AGENTCELL_TOKEN": "t"}
    r = runner.invoke(app, list(args), input=input, env=env)
    return r.exit_code, r.output + (r.stderr if r.stderr_bytes is not None else "")


def test_an_empty_value_is_refused_before_any_call() -> None:
    code, text = cli("secret", "set", "acme", "k", input=b"\n")
    assert code == 2 and "the value is empty" in text


def test_a_value_over_64_kib_is_refused_before_any_call() -> None:
    code, text = cli("secret", "set", "acme", "k", input=b"x" * (64 * 1024 + 1))
    assert code == 2 and "more than 65536 bytes" in text


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    code, text = cli("secret", "set", "acme", "k", "--from-file", str(tmp_path / "nope"))
    assert code == 2 and "cannot read" in text and "nope" in text


def test_a_value_given_as_an_argument_is_a_usage_error() -> None:
    code, text = cli("secret", "set", "acme", "k", "hunter2")
    # Refused before any call: nothing is sent or stored (the shell already saw it).
    assert code == 2 and "unexpected extra argument" in text


def test_restart_wants_tenant_slash_name() -> None:
    code, text = cli("restart", "acme")
    assert code == 2 and "TENANT/NAME" in text


def test_ls_output_format_is_checked() -> None:
    code, text = cli("secret", "ls", "acme", "-o", "yaml")
    assert code == 2 and "choose table or json" in text


def serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agentcell.cli.main",
            "serve",
            "--state-dir",
            str(tmp_path / "s"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_serve_refuses_a_bad_secrets_key_and_makes_no_state(tmp_path: Path) -> None:
    out = serve(tmp_path, AGENTCELL_SECRETS_KEY="dG9vIHNob3J0")
    assert out.returncode == 1
    assert "AGENTCELL_SECRETS_KEY must be the base64 of 32 random bytes" in out.stderr
    assert not (tmp_path / "s").exists()


def test_serve_refuses_a_secrets_dir_not_on_tmpfs_and_makes_no_state(tmp_path: Path) -> None:
    disk = Path(__file__).resolve().parent  # the source tree: on a disk
    out = serve(tmp_path, "--secrets-dir", str(disk / "secrets"))
    assert out.returncode == 1
    assert "not tmpfs" in out.stderr and "--secrets-dir" in out.stderr
    assert not (tmp_path / "s").exists()
