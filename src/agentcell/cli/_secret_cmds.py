"""``agentcell secret set|ls|rm`` and ``agentcell restart``: a tenant's secrets, and the restart
that delivers a rotated value at once. No command takes a value as an argument."""

from __future__ import annotations

import base64
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agentcell.cli._client import Client
from agentcell.errors import AgentcellError

__all__ = ["read_value", "register"]

_MAX = 64 * 1024

UrlOpt = Annotated[
    str | None, typer.Option("--url", envvar="AGENTCELL_URL", help="control plane URL")
]
StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="AGENTCELL_STATE_DIR",
        help="state directory (holds the admin token)",
    ),
]


def read_value(data: bytes, *, keep_newline: bool) -> bytes:
    """The value as stored: one trailing newline (``\\n`` or ``\\r\\n``) dropped unless
    ``keep_newline``; everything else kept byte for byte."""
    if keep_newline:
        return data
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def register(app: typer.Typer, fail: Any, out: Any, cell: Any) -> None:  # noqa: C901, PLR0915 (one nested command per subcommand)
    """Add ``secret`` (a group) and ``restart`` to the ``agentcell`` command."""
    secret_app = typer.Typer(
        no_args_is_help=True,
        help="A tenant's secrets: write-only; agents get them as files under /run/secrets.",
    )
    app.add_typer(secret_app, name="secret")

    @secret_app.command("set")
    def secret_set(
        tenant: Annotated[str, typer.Argument(help="the tenant")],
        name: Annotated[str, typer.Argument(help="the secret's name, e.g. openai-api-key")],
        from_file: Annotated[
            Path | None,
            typer.Option("--from-file", help="read the value from this file (else stdin)"),
        ] = None,
        keep_newline: Annotated[
            bool,
            typer.Option(help="keep one trailing newline (dropped by default, as echo adds it)"),
        ] = False,
        url: UrlOpt = None,
        state_dir: StateOpt = None,
    ) -> None:
        """Set or rotate a secret. The value comes from --from-file or stdin (a prompt without
        echo on a terminal), never from an argument. One trailing newline is dropped unless
        --keep-newline. Running cells get a rotated value at their next start, or at once
        with 'agentcell restart TENANT/NAME'."""
        if from_file is not None:
            try:
                data = from_file.read_bytes()
            except OSError as e:
                fail(f"cannot read {from_file}: {e.strerror or e}", 2)
        elif sys.stdin.isatty():
            data = getpass.getpass(f"value of {tenant}/{name} (not shown): ").encode()
        else:
            data = sys.stdin.buffer.read(_MAX + 3)
        value = read_value(data, keep_newline=keep_newline)
        if not value:
            fail("the value is empty: give it on stdin or with --from-file PATH", 2)
        if len(value) > _MAX:
            fail(f"the value is more than {_MAX} bytes (64 KiB), the most a secret holds", 2)
        body = {"value": base64.b64encode(value).decode()}
        try:
            r = Client(url, state_dir=state_dir).request(
                "PUT", f"/v1/tenants/{tenant}/secrets/{name}", json=body
            )
        except AgentcellError as e:
            fail(str(e))
        what = "set" if r["version"] == 1 else f"rotated to version {r['version']}"
        users = r.get("cells") or []
        after = ""
        if users and r["version"] > 1:
            after = f"; cells {', '.join(users)} get it at their next start or with " + (
                f"'agentcell restart {tenant}/{users[0]}'"
            )
        out.print(f"secret {tenant}/{name} {what} ({len(value)} bytes){after}", highlight=False)

    @secret_app.command("ls")
    def secret_ls(
        tenant: Annotated[str, typer.Argument(help="the tenant")],
        output: Annotated[str, typer.Option("-o", "--output", help="table | json")] = "table",
        url: UrlOpt = None,
        state_dir: StateOpt = None,
    ) -> None:
        """List a tenant's secrets: names, versions, times, the cells using each; no values."""
        if output not in ("table", "json"):
            fail(f"--output {output!r}: choose table or json", 2)
        try:
            rows = Client(url, state_dir=state_dir).request("GET", f"/v1/tenants/{tenant}/secrets")
        except AgentcellError as e:
            fail(str(e))
        if output == "json":
            out.print_json(json.dumps(rows))
            return
        table = Table("NAME", "VERSION", "UPDATED", "USED BY", box=None, pad_edge=False)
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["updated"]))
            table.add_row(r["name"], str(r["version"]), when, ", ".join(r["cells"]) or "-")
        out.print(table)

    @secret_app.command("rm")
    def secret_rm(
        tenant: Annotated[str, typer.Argument(help="the tenant")],
        name: Annotated[str, typer.Argument(help="the secret's name")],
        url: UrlOpt = None,
        state_dir: StateOpt = None,
    ) -> None:
        """Remove a secret (refused while a cell lists it in spec.secrets)."""
        try:
            Client(url, state_dir=state_dir).request(
                "DELETE", f"/v1/tenants/{tenant}/secrets/{name}"
            )
        except AgentcellError as e:
            fail(str(e))
        out.print(f"secret {tenant}/{name} removed", highlight=False)

    @app.command()
    def restart(
        target: Annotated[str, typer.Argument(help="TENANT/NAME")],
        timeout: Annotated[float, typer.Option(help="seconds to wait")] = 60.0,
        url: UrlOpt = None,
        state_dir: StateOpt = None,
    ) -> None:
        """Restart a cell's agent now, its secret files rewritten first; waits until it runs.

        A rotated secret arrives this way at once. Not counted as a crash."""
        tenant, name = cell(target)
        client = Client(url, state_dir=state_dir)
        try:
            request = client.request("POST", f"/v1/cells/{tenant}/{name}/restart")["request"]
            deadline = time.monotonic() + timeout
            version = 0
            while True:
                c = client.request("GET", f"/v1/cells/{tenant}/{name}")
                done = c["restart"]["honoured"] >= request
                if done and c["state"] in ("running", "healthy"):
                    out.print(f"{tenant}/{name} restarted: {c['reason']}", highlight=False)
                    return
                if done:
                    fail(f"{tenant}/{name} did not come back: {c['state']}: {c['reason']}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    fail(f"{tenant}/{name} not restarted after {timeout:g}s: {c['reason']}")
                st = client.request(
                    "GET",
                    f"/v1/cells/{tenant}/{name}/wait",
                    params={"after": version or c["version"], "timeout": min(remaining, 30)},
                )
                version = st["version"]
        except AgentcellError as e:
            fail(str(e))
