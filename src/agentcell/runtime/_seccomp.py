"""Finding the engine's default seccomp profile on disk and deriving the cell's from it."""

from __future__ import annotations

import json
from pathlib import Path

from agentcell.errors import RuntimeDriverError
from agentcell.policy import DENIED_SYSCALLS, stricter_seccomp

__all__ = ["ENGINE_PROFILE_PATHS", "cell_seccomp_profile"]

ENGINE_PROFILE_PATHS = (
    # Put there by scripts/setup.sh from Debian's source package of the engine.
    Path("/usr/local/share/agentcell/engine-seccomp.json"),
    # Where Debian's golang-github-docker-docker-dev installs it.
    Path("/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"),
)


def cell_seccomp_profile(base: Path | None = None) -> tuple[str | None, str]:
    """(profile JSON or None for the engine's default, a sentence saying which).

    An explicit ``base`` that cannot be used is an error; without one, the known places
    are tried and the engine's default is the fallback.
    """
    candidates = [base] if base is not None else list(ENGINE_PROFILE_PATHS)
    for path in candidates:
        try:
            profile = stricter_seccomp(json.loads(path.read_text()))
        except FileNotFoundError:
            if base is not None:
                raise RuntimeDriverError(f"seccomp base profile {path} does not exist") from None
            continue
        except (OSError, ValueError) as e:
            if base is not None:
                raise RuntimeDriverError(f"seccomp base profile {path} is unusable: {e}") from None
            continue
        text = json.dumps(profile, separators=(",", ":"), sort_keys=True)
        return text, f"engine default from {path}, without {', '.join(DENIED_SYSCALLS)}"
    return None, (
        "engine default (it allows ptrace): no engine profile found at "
        + ", ".join(str(p) for p in candidates)
    )
