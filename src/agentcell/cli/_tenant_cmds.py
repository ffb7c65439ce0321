"""Tenants and who may act on them: ``tenant``, ``token``, ``login``, ``whoami``, ``export``."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agentcell.cli._client import Client
from agentcell.cli._config import config_path, load_config, save_config
from agentcell.cli.main import StateOpt, UrlOpt, _age, _client, _fail, app, err, out
from agentcell.errors import AgentcellError
from agentcell.policy import MAX_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME
from agentcell.spec import parse_duration

__all__ = ["tenant_app", "token_app"]

tenant_app = typer.Typer(no_args_is_help=True, help="Tenants: create, list, remove.")
app.add_typer(tenant_app, name="tenant")
token_app = typer.Typer(
    no_args_is_help=True, help="A tenant's API tokens: list, create, rotate, revoke."
)
app.add_typer(token_app, name="token")

Output = Annotated[str, typer.Option("-o", "--output", help="text | json")]
TenantArg = Annotated[str, typer.Argument(help="tenant name")]
Expires = Annotated[
    str | None,
    typer.Option(
        "--expires",
        help="how long the token works: 30m, 12h, 90d, ... (a minute to ten years); "
        "default: until revoked",
    ),
]


def _lifetime(expires: str | None) -> float | None:
    """Seconds from ``--expires``, or exit 2 saying what would be valid."""
    if expires is None:
        return None
    try:
        seconds = parse_duration(expires)
    except ValueError as e:
        _fail(f"--expires: {e}", 2)
    if not MIN_TOKEN_LIFETIME <= seconds <= MAX_TOKEN_LIFETIME:
        _fail(f"--expires: {expires!r} is not between a minute (1m) and ten years (3650d)", 2)
    return seconds


def _call(url: str | None, state_dir: Path | None, method: str, path: str, **kw: Any) -> Any:
    try:
        return _client(url, state_dir).request(method, path, **kw)
    except AgentcellError as e:
        _fail(str(e))


def _show_token(issued: dict[str, Any], output: str, what: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(issued, indent=2) + "\n")
        return
    until = f", expires {_iso(issued['expires'])}" if issued.get("expires") else ""
    out.print(f"{what} (id {issued['token_id']}{until}).", highlight=False)
    out.print("The token is shown this once; only a hash of it is stored:", highlight=False)
    sys.stdout.write(issued["token"] + "\n")
    sys.stdout.flush()
    err.print(
        "Use it with: agentcell login (reads it from stdin), AGENTCELL_TOKEN=..., or --token.",
        highlight=False,
    )


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Argument(help="tenant name: a-z, 0-9 and '-', up to 40")],
    expires: Expires = None,
    output: Output = "text",
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Create a tenant and issue its first token (admin only).

    Set its quota and egress defaults with a Tenant document: agentcell deploy -f FILE."""
    body = {"name": name, "token_expires_in": _lifetime(expires)}
    issued = _call(url, state_dir, "POST", "/v1/tenants", json=body)
    _show_token(issued, output, f"tenant {name} created, with a token")


@tenant_app.command("ls")
def tenant_ls(output: Output = "text", url: UrlOpt = None, state_dir: StateOpt = None) -> None:
    """List the tenants this token sees (a tenant token: its own)."""
    tenants = _call(url, state_dir, "GET", "/v1/tenants")
    cells = _call(url, state_dir, "GET", "/v1/cells")
    count: dict[str, int] = {}
    for c in cells:
        count[c["tenant"]] = count.get(c["tenant"], 0) + 1
    if output == "json":
        sys.stdout.write(json.dumps(tenants, indent=2) + "\n")
        return
    if not tenants:
        out.print("no tenants; create one with: agentcell tenant create NAME")
        return
    table = Table(box=None, header_style="bold")
    for col in ("TENANT", "CELLS", "QUOTA"):
        table.add_column(col, no_wrap=True)
    for t in tenants:
        q = t["spec"]["quota"]
        quota = ", ".join(f"{k} {v}" for k, v in q.items() if v is not None) or "none"
        table.add_row(t["metadata"]["name"], str(count.get(t["metadata"]["name"], 0)), quota)
    out.print(table)


@tenant_app.command("rm")
def tenant_rm(
    name: TenantArg,
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Remove a tenant that has no cells left; its tokens stop working (admin only)."""
    _call(url, state_dir, "DELETE", f"/v1/tenants/{name}")
    out.print(f"tenant {name} removed; its tokens no longer work", highlight=False)


@token_app.command("ls")
def token_ls(
    tenant: TenantArg,
    output: Output = "text",
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """List a tenant's tokens by id, creation time and expiry (never the token itself)."""
    tokens = _call(url, state_dir, "GET", f"/v1/tenants/{tenant}/tokens")
    if output == "json":
        sys.stdout.write(json.dumps(tokens, indent=2) + "\n")
        return
    if not tokens:
        out.print(f"tenant {tenant} has no tokens; issue one with: agentcell token create {tenant}")
        return
    table = Table(box=None, header_style="bold")
    for col in ("ID", "CREATED", "AGE", "EXPIRES", "STATE"):
        table.add_column(col, no_wrap=True)
    for t in tokens:
        state = t["state"]
        if state == "revoked":
            state = f"revoked {_iso(t['revoked'])}"
        table.add_row(
            t["id"],
            _iso(t["created"]),
            _age(t["created"]),
            _iso(t["expires"]) if t["expires"] else "never",
            state,
        )
    out.print(table)


@token_app.command("create")
def token_create(
    tenant: TenantArg,
    expires: Expires = None,
    output: Output = "text",
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Issue another token for a tenant."""
    body = {"expires_in": _lifetime(expires)}
    issued = _call(url, state_dir, "POST", f"/v1/tenants/{tenant}/tokens", json=body)
    _show_token(issued, output, f"new token for tenant {tenant}")


@token_app.command("rotate")
def token_rotate(
    tenant: TenantArg,
    token_id: Annotated[str, typer.Argument(help="id of the token to replace (token ls)")],
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="the new token's lifetime; default: the old one's"),
    ] = None,
    output: Output = "text",
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Replace a token with a new one; the old one stops working at once."""
    body = {"expires_in": _lifetime(expires)}
    path = f"/v1/tenants/{tenant}/tokens/{token_id}/rotate"
    issued = _call(url, state_dir, "POST", path, json=body)
    _show_token(issued, output, f"token {token_id} of tenant {tenant} replaced by a new token")


@token_app.command("revoke")
def token_revoke(
    tenant: TenantArg,
    token_id: Annotated[str, typer.Argument(help="id of the token (token ls)")],
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Revoke a token: it stops working at once."""
    result = _call(url, state_dir, "DELETE", f"/v1/tenants/{tenant}/tokens/{token_id}")
    state = "revoked" if result["revoked"] else "was already revoked"
    out.print(f"token {token_id} of tenant {tenant} {state}", highlight=False)


@app.command()
def login(
    url: UrlOpt = None,
    token_file: Annotated[
        Path | None, typer.Option(help="read the token from this file instead of stdin")
    ] = None,
) -> None:
    """Save a token (read from stdin, or a prompt that does not echo) in the config file.

    The token is checked against the control plane first; never pass it as an argument."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            _fail(f"cannot read {token_file}: {e}")
    elif sys.stdin.isatty():
        token = getpass.getpass("token: ").strip()
    else:
        token = sys.stdin.read().strip()
    if not token:
        _fail("no token given: pipe it in (… | agentcell login) or use --token-file FILE", 2)
    try:
        client = Client(url=url, token=token)
        who = client.request("GET", "/v1/whoami")
    except AgentcellError as e:
        _fail(f"not logged in: {e}")
    settings = {**_config_or_empty(), "url": client.url, "token": token}
    path = save_config(settings)
    out.print(f"logged in to {client.url} as {_who(who)}; saved in {path}", highlight=False)


@app.command()
def logout() -> None:
    """Remove the token from the config file (the URL stays)."""
    settings = _config_or_empty()
    had = settings.pop("token", None) is not None
    if had:
        save_config(settings)
    out.print("token removed from " + str(config_path()) if had else "no token was saved")


@app.command()
def whoami(url: UrlOpt = None, state_dir: StateOpt = None) -> None:
    """Who the control plane takes you for: the admin, or which tenant and token."""
    out.print(_who(_call(url, state_dir, "GET", "/v1/whoami")), highlight=False)


@app.command()
def export(
    tenant: TenantArg,
    output_file: Annotated[
        Path | None, typer.Option("-o", "--output", help="write here instead of stdout")
    ] = None,
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Write the tenant's spec and its agents' specs as YAML (never secret values).

    Redeploy it elsewhere with: agentcell deploy -f FILE."""
    try:
        client = _client(url, state_dir)
        text = b"".join(client.stream("GET", f"/v1/tenants/{tenant}/export")).decode()
    except AgentcellError as e:
        _fail(str(e))
    if output_file is None:
        sys.stdout.write(text)
        return
    output_file.write_text(text, encoding="utf-8")
    err.print(f"tenant {tenant} exported to {output_file}", highlight=False)


def _config_or_empty() -> dict[str, str]:
    try:
        return load_config()
    except AgentcellError as e:
        _fail(str(e))


def _who(who: dict[str, Any]) -> str:
    if who["admin"]:
        return "the admin"
    return f"tenant {who['tenant']} (token {who['token_id']})"


def _iso(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")
