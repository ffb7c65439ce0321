"""The cell's seccomp profile: the engine's own default profile, made stricter.

The engine's default allows ``ptrace`` (kernel 4.8 and later), which lets an agent
trace and rewrite every process of its cell; it is also a favourite door for kernel
exploits. The cell's profile is the engine's default with that door shut.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["DENIED_SYSCALLS", "profile_allows", "stricter_seccomp"]

DENIED_SYSCALLS = ("ptrace", "process_vm_readv", "process_vm_writev")
_ALLOW = "SCMP_ACT_ALLOW"
_DENYING_DEFAULTS = {
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
}


def stricter_seccomp(base: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` without any rule that allows one of DENIED_SYSCALLS.

    ``base`` must be an allowlist (its default action denies); anything else is refused
    with ValueError, since removing names from a denylist would allow more, not less.
    """
    if base.get("defaultAction") not in _DENYING_DEFAULTS:
        raise ValueError(
            f"not an allowlist profile: defaultAction is {base.get('defaultAction')!r}, "
            f"expected one of {', '.join(sorted(_DENYING_DEFAULTS))}"
        )
    rules = base.get("syscalls")
    if not isinstance(rules, list):
        raise ValueError("not a seccomp profile: 'syscalls' must be a list")
    out = copy.deepcopy(dict(base))
    kept = []
    for rule in out["syscalls"]:
        if rule.get("action") == _ALLOW:
            names = [n for n in rule.get("names") or [] if n not in DENIED_SYSCALLS]
            if not names:
                continue
            rule["names"] = names
        kept.append(rule)
    out["syscalls"] = kept
    return out


def profile_allows(profile_json: str, syscall: str) -> bool:
    """Whether any unconditional rule of the profile allows ``syscall`` (for checks)."""
    profile = json.loads(profile_json)
    if profile.get("defaultAction") == _ALLOW:
        return True
    return any(
        rule.get("action") == _ALLOW
        and syscall in (rule.get("names") or [])
        and not (rule.get("includes") or {}).get("caps")
        for rule in profile.get("syscalls") or []
    )
