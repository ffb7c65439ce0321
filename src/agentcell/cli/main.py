"""The ``agentcell`` command: a thin client of the control plane's API (and ``serve`` itself)."""

from __future__ import annotations

import base64
import ipaddress
import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from agentcell import __version__
from agentcell.cli._audit_cmd import audit as audit_cmd
from agentcell.cli._client import FLAGS, Client, default_state_dir
from agentcell.errors import AgentcellError, SpecError
from agentcell.spec import Agent, Tenant, format_bytes, json_schema, load_file

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run AI agents, and the code they execute, in hardened Docker cells.",
)
images_app = typer.Typer(no_args_is_help=True, help="Build the images agentcell needs.")
app.add_typer(images_app, name="images")
egress_app = typer.Typer(no_args_is_help=True, help="What a cell's egress gate decided.")
app.add_typer(egress_app, name="egress")
policy_app = typer.Typer(no_args_is_help=True, help="Egress policy, checked offline.")
app.add_typer(policy_app, name="policy")
app.command(name="audit")(audit_cmd)
# Piped output is not cut at 80 columns: tables stay one row per cell for grep and scripts.
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 240)

UrlOpt = Annotated[
    str | None, typer.Option("--url", envvar="AGENTCELL_URL", help="control plane URL")
]
StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir", envvar="AGENTCELL_STATE_DIR", help="state directory (holds the admin token)"
    ),
]


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _cell(ref: str) -> tuple[str, str]:
    parts = ref.split("/")
    if len(parts) != 2 or not all(parts):
        _fail(f"{ref!r} is not a cell: write TENANT/NAME, e.g. acme/researcher", 2)
    return parts[0], parts[1]


@app.callback()
def _root(
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="AGENTCELL_TOKEN",
            help="API token (admin or tenant); else the config file's "
            "(agentcell login), else the admin token in the state directory",
            show_envvar=True,
        ),
    ] = None,
) -> None:
    """Run AI agents, and the code they execute, in hardened Docker cells."""
    FLAGS["token"] = token


def _client(url: str | None, state_dir: Path | None) -> Client:
    return Client(url=url, state_dir=state_dir)


def _age(since: float) -> str:
    if not since:
        return "-"
    s = int(time.time() - since)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


@app.command()
def version() -> None:
    """Print the version."""
    out.print(f"agentcell {__version__}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 7878,
    state_dir: StateOpt = None,
    subnet_pool: Annotated[
        str, typer.Option(help="IPv4 pool cell networks are cut from")
    ] = "10.213.0.0/16",
    subnet_size: Annotated[int, typer.Option(help="prefix length of each cell's network")] = 27,
    seccomp_base: Annotated[
        Path | None,
        typer.Option(help="the engine's default seccomp profile (JSON) to derive cells' from"),
    ] = None,
    iptables: Annotated[
        str | None,
        typer.Option(envvar="AGENTCELL_IPTABLES", help="the iptables command to use"),
    ] = None,
    webhook: Annotated[
        str | None,
        typer.Option(
            envvar="AGENTCELL_WEBHOOK",
            help="http(s) URL that gets a JSON POST whenever a cell fails",
        ),
    ] = None,
    canary_interval: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="AGENTCELL_CANARY_INTERVAL",
            help="seconds between isolation canary runs per cell (0: off)",
        ),
    ] = 60.0,
    resync_interval: Annotated[
        float,
        typer.Option(
            min=1,
            envvar="AGENTCELL_RESYNC_INTERVAL",
            help="seconds between full reconcile passes when no engine event arrives",
        ),
    ] = 30.0,
    secrets_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="AGENTCELL_SECRETS_DIR",
            help="host directory on tmpfs for cells' secret files "
            "(default: /dev/shm/agentcell-<hash of the state directory>)",
        ),
    ] = None,
) -> None:
    """Run the control plane: REST API, reconciler, health probes and the isolation canary.

    The secrets key is AGENTCELL_SECRETS_KEY (base64 of 32 bytes) if set, else
    secrets.key in the state directory (made at first start, mode 0600)."""
    import logging

    import uvicorn

    from agentcell.api import create_app
    from agentcell.control import ControlPlane, PlaneConfig, check_webhook
    from agentcell.plan import parse_pool

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    directory = state_dir or default_state_dir()
    try:
        parse_pool(subnet_pool, subnet_size)
        if webhook:
            check_webhook(webhook)  # before the state directory is made
        plane = ControlPlane(
            PlaneConfig(
                directory,
                subnet_pool,
                subnet_size,
                seccomp_base,
                iptables,
                webhook=webhook,
                canary_seconds=canary_interval,
                resync_seconds=resync_interval,
                secrets_dir=secrets_dir,
            )
        )
    except AgentcellError as e:
        _fail(str(e))
    plane.start()
    err.print(f"agentcell serve: seccomp {plane.seccomp_note}", highlight=False, soft_wrap=True)
    err.print(
        f"agentcell serve: http://{host}:{port}  state {directory}  "
        f"token {directory / 'admin.token'}",
        highlight=False,
    )
    # uvicorn re-raises SIGTERM once it has shut down; without a handler of our own the
    # default one ends the process there and plane.stop() (and its cleanup) never runs.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run(create_app(plane), host=host, port=port, log_level="warning")
    finally:
        plane.stop()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@app.command()
def validate(file: Annotated[Path, typer.Option("-f", "--file", help="spec file")]) -> None:
    """Check a spec file without deploying it."""
    try:
        docs = load_file(file)
    except SpecError as e:
        _fail(f"{file} is not valid:\n{e}")
    out.print(f"{file}: {len(docs)} valid document(s)")


@app.command()
def schema() -> None:
    """Print the JSON Schema of spec documents, for editors."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@app.command()
def deploy(
    file: Annotated[Path, typer.Option("-f", "--file", help="spec file (YAML, one or more docs)")],
    wait: Annotated[bool, typer.Option(help="wait until every cell runs (and is healthy)")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 120.0,
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Apply a spec file and wait until its cells run; non-zero exit with the reason if not."""
    try:
        load_file(file)  # the server validates again; this gives the error before any call
        text = file.read_text(encoding="utf-8")
        client = _client(url, state_dir)
        result = client.request("POST", "/v1/apply", json={"yaml": text, "source": str(file)})
    except SpecError as e:
        _fail(f"{file} is not valid; nothing was deployed:\n{e}")
    except AgentcellError as e:
        _fail(f"nothing was deployed: {e}")
    for t in result["tenants"]:
        out.print(f"tenant {t['name']}: {'applied' if t['changed'] else 'unchanged'}")
    if not wait:
        for c in result["cells"]:
            out.print(f"cell {c['tenant']}/{c['name']}: generation {c['generation']} stored")
        return
    failed = False
    for c in result["cells"]:
        failed |= not _wait_ready(client, c, timeout)
    if failed:
        raise typer.Exit(1)


def _wait_ready(client: Client, c: dict[str, Any], timeout: float) -> bool:
    ref = f"{c['tenant']}/{c['name']}"
    path = f"/v1/cells/{ref}"
    deadline = time.monotonic() + timeout
    version = 0
    started = time.monotonic()
    st: dict[str, Any] = {"state": "unknown", "health": "unknown", "reason": "no answer yet"}
    with out.status(f"{ref}: waiting", spinner="dots") as status:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                err.print(
                    f"[red]✗[/red] {ref}: not ready after {timeout:g}s "
                    f"(state {st['state']}, health {st['health']}: {st['reason']})"
                )
                return False
            try:
                st = client.request(
                    "GET", f"{path}/wait", params={"after": version, "timeout": min(remaining, 30)}
                )
            except AgentcellError as e:
                err.print(f"[red]✗[/red] {ref}: {e}")
                return False
            version = st["version"]
            status.update(f"{ref}: {st['state']} — {st['reason']}")
            # The server's verdict (plan.readiness), against the generation it stores.
            if not st.get("settled"):
                continue
            reason = st.get("ready_reason", st["reason"])
            if st["state"] == "paused":
                out.print(
                    f"[magenta]‖[/magenta] {ref}: stored, and paused ({st['reason']}); "
                    "it starts on agentcell resume",
                    highlight=False,
                )
                return True
            if not st.get("ready"):
                err.print(f"[red]✗[/red] {ref}: {reason}", highlight=False)
                return False
            took = time.monotonic() - started
            policy = c.get("policy_digest") or ""
            what = "unchanged, running" if not c["changed"] else f"ready in {took:.2f}s"
            health = "" if st["health"] == "none" else ", healthy"
            egress = f", egress policy {policy}" if policy else ""
            out.print(f"[green]✓[/green] {ref}: {what}{health if c['changed'] else ''}{egress}")
            return True


@app.command()
def ps(
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table | json")] = "table",
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """List cells: tenant, cell, state (and since when), image, age, limits, reason."""
    try:
        cells = _client(url, state_dir).request(
            "GET", "/v1/cells", params={"tenant": tenant} if tenant else None
        )
    except AgentcellError as e:
        _fail(str(e))
    if output == "json":
        sys.stdout.write(json.dumps(cells, indent=2) + "\n")
        return
    table = Table(box=None, header_style="bold")
    for col in ("TENANT", "CELL", "STATE", "SINCE", "IMAGE", "AGE", "LIMITS"):
        table.add_column(col, no_wrap=True)
    table.add_column("REASON", overflow="ellipsis", no_wrap=True, max_width=60)
    for c in cells:
        lim = c["limits"]
        table.add_row(
            c["tenant"],
            c["name"],
            _state_text(c["state"]),
            _age(c["since"]),
            c["image"],
            _age(c["created"]),
            f"{lim['cpus']:g} cpu, {format_bytes(lim['memory'])}, {lim['pids']} pids",
            c["reason"],
        )
    if not cells:
        out.print("no cells; deploy one with: agentcell deploy -f examples/demo.yaml")
        return
    out.print(table)


@app.command()
def status(
    cell: Annotated[str, typer.Argument(help="TENANT/NAME")],
    output: Annotated[str, typer.Option("-o", "--output", help="text | json")] = "text",
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Everything about one cell, including its effective hardening."""
    tenant, name = _cell(cell)
    try:
        c = _client(url, state_dir).request("GET", f"/v1/cells/{tenant}/{name}")
    except AgentcellError as e:
        _fail(str(e))
    if output == "json":
        sys.stdout.write(json.dumps(c, indent=2) + "\n")
        return
    spec = c["spec"]["spec"]
    lim = c["limits"]
    rows = [
        ("cell", f"{c['tenant']}/{c['name']}"),
        ("state", f"{_state_text(c['state'])} (since {_age(c['since'])} ago): {c['reason']}"),
        ("health", c["health"]),
        ("recovery", _recovery_summary(c)),
        ("generation", f"{c['observed_generation']} running, {c['generation']} desired"),
        ("image", c["image"]),
        ("user", spec["user"]),
        (
            "limits",
            f"{lim['cpus']:g} cpu, {format_bytes(lim['memory'])} memory (no swap), "
            f"{lim['pids']} pids",
        ),
        (
            "workspace",
            f"/workspace ({spec['workspace']['access']})"
            if spec["workspace"]["access"] != "none"
            else "none",
        ),
        ("network", f"{c['subnet']} internal, ip {c['ip'] or '-'}"),
        ("container", (c.get("container") or {}).get("name", "-")),
        ("seccomp", c.get("seccomp", "-")),
        ("egress", _egress_summary(c.get("egress"))),
        ("docker", _docker_summary(c.get("docker"))),
    ]
    for k, v in rows:
        out.print(f"[bold]{k:>10}[/bold]  {v}", highlight=False)
    if "hardening" in c:
        out.print("[bold]hardening[/bold] (from the engine's view of the container)")
        for h in c["hardening"]:
            mark = "[green]✓[/green]" if h["ok"] else "[red]✗[/red]"
            out.print(f"  {mark} {h['reason']}", highlight=False)
    if c.get("events"):
        out.print("[bold]recent events[/bold]")
        for ev in c["events"]:
            when = time.strftime("%H:%M:%S", time.localtime(ev["time"]))
            out.print(
                f"  {when} {ev['kind']:<9} {ev['decision']:<6} {ev['reason']}", highlight=False
            )


_STATE_STYLE = {
    "healthy": "green",
    "running": "green",
    "unhealthy": "yellow",
    "recovering": "yellow",
    "pending": "cyan",
    "paused": "magenta",
    "failed": "red",
}


def _state_text(state: str) -> str:
    style = _STATE_STYLE.get(state)
    return f"[{style}]{state}[/{style}]" if style else state


def _recovery_summary(c: dict[str, Any]) -> str:
    if c.get("paused"):
        return "suspended: the cell is paused (agentcell resume to bring it back)"
    recovery = c["recovery"]
    window = float(recovery["window"])
    recent = [a for a in recovery["attempts"] if time.time() - a["time"] < window]
    text = f"{len(recent)} of {recovery['max_restarts']} recoveries used in the last {window:g}s"
    if recent:
        last = recent[-1]
        text += f"; last: {last['step']} {_age(last['time'])} ago"
    if c.get("breach"):
        text += f"; isolation canary: {c['breach']}"
    return text


def _docker_summary(d: dict[str, Any] | None) -> str:
    if not d:
        return "none: no Docker access"
    lim = d["limits"]
    return (
        f"its own containers through {d['proxy']}, at most {lim['containers']} containers, "
        f"{lim['cpus']:g} cpu, {format_bytes(lim['memory'])} in all"
    )


def _egress_summary(e: dict[str, Any] | None) -> str:
    if not e:
        return "none: the cell has no way out"
    loaded = "loaded" if e["loaded_digest"] == e["policy_digest"] else "NOT loaded yet"
    return (
        f"gate {e['gate']}, policy {e['policy_digest']} {loaded}, "
        f"{e['allow']} allow / {e['deny']} deny rules"
    )


@app.command()
def logs(
    cell: Annotated[str, typer.Argument(help="TENANT/NAME")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep streaming")] = False,
    tail: Annotated[int | None, typer.Option(help="only the last N lines")] = None,
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Print the agent's output."""
    tenant, name = _cell(cell)
    params: dict[str, Any] = {"follow": follow}
    if tail is not None:
        params["tail"] = tail
    try:
        for chunk in _client(url, state_dir).stream(
            "GET", f"/v1/cells/{tenant}/{name}/logs", params=params
        ):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
    except AgentcellError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        pass


@app.command(name="exec", context_settings={"allow_interspersed_args": False})
def exec_(
    cell: Annotated[str, typer.Argument(help="TENANT/NAME")],
    command: Annotated[list[str], typer.Argument(help="command and arguments (after --)")],
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Run a command in the agent container, as the agent's user."""
    tenant, name = _cell(cell)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        _fail("no command given: agentcell exec TENANT/NAME -- COMMAND [ARGS...]", 2)
    code = 1
    try:
        for line in _client(url, state_dir).lines(
            "POST", f"/v1/cells/{tenant}/{name}/exec", json={"command": command}
        ):
            if not line:
                continue
            msg = json.loads(line)
            if "exit_code" in msg:
                code = int(msg["exit_code"])
                continue
            stream = sys.stdout if msg["fd"] == 1 else sys.stderr
            stream.buffer.write(base64.b64decode(msg["data"]))
            stream.flush()
    except AgentcellError as e:
        _fail(str(e))
    raise typer.Exit(code)


@app.command()
def verify(
    cell: Annotated[str, typer.Argument(help="TENANT/NAME")],
    output: Annotated[str, typer.Option("-o", "--output", help="text | json")] = "text",
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Check the hardening from inside the live cell; non-zero exit if any check fails.

    Capabilities, seccomp, read-only filesystem, non-root, pids and memory limits, no
    Docker socket or host mounts, no mount/unshare/setns/mknod/raw sockets/ptrace, and
    no route to the host, other cells or anything outside.
    """
    tenant, name = _cell(cell)
    try:
        with out.status(f"{cell}: running the hardening battery inside the cell"):
            result = _client(url, state_dir).request("POST", f"/v1/cells/{tenant}/{name}/verify")
    except AgentcellError as e:
        _fail(str(e))
    if output == "json":
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        for check in result["checks"]:
            mark = "[green]PASS[/green]" if check["ok"] else "[red]FAIL[/red]"
            out.print(f"{mark} {check['id']:<28} {check['detail']}", highlight=False)
        passed = sum(1 for ch in result["checks"] if ch["ok"])
        out.print(f"{passed} passed, {len(result['checks']) - passed} failed")
    if not result["ok"]:
        raise typer.Exit(1)


def _kill_switch(target: str, action: str, url: str | None, state_dir: Path | None) -> None:
    if "/" in target:
        tenant, name = _cell(target)
        path = f"/v1/cells/{tenant}/{name}/{action}"
    else:
        path = f"/v1/tenants/{target}/{action}"
    try:
        result = _client(url, state_dir).request("POST", path)
    except AgentcellError as e:
        _fail(str(e))
    cells = result.get("cells", [])
    verb = "paused" if action == "pause" else "resumed"
    scope = target if "/" in target else f"tenant {target} ({len(cells)} cells)"
    if action == "pause":
        out.print(
            f"{scope} {verb}: agent killed, egress cut, recovery suspended, workspace kept",
            highlight=False,
        )
    else:
        again = "it starts again" if "/" in target else "its cells start again"
        out.print(f"{scope} {verb}: {again}", highlight=False)


@app.command()
def pause(
    target: Annotated[str, typer.Argument(help="TENANT/NAME for one cell, or TENANT for all")],
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Kill switch: stop the agent at once, cut its egress, suspend recovery; keep its data."""
    _kill_switch(target, "pause", url, state_dir)


@app.command()
def resume(
    target: Annotated[str, typer.Argument(help="TENANT/NAME for one cell, or TENANT for all")],
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Undo pause: start the cell (or every cell of the tenant) again."""
    _kill_switch(target, "resume", url, state_dir)


@app.command()
def rm(
    cell: Annotated[str, typer.Argument(help="TENANT/NAME")],
    keep_workspace: Annotated[bool, typer.Option(help="keep the workspace volume")] = False,
    wait: Annotated[bool, typer.Option(help="wait until the cell is gone")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 60.0,
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Remove a cell: its containers, network and (unless kept) workspace."""
    tenant, name = _cell(cell)
    client = _client(url, state_dir)
    try:
        client.request(
            "DELETE", f"/v1/cells/{tenant}/{name}", params={"keep_workspace": keep_workspace}
        )
        deadline = time.monotonic() + timeout
        version = 0
        while wait:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _fail(f"{cell} not removed after {timeout:g}s")
            st = client.request(
                "GET",
                f"/v1/cells/{tenant}/{name}/wait",
                params={"after": version, "timeout": min(remaining, 30)},
            )
            if st["gone"]:
                break
            version = st["version"]
    except AgentcellError as e:
        if "no cell" in str(e) and wait:
            pass
        else:
            _fail(str(e))
    out.print(f"{cell}: removed" + (" (workspace kept)" if keep_workspace else ""))


@app.command()
def gc(
    yes: Annotated[
        bool, typer.Option("--yes", help="remove the orphans (without it: only list them)")
    ] = False,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's objects")] = None,
    all_tenants: Annotated[
        bool,
        typer.Option(
            "--all-tenants",
            help="also tenants this control plane does not know (only where it alone "
            "uses the engine)",
        ),
    ] = False,
    output: Annotated[str, typer.Option("-o", "--output", help="table | json")] = "table",
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """List orphans: containers, networks, volumes with agentcell labels the store lacks.

    A dry run; with --yes they are removed, one audit record per removal. Only tenants
    this control plane knows are looked at, unless --tenant or --all-tenants is given.
    """
    params: dict[str, str] = {}
    if tenant:
        params["tenant"] = tenant
    if all_tenants:
        params["all_tenants"] = "true"
    try:
        with out.status("removing orphans" if yes else "looking for orphans"):
            result = _client(url, state_dir).request(
                "POST" if yes else "GET", "/v1/gc", params=params or None
            )
    except AgentcellError as e:
        _fail(str(e))
    if output == "json":
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    elif not result["orphans"]:
        out.print("no orphans")
    elif not yes:
        out.print(_gc_table(result["orphans"]))
        again = f"agentcell gc --tenant {tenant} --yes" if tenant else "agentcell gc --yes"
        out.print(f"dry run: nothing removed; run `{again}` to remove these", highlight=False)
    else:
        if result["removed"]:
            out.print(_gc_table(result["removed"]))
        out.print(f"removed {len(result['removed'])} of {len(result['orphans'])} orphan(s)")
        for o in result["kept"] + result["failed"]:
            err.print(
                f"not removed: {o['kind']} {o['name']} ({_gc_owner(o)}): {o['why']}",
                highlight=False,
                soft_wrap=True,
            )
    if result.get("foreign") and output != "json":
        out.print(
            f"left out: {result['foreign']} object(s) of tenants this control plane does not "
            "know (another control plane's, or left by a lost store); --all-tenants includes "
            "them",
            highlight=False,
        )
    if yes and result["failed"]:
        raise typer.Exit(1)


def _gc_table(orphans: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for col in ("KIND", "NAME", "TENANT/CELL", "REASON"):
        table.add_column(col, no_wrap=True)
    for o in orphans:
        table.add_row(o["kind"], o["name"], _gc_owner(o), o["reason"])
    return table


def _gc_owner(o: dict[str, Any]) -> str:
    return f"{o['tenant']}/{o['cell'] or '-'}"


@egress_app.command("log")
def egress_log(
    cell: Annotated[str, typer.Argument(help="TENANT/NAME")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep streaming")] = False,
    denied: Annotated[bool, typer.Option(help="only denied requests")] = False,
    limit: Annotated[int, typer.Option(help="how many of the latest records")] = 50,
    output: Annotated[str, typer.Option("-o", "--output", help="text | json")] = "text",
    url: UrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """One line per request the cell's egress gate decided: time, decision, reason, target."""
    tenant, name = _cell(cell)
    params = {"denied": denied, "follow": follow, "limit": limit}
    path = f"/v1/cells/{tenant}/{name}/egress"
    try:
        client = _client(url, state_dir)
        if follow:
            for line in client.lines("GET", path, params=params):
                if line.strip():
                    _print_egress(json.loads(line), output)
        else:
            for record in client.request("GET", path, params=params):
                _print_egress(record, output)
    except AgentcellError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        pass


def _print_egress(r: dict[str, Any], output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(r) + "\n")
        sys.stdout.flush()
        return
    d = r.get("details") or {}
    when = time.strftime("%H:%M:%S", time.localtime(r["time"]))
    mark = "[green]allow[/green]" if r["decision"] == "allow" else "[red]deny[/red] "
    target = f"{d.get('method', '')} {d.get('host', '')}:{d.get('port', '')}"
    via = f" -> {d['address']}" if d.get("address") else ""
    size = (
        f" up {d.get('bytes_up', 0)}B down {d.get('bytes_down', 0)}B"
        if d.get("bytes_up") or d.get("bytes_down")
        else ""
    )
    rule = f" [{d['rule']}]" if d.get("rule") else ""
    out.print(f"{when} {mark} {target}{via}  {r['reason']}{rule}{size}", highlight=False)


@policy_app.command("check")
def policy_check(
    target: Annotated[str, typer.Argument(help="URL (http://host/...) or HOST:PORT")],
    file: Annotated[Path, typer.Option("-f", "--file", help="spec file with the agent")],
    agent: Annotated[
        str | None, typer.Option(help="the agent's name, if the file has several")
    ] = None,
    resolve: Annotated[
        list[str] | None, typer.Option(help="NAME=IP[,IP] answer for a name")
    ] = None,
) -> None:
    """The decision and reason the gate would give, without sending anything anywhere."""
    from agentcell.plan import compile_egress
    from agentcell.policy import decide_egress

    try:
        docs = load_file(file)
    except SpecError as e:
        _fail(f"{file} is not valid:\n{e}")
    agents = [d for d in docs if isinstance(d, Agent) and (agent is None or d.name == agent)]
    if len(agents) != 1:
        names = ", ".join(d.metadata.name for d in docs if isinstance(d, Agent)) or "none"
        _fail(f"pick one agent with --agent (agents in {file}: {names})", 2)
    tenant = next(
        (d for d in docs if isinstance(d, Tenant) and d.metadata.name == agents[0].tenant), None
    )
    host, port = _target(target)
    answers: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
    for item in resolve or []:
        name, _, addrs = item.partition("=")
        try:
            answers[name.lower().rstrip(".")] = [ipaddress.ip_address(a) for a in addrs.split(",")]
        except ValueError:
            _fail(f"--resolve {item!r}: write NAME=IP[,IP], e.g. api.example.com=203.0.113.7", 2)
    try:
        policy = compile_egress(agents[0], tenant)
    except ValueError as e:
        _fail(f"the egress policy does not load: {e}")
    d = decide_egress(policy, host, port)
    if d.allow and d.needs_resolution:
        given = answers.get(d.host)
        if given is None:
            out.print(
                f"allow so far  {d.host}:{port}  rule: {d.rule or '-'}; its addresses are "
                f"not checked: give them with --resolve {d.host}=IP"
            )
            return
        d = decide_egress(policy, host, port, given)
    verdict = "[green]allow[/green]" if d.allow else "[red]deny[/red]"
    where = f" -> {d.address}" if d.address else ""
    out.print(
        f"{verdict}  {d.host or host}:{port}{where}  reason: {d.reason}  rule: {d.rule or '-'}",
        highlight=False,
    )
    if not d.allow:
        raise typer.Exit(1)


def _target(target: str) -> tuple[str, int]:
    """(host, port) of ``http://host[:port]/...``, ``https://...`` or ``HOST:PORT``."""
    from urllib.parse import urlsplit

    if "://" in target:
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            _fail(f"{target!r}: only http:// and https:// URLs, or HOST:PORT", 2)
        default = 443 if parts.scheme == "https" else 80
        netloc = parts.netloc
        host, sep, port_text = netloc.rpartition(":")
        if not sep or "]" in port_text:
            return netloc, default
        if not port_text.isdigit():
            _fail(f"{target!r}: the port must be a number", 2)
        return host, int(port_text)
    host, sep, port_text = target.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        _fail(f"{target!r} is neither a URL nor HOST:PORT (e.g. api.example.com:443)", 2)
    return host, int(port_text)


@images_app.command("build")
def images_build(
    force: Annotated[bool, typer.Option(help="rebuild even when cached")] = False,
) -> None:
    """Build the base, runtime and demo-agent images offline (cached)."""
    import docker

    from agentcell.runtime.images import build_images

    try:
        results = build_images(
            docker.from_env(timeout=600), force=force, log=lambda m: err.print(m, highlight=False)
        )
    except (AgentcellError, docker.errors.DockerException) as e:
        _fail(str(e))
    built = [r for r in results if r.built]
    for r in built:
        out.print(f"{r.name}: built in {r.seconds:.1f}s ({r.image_id[7:19]})")
    if not built:
        out.print(f"images: all {len(results)} up to date")


# The commands kept in their own modules register themselves on ``app``.
from agentcell.cli import _tenant_cmds  # noqa: E402, F401
from agentcell.cli._secret_cmds import register as _register_secrets  # noqa: E402

_register_secrets(app, _fail, out, _cell)


def main() -> None:
    try:
        app()
    except AgentcellError as e:
        _fail(str(e))


if __name__ == "__main__":
    # Run as a script (python -m agentcell.cli.main), this file is __main__, while the command
    # modules register on the imported agentcell.cli.main: run that one.
    from agentcell.cli.main import main as _main

    _main()
