"""``agentcell audit``: query, follow and export the audit trail (a client of ``GET /v1/audit``)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from agentcell.cli._client import Client
from agentcell.errors import AgentcellError

__all__ = ["audit", "audit_line"]

OUTPUTS = ("table", "json", "csv")

_DECISION_STYLE = {"allow": "green", "deny": "red", "fail": "yellow"}


def audit(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's records")] = None,
    cell: Annotated[
        str | None, typer.Option(help="only this cell's records: NAME, or TENANT/NAME")
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", "-k", help="only these kinds (repeat: -k egress -k docker)"),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="from this time: 30s, 10m, 2h, 7d ago, or RFC 3339")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="up to this time: 30s, 10m, 2h, 7d ago, or RFC 3339")
    ] = None,
    denied: Annotated[bool, typer.Option(help="only denied decisions")] = False,
    actor: Annotated[str | None, typer.Option(help="only this actor's records")] = None,
    limit: Annotated[int, typer.Option(help="how many of the newest matches")] = 100,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="then keep streaming new records")
    ] = False,
    output: Annotated[
        str, typer.Option("-o", "--output", help="table | json | csv (csv: with a header)")
    ] = "table",
    url: Annotated[
        str | None, typer.Option("--url", envvar="AGENTCELL_URL", help="control plane URL")
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            envvar="AGENTCELL_STATE_DIR",
            help="state directory (holds the admin token)",
        ),
    ] = None,
) -> None:
    """Query the audit trail (every decision, oldest first); -f follows, -o csv exports.

    Filters: --tenant, --cell, -k KIND (repeatable), --since/--until (30s, 10m, 2h, 7d or
    RFC 3339), --denied, --actor."""
    err = Console(stderr=True, width=None if sys.stderr.isatty() else 240)
    if output not in OUTPUTS:
        _fail(err, f"-o {output!r} is not an output: write one of {', '.join(OUTPUTS)}", 2)
    if limit < 1:
        _fail(err, f"--limit {limit} is not a count: write 1 or more", 2)
    if cell is not None and "/" in cell:
        parts = cell.split("/")
        if len(parts) != 2 or not all(parts) or (tenant is not None and tenant != parts[0]):
            _fail(err, f"--cell {cell!r}: write NAME, or TENANT/NAME with the same tenant", 2)
        tenant, cell = parts
    params: dict[str, Any] = {
        "tenant": tenant,
        "cell": cell,
        "kind": kind or [],
        "since": since,
        "until": until,
        "denied": denied,
        "actor": actor,
        "limit": limit,
        "follow": follow,
        "format": {"table": "ndjson", "json": "ndjson", "csv": "csv"}[output],
    }
    params = {k: v for k, v in params.items() if v is not None}
    try:
        client = Client(url=url, state_dir=state_dir)
        if output == "csv":  # the server's bytes as they are: fields may hold line breaks
            for chunk in client.stream("GET", "/v1/audit", params=params):
                if chunk.strip():  # the stream's keepalives are empty lines
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
            return
        records = (
            json.loads(line) for line in client.lines("GET", "/v1/audit", params=params) if line
        )
        if output == "json" and not follow:
            sys.stdout.write(json.dumps(list(records), indent=2) + "\n")
            return
        out = Console(width=None if sys.stdout.isatty() else 400)
        for r in records:
            if output == "json":
                sys.stdout.write(json.dumps(r) + "\n")
                sys.stdout.flush()
            else:
                out.print(audit_line(r), highlight=False, soft_wrap=True)
    except AgentcellError as e:
        _fail(err, str(e))
    except KeyboardInterrupt:
        pass


def audit_line(r: dict[str, Any]) -> str:
    """One record as a line of rich markup: local time, tenant/cell, actor, kind, decision,
    reason and the details that say what it was about."""
    when = datetime.fromtimestamp(float(r["time"])).astimezone().isoformat(timespec="seconds")
    owner = f"{r['tenant'] or '-'}/{r['cell'] or '-'}"
    decision = str(r["decision"])
    style = _DECISION_STYLE.get(decision, "")
    mark = f"[{style}]{decision:<5}[/{style}]" if style else f"{escape(decision):<5}"
    about = _about(r.get("details") or {})
    return (
        f"{when}  {escape(owner):<24} {escape(str(r['actor'])):<16}  "
        f"{escape(str(r['kind'])):<10} {mark}  {escape(str(r['reason']))}"
        + (f"  [dim]{escape(about)}[/dim]" if about else "")
    )


def _about(d: dict[str, Any]) -> str:
    """The detail that names the request's target, if the record has one."""
    if d.get("host"):
        return f"{d.get('method', '')} {d['host']}:{d.get('port', '')}".strip()
    if d.get("path"):
        return f"{d.get('method', '')} {d['path']}".strip()
    return ""


def _fail(err: Console, message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
