"""`agentcell serve` refuses bad options before it makes anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_bad_webhook_is_refused_and_no_state_is_made(tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentcell.cli.main",
            "serve",
            "--webhook",
            "ftp://x",
            "--state-dir",
            str(state),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "webhook 'ftp://x' is not an http(s) URL" in out.stderr
    assert not state.exists()
