"""The value every security decision returns: allow or deny, with a fixed-phrase reason."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Decision"]


@dataclass(frozen=True)
class Decision:
    """One decision. ``reason`` is a fixed phrase: the log vocabulary and the test vocabulary."""

    allow: bool
    reason: str
    rule: str = ""

    def __bool__(self) -> bool:
        return self.allow
