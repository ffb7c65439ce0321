"""Spec documents back to YAML: what ``export`` writes, and what ``load_text`` reads again."""

from __future__ import annotations

from collections.abc import Iterable

import yaml

from agentcell.spec._models import Agent, Tenant

__all__ = ["dump_documents"]


def dump_documents(docs: Iterable[Tenant | Agent], *, header: str = "") -> str:
    """YAML text of ``docs``, every field written out (so another release's defaults do not
    change the meaning), none left empty. ``load_text`` of the result gives ``docs`` back."""
    parts = [
        yaml.safe_dump(
            d.model_dump(mode="json", by_alias=True, exclude_none=True),
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
        )
        for d in docs
    ]
    lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return lines + "---\n".join(parts)
