"""The control plane's services: what the API calls. Writes desired state; never the runtime."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentcell.control._auth import (
    TOKEN_FILE,
    Authenticator,
    GateTokens,
    IssuedToken,
    TenantTokens,
    ensure_admin_token,
)
from agentcell.control._gc import GcResult, collect_garbage
from agentcell.control._notify import Notifier
from agentcell.control._reconciler import Reconciler, ReconcilerConfig
from agentcell.control._secrets import (
    SecretBox,
    SecretFiles,
    Secrets,
    check_tmpfs,
    default_secrets_dir,
    key_from_env,
    load_key,
)
from agentcell.control._store import AuditRecord, CellStatus, Store
from agentcell.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    SpecError,
    SpecIssue,
)
from agentcell.plan import (
    CellKey,
    DesiredCell,
    check_quota,
    compile_egress,
    readiness,
    spec_hash,
)
from agentcell.policy import SECRETS_PATH, PolicyError, check_container
from agentcell.runtime import Backend, DockerDriver, Firewall, cell_seccomp_profile
from agentcell.spec import API_VERSION, Agent, Tenant, dump_documents, load_text

if TYPE_CHECKING:
    from agentcell.runtime.battery import CheckResult

__all__ = ["ApplyResult", "ControlPlane", "PlaneConfig"]


@dataclass(frozen=True)
class PlaneConfig:
    state_dir: Path
    subnet_pool: str = "10.213.0.0/16"
    subnet_prefix: int = 27
    seccomp_base: Path | None = None
    iptables: str | None = None
    webhook: str | None = None
    """Where failed cells are announced (POST, JSON); None: the audit trail only."""
    canary_seconds: float = 60.0
    resync_seconds: float = 30.0
    secrets_dir: Path | None = None
    """Host directory (on tmpfs) for cells' secret files; None: under /dev/shm."""


@dataclass(frozen=True)
class ApplyResult:
    tenants: list[dict[str, Any]]
    cells: list[dict[str, Any]]


class ControlPlane:
    """Store + driver + reconciler, and the operations the API exposes."""

    def __init__(self, config: PlaneConfig, driver: Backend | None = None) -> None:
        self.config = config
        # Secrets settings are checked before the state directory is made.
        key_from_env(os.environ)
        secrets_root = config.secrets_dir or default_secrets_dir(config.state_dir)
        check_tmpfs(secrets_root, Path("/proc/self/mountinfo").read_text())
        new_token = not (config.state_dir / TOKEN_FILE).exists()
        self.token = ensure_admin_token(config.state_dir)
        self.store = Store(config.state_dir / "agentcell.db")
        if new_token:
            what = "admin token created"
            self.store.audit(AuditRecord("", "", "serve", "token", "allow", what, {}))
        self.auth = Authenticator(self.store, self.token)
        self.tokens = TenantTokens(self.store)
        self.secrets = Secrets(self.store, SecretBox(load_key(config.state_dir)))
        self.secret_files = SecretFiles(secrets_root, self.secrets.values)
        self.secret_files.prepare()
        self.seccomp, self.seccomp_note = cell_seccomp_profile(config.seccomp_base)
        seccomp_file = None
        if self.seccomp is not None:  # what docker proxies give the children they create
            path = config.state_dir / "cell-seccomp.json"
            path.write_text(self.seccomp)
            path.chmod(0o644)
            seccomp_file = str(path)
        self.driver: Backend = driver or DockerDriver(
            seccomp=self.seccomp,
            seccomp_file=seccomp_file,
            pool=config.subnet_pool,
            secret_mounts=self.secret_files,
        )
        self.firewall = Firewall(config.subnet_pool, iptables=config.iptables)
        self.notifier = Notifier(config.webhook, self.store)
        self.reconciler = Reconciler(
            self.store,
            self.driver,
            self.firewall,
            ReconcilerConfig(
                subnet_pool=config.subnet_pool,
                subnet_prefix=config.subnet_prefix,
                canary_seconds=config.canary_seconds,
                resync_seconds=config.resync_seconds,
            ),
            GateTokens(config.state_dir),
            self.notifier,
        )

    def start(self) -> None:
        self.notifier.start()
        self.reconciler.start()
        self.reconciler.wake()

    def stop(self) -> None:
        self.reconciler.stop()
        self.notifier.stop()
        self.store.close()
        self.secret_files.close()

    # -- desired state -----------------------------------------------------------------------

    def apply(self, text: str, source: str, actor: str, *, scope: str | None = None) -> ApplyResult:
        """Validate every document, check tenants and quotas, then store them all.

        ``scope``: the one tenant a tenant token may act on. It may apply that tenant's
        agents, not Tenant documents (those carry its quota); another tenant's agent is
        refused exactly as if that tenant did not exist.
        """
        docs = load_text(text, source=source)
        tenants = {d.metadata.name: d for d in docs if isinstance(d, Tenant)}
        agents = [d for d in docs if isinstance(d, Agent)]
        if scope is not None and tenants:
            raise ForbiddenError(
                "a tenant token cannot apply Tenant documents (they set the tenant's quota "
                "and egress defaults); apply only Agent documents, or ask the admin"
            )
        for a in agents:
            hidden = scope is not None and a.tenant != scope
            if hidden or (a.tenant not in tenants and self.store.tenant(a.tenant) is None):
                raise ConflictError(
                    f"agent {a.ref}: tenant {a.tenant!r} does not exist; add a Tenant document "
                    f"(kind: Tenant, metadata: {{name: {a.tenant}}}) to the file or deploy it first"
                )
            missing = self.secrets.missing(a.tenant, a.spec.secrets)
            if missing:
                raise ConflictError(
                    f"agent {a.ref}: tenant {a.tenant!r} has no secret "
                    + ", ".join(repr(m) for m in missing)
                    + "; set it first with "
                    + " and ".join(f"'agentcell secret set {a.tenant} {m}'" for m in missing)
                    + " (the value on stdin); nothing was stored"
                )
        desired = self.store.desired()
        for name in {a.tenant for a in agents} | set(tenants):
            tenant = tenants.get(name) or self.store.tenant(name)
            assert tenant is not None
            now = {k[1]: d.agent for k, d in desired.items() if k[0] == name and not d.deleted}
            mine = {**now, **{a.name: a for a in agents if a.tenant == name}}
            verdict = check_quota(tenant.spec.quota, mine.values(), now.values())
            if not verdict.allow:
                self.store.audit(
                    AuditRecord(
                        name, "", actor, "quota", "deny", verdict.reason, {"detail": verdict.rule}
                    )
                )
                raise ConflictError(f"tenant {name!r}: {verdict.reason}: {verdict.rule}")
        out_t = []
        for t in tenants.values():
            changed = self.store.put_tenant(t)
            out_t.append({"name": t.metadata.name, "changed": changed})
            if changed:
                self.store.audit(
                    AuditRecord(
                        t.metadata.name,
                        "",
                        actor,
                        "api",
                        "allow",
                        "tenant applied",
                        {"source": source},
                    )
                )
        out_c = []
        policies = self._compile_policies(agents, tenants, source)
        for a in agents:
            key = (a.tenant, a.name)
            existing = self.store.cell(key)
            subnet = existing.subnet if existing else self.reconciler.allocate_subnet()
            policy, digest = policies[key]
            generation, changed = self.store.put_cell(a, spec_hash(a, egress=bool(policy)), subnet)
            self._store_policy(key, policy, digest, actor, source)
            out_c.append(
                {
                    "tenant": a.tenant,
                    "name": a.name,
                    "generation": generation,
                    "changed": changed,
                    "policy_digest": digest,
                    "version": self.store.status(key).version,
                }
            )
            if changed:
                self.store.audit(
                    AuditRecord(
                        a.tenant,
                        a.name,
                        actor,
                        "api",
                        "allow",
                        "agent applied",
                        {"source": source, "generation": generation},
                    )
                )
        self._recompile_tenants(tenants, {(a.tenant, a.name) for a in agents}, actor, source)
        self.reconciler.wake()
        return ApplyResult(out_t, out_c)

    def _compile_policies(
        self, agents: list[Agent], tenants: dict[str, Tenant], source: str
    ) -> dict[CellKey, tuple[str, str]]:
        """Each agent's egress policy (wire JSON, digest), merged with its tenant's defaults.

        Compiled before anything is stored, so a policy that does not load stores nothing.
        """
        out = {}
        for a in agents:
            tenant = tenants.get(a.tenant) or self.store.tenant(a.tenant)
            try:
                policy = compile_egress(a, tenant)
            except PolicyError as e:
                raise SpecError(
                    [SpecIssue(source, 0, None, "spec.egress", f"{a.ref}: {e}")]
                ) from None
            if not policy.allow:  # nothing allowed: no egress, and no gate at all
                out[(a.tenant, a.name)] = ("", "")
            else:
                out[(a.tenant, a.name)] = (
                    json.dumps(policy.to_json(), sort_keys=True, separators=(",", ":")),
                    policy.digest(),
                )
        return out

    def _recompile_tenants(
        self, tenants: dict[str, Tenant], done: set[CellKey], actor: str, source: str
    ) -> None:
        """A tenant's egress defaults changed: recompile its other cells' policies."""
        for key, want in self.store.desired().items():
            if key[0] in tenants and key not in done and not want.deleted:
                policy, digest = self._compile_policies([want.agent], tenants, source)[key]
                # Egress switched on or off by the tenant changes the agent itself.
                self.store.put_cell(
                    want.agent, spec_hash(want.agent, egress=bool(policy)), want.subnet
                )
                self._store_policy(key, policy, digest, actor, source)

    def _store_policy(
        self, key: CellKey, policy: str, digest: str, actor: str, source: str
    ) -> None:
        if self.store.set_policy(key, policy, digest):
            details = {"digest": digest, "source": source}
            self.store.audit(AuditRecord(*key, actor, "policy", "allow", "policy changed", details))

    def remove(self, key: CellKey, *, keep_workspace: bool, actor: str) -> None:
        if not self.store.mark_deleted(key, keep_workspace=keep_workspace):
            if self.store.cell(key) is None:
                raise NotFoundError(f"no cell {key[0]}/{key[1]}")
            return
        self.store.audit(
            AuditRecord(
                *key,
                actor,
                "api",
                "allow",
                "cell removal requested",
                {"keep_workspace": keep_workspace},
            )
        )
        self.reconciler.wake()

    def restart(self, key: CellKey, actor: str) -> int:
        """Ask for the agent to be restarted (its secret files rewritten); returns the request
        number, which the status's ``restart_honoured`` reaches once it is done."""
        want = self._require(key)
        if want.paused:
            raise ConflictError(
                f"cell {key[0]}/{key[1]} is paused; resume it (agentcell resume "
                f"{key[0]}/{key[1]}): it starts with its current secrets"
            )
        st = self.store.status(key)
        if st.state == "failed":
            raise ConflictError(
                f"cell {key[0]}/{key[1]} has failed ({st.reason}); a restart does not retry "
                f"it: fix the cause and deploy a changed spec, or remove it (agentcell rm "
                f"--keep-workspace {key[0]}/{key[1]}) and deploy it again"
            )
        request = self.store.request_restart(key)
        self.store.audit(
            AuditRecord(*key, actor, "api", "allow", "restart requested", {"request": request})
        )
        self.reconciler.wake()
        return request

    def pause(self, key: CellKey, *, paused: bool, actor: str) -> bool:
        """The kill switch of one cell (``paused=False`` resumes it); True if it changed."""
        if self.store.cell(key) is None:
            raise NotFoundError(f"no cell {key[0]}/{key[1]}")
        if self.store.tenant_paused(key[0]) and not paused:
            raise ConflictError(
                f"tenant {key[0]!r} is paused; resume the tenant (agentcell resume {key[0]})"
            )
        changed = self.store.set_paused(key, paused)
        if changed:
            what = "cell paused" if paused else "cell resumed"
            self.store.audit(AuditRecord(*key, actor, "api", "allow", what, {}))
            self.reconciler.wake()
        return changed

    def pause_tenant(self, name: str, *, paused: bool, actor: str) -> list[str]:
        """The kill switch of a whole tenant; returns the cells it covers."""
        if self.store.tenant(name) is None:
            raise NotFoundError(f"no tenant {name!r}")
        cells = sorted(k[1] for k, d in self.store.desired().items() if k[0] == name)
        if self.store.set_tenant_paused(name, paused):
            what = "tenant paused" if paused else "tenant resumed"
            self.store.audit(AuditRecord(name, "", actor, "api", "allow", what, {"cells": cells}))
            self.reconciler.wake()
        if not paused:  # resuming the tenant resumes the cells paused one by one too
            for cell in cells:
                self.store.set_paused((name, cell), False)
        return cells

    def remove_tenant(self, name: str, actor: str) -> None:
        if self.store.tenant(name) is None:
            raise NotFoundError(f"no tenant {name!r}")
        cells = [k for k in self.store.desired() if k[0] == name]
        if cells:
            raise ConflictError(
                f"tenant {name!r} still has {len(cells)} cell(s); remove them first"
            )
        self.store.delete_tenant(name)
        self.store.forget_tokens(name)
        self.store.audit(AuditRecord(name, "", actor, "api", "allow", "tenant removed", {}))
        self.secrets.forget_tenant(name, actor)  # a tenant made again later starts with none

    def create_tenant(
        self, name: str, actor: str, *, token_lifetime: float | None = None
    ) -> IssuedToken:
        """A new tenant (no quota, no egress defaults) and its first token, good for
        ``token_lifetime`` seconds (None: until revoked)."""
        if self.store.tenant(name) is not None:
            raise ConflictError(
                f"tenant {name!r} exists; issue it another token with "
                f"'agentcell token create {name}'"
            )
        tenant = Tenant.model_validate(
            {"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": name}}
        )
        self.tokens.check_lifetime(token_lifetime)  # before anything is stored
        self.store.put_tenant(tenant)
        self.store.audit(AuditRecord(name, "", actor, "api", "allow", "tenant created", {}))
        return self.tokens.issue(name, actor, lifetime=token_lifetime)

    def export(self, name: str) -> str:
        """The tenant's spec and its cells' specs as YAML: what redeploys it elsewhere.

        Secret values never leave; the header names the secrets to set first."""
        tenant = self.store.tenant(name)
        if tenant is None:
            raise NotFoundError(f"no tenant {name!r}")
        agents = [
            want.agent
            for key, want in sorted(self.store.desired().items())
            if key[0] == name and not want.deleted
        ]
        needed = sorted({s for a in agents for s in a.spec.secrets})
        header = [
            f"agentcell export of tenant {name}: {len(agents)} agent(s).",
            f"Deploy it with: agentcell deploy -f {name}.yaml",
        ]
        if needed:
            header.append("Secret values are not exported; set these first:")
            header += [f"  agentcell secret set {name} {s}" for s in needed]
        return dump_documents([tenant, *agents], header="\n".join(header))

    def gc(
        self, *, apply: bool, actor: str, tenant: str | None = None, all_tenants: bool = False
    ) -> GcResult:
        """Engine objects with agentcell labels the store does not know; removed if ``apply``."""
        return collect_garbage(
            self.store,
            self.driver,
            self.reconciler,
            apply=apply,
            actor=actor,
            tenant=tenant,
            all_tenants=all_tenants,
        )

    # -- reading -------------------------------------------------------------------------------

    def cells(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every cell's summary (of one tenant, if given), by tenant and name.

        Two store reads whatever the number of cells: the desired state and the statuses."""
        statuses = self.store.statuses(tenant)
        pending = CellStatus("", "")  # no status row yet; _summary reads no names from it
        return [
            self._summary(want, statuses.get(key, pending), key)
            for key, want in sorted(self.store.desired().items())
            if tenant is None or key[0] == tenant
        ]

    def cell(self, key: CellKey) -> dict[str, Any]:
        want = self.store.cell(key)
        if want is None:
            raise NotFoundError(f"no cell {key[0]}/{key[1]}")
        st = self.store.status(key)
        out = self._summary(want, st)
        out["spec"] = want.agent.model_dump(mode="json", by_alias=True)
        out["subnet"] = want.subnet
        engine = self.driver.cell_containers(key)
        attrs = engine.agent
        if attrs is not None:
            network = (attrs.get("HostConfig") or {}).get("NetworkMode", "")
            out["hardening"] = [
                {"property": d.rule, "ok": d.allow, "reason": d.reason}
                for d in check_container(
                    attrs,
                    network=network,
                    strict_seccomp=self.seccomp is not None,
                    secrets_dir=self.driver.secrets_dir(key),
                )
            ]
            out["seccomp"] = self.seccomp_note
            out["container"] = {
                "id": attrs["Id"],
                "name": attrs["Name"].lstrip("/"),
                "started": (attrs.get("State") or {}).get("StartedAt", ""),
                "network": network,
            }
        if want.policy:
            rules = json.loads(want.policy)
            out["egress"] = {
                "policy_digest": want.policy_digest,
                "loaded_digest": st.policy_digest,
                "allow": len(rules.get("allow", [])),
                "deny": len(rules.get("deny", [])),
                "gate": engine.gate or "missing",
            }
        docker_access = want.agent.spec.docker
        if docker_access.access == "own":
            limits = docker_access.limits
            out["docker"] = {
                "proxy": engine.dockerproxy or "missing",
                "limits": {
                    "containers": limits.containers,
                    "cpus": limits.cpus,
                    "memory": limits.memory,
                },
            }
        out["events"] = [
            r.__dict__ for r in self.store.audit_records(tenant=key[0], cell=key[1], limit=10)
        ]
        return out

    def wait(self, key: CellKey, after_version: int, timeout: float) -> CellStatus:
        if self.store.cell(key) is None:
            raise NotFoundError(f"no cell {key[0]}/{key[1]}")
        return self.store.wait_status(key, after_version, timeout)

    def status_view(self, st: CellStatus) -> dict[str, Any]:
        """A cell status as the API shows it, with the verdict on its deploy (``ready``,
        ``settled``, ``ready_reason``: see ``plan.readiness``) and whether the store still
        has the cell (``gone``)."""
        out = dict(st.__dict__)
        out["attempts"] = [{"time": a.time, "step": a.step} for a in st.attempts]
        want = self.store.cell((st.tenant, st.name))
        out["gone"] = want is None
        if want is not None:
            verdict = readiness(
                generation=want.generation,
                policy_digest=want.policy_digest,
                state=st.state,
                health=st.health,
                reason=st.reason,
                observed_generation=st.observed_generation,
                failed_generation=st.failed_generation,
                loaded_digest=st.policy_digest,
            )
            out.update(ready=verdict.ready, settled=verdict.settled, ready_reason=verdict.reason)
        return out

    def _summary(
        self, want: DesiredCell, st: CellStatus, key: CellKey | None = None
    ) -> dict[str, Any]:
        key = key or want.key
        agent, generation, created = want.agent, want.generation, want.created
        want_paused = want.paused
        r = agent.spec.resources
        return {
            "tenant": key[0],
            "name": key[1],
            "generation": generation,
            "state": st.state,
            "health": st.health,
            "reason": st.reason,
            "since": st.since,
            "paused": want_paused,
            "restart": {"requested": want.restart_request, "honoured": st.restart_honoured},
            "recovery": {
                "max_restarts": agent.spec.restart.max_restarts,
                "window": agent.spec.restart.window,
                "rung": st.rung,
                "attempts": [{"time": a.time, "step": a.step} for a in st.attempts],
            },
            "breach": st.breach,
            "observed_generation": st.observed_generation,
            "image": agent.spec.image,
            "limits": {"cpus": r.cpus, "memory": r.memory, "pids": r.pids},
            "version": st.version,
            "ip": st.ip,
            "created": created,
        }

    # -- working with a running cell -----------------------------------------------------------

    def logs(self, key: CellKey, *, follow: bool, tail: int | None) -> Iterator[bytes]:
        self._require(key)
        return self.driver.logs(key, follow=follow, tail=tail)

    def exec(
        self, key: CellKey, command: list[str], actor: str
    ) -> tuple[str, Iterator[tuple[int, bytes]]]:
        want = self._require(key)
        self.store.audit(
            AuditRecord(*key, actor, "exec", "allow", "exec requested", {"command": command})
        )
        return self.driver.exec(key, command, user=want.agent.spec.user)

    def verify(self, key: CellKey, actor: str) -> list[CheckResult]:
        want = self._require(key)
        others = []
        for other_key, cell in self.driver.observe().items():
            if other_key != key and cell.agent is not None and cell.agent.ip:
                others.append((cell.agent.ip, 8080))
        spec = want.agent.spec
        started = time.monotonic()
        results = self.driver.verify(
            key,
            user=spec.user,
            workspace="/workspace" if spec.workspace.access != "none" else None,
            pids_limit=spec.resources.pids,
            memory_bytes=spec.resources.memory,
            extra_targets=others,
            secrets=SECRETS_PATH if spec.secrets else None,
        )
        failed = [r.id for r in results if not r.ok]
        self.store.audit(
            AuditRecord(
                *key,
                actor,
                "verify",
                "deny" if failed else "allow",
                "hardening checks failed" if failed else "hardening holds",
                {
                    "failed": failed,
                    "checks": len(results),
                    "seconds": round(time.monotonic() - started, 2),
                },
            )
        )
        return results

    def _require(self, key: CellKey) -> Any:
        want = self.store.cell(key)
        if want is None or want.deleted:
            raise NotFoundError(f"no cell {key[0]}/{key[1]}")
        return want
