"""The REST API (``/v1``): thin handlers that parse input, call the control plane, render JSON."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, TypeAdapter

from agentcell import __version__
from agentcell.control import AuditRecord, ControlPlane, GcResult, check_token
from agentcell.errors import (
    AgentcellError,
    ConflictError,
    NotFoundError,
    RuntimeDriverError,
    SpecError,
    StoreError,
)
from agentcell.plan import Orphan
from agentcell.spec import json_schema

__all__ = ["create_app"]


class ApplyRequest(BaseModel):
    yaml: str = Field(description="spec text: one or more YAML documents")
    source: str = Field(default="<api>", description="file name used in error messages")


class ExecRequest(BaseModel):
    command: list[str] = Field(min_length=1)


def auth(request: Request) -> str:
    """The caller's identity, or 401 (and an audit record) without a valid token."""
    plane: ControlPlane = request.app.state.plane
    refused = check_token(request.headers.get("authorization"), plane.token)
    if refused is not None:
        client = request.client.host if request.client else "?"
        plane.store.audit(
            AuditRecord(
                "",
                "",
                f"client {client}",
                "auth",
                "deny",
                refused,
                {"method": request.method, "path": request.url.path},
            )
        )
        raise HTTPException(
            401,
            detail={
                "error": "unauthorized",
                "reason": refused,
                "hint": "send 'Authorization: Bearer <token>'; the admin token is in the "
                "state directory",
            },
            headers={"WWW-Authenticate": "Bearer"},
        )
    return "admin"


Actor = Annotated[str, Depends(auth)]


def create_app(plane: ControlPlane) -> FastAPI:
    app = FastAPI(
        title="agentcell",
        version=__version__,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )

    app.state.plane = plane

    @app.exception_handler(AgentcellError)
    def _errors(_: Request, exc: AgentcellError) -> JSONResponse:
        if isinstance(exc, SpecError):
            return JSONResponse(
                status_code=422,
                content={
                    "error": "invalid spec",
                    "reason": str(exc),
                    "issues": [i.__dict__ for i in exc.issues],
                },
            )
        status = {
            NotFoundError: 404,
            ConflictError: 409,
            RuntimeDriverError: 502,
            StoreError: 503,
        }.get(type(exc), 500)
        for cls, code in (
            (NotFoundError, 404),
            (ConflictError, 409),
            (RuntimeDriverError, 502),
            (StoreError, 503),
        ):
            if isinstance(exc, cls):
                status = code
        return JSONResponse(
            status_code=status, content={"error": type(exc).__name__, "reason": str(exc)}
        )

    @app.get("/v1/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/schema")
    def schema() -> dict[str, Any]:
        return json_schema()

    @app.post("/v1/apply")
    def apply(body: ApplyRequest, actor: Actor) -> dict[str, Any]:
        result = plane.apply(body.yaml, body.source, actor)
        return {"tenants": result.tenants, "cells": result.cells}

    # The two lists are encoded here in one pass: FastAPI would first validate every item
    # against ``list[dict[str, Any]]`` (a third of the time at 1,000 cells). The documented
    # response schema stays the same through ``response_model``.
    @app.get("/v1/tenants", response_model=list[dict[str, Any]])
    def tenants(_: Actor) -> Response:
        return _json([t.model_dump(mode="json", by_alias=True) for t in plane.store.tenants()])

    @app.delete("/v1/tenants/{tenant}", status_code=204)
    def delete_tenant(tenant: str, actor: Actor) -> None:
        plane.remove_tenant(tenant, actor)

    @app.get("/v1/cells", response_model=list[dict[str, Any]])
    def cells(_: Actor, tenant: str | None = None) -> Response:
        return _json(plane.cells(tenant))

    @app.get("/v1/cells/{tenant}/{name}")
    def cell(tenant: str, name: str, _: Actor) -> dict[str, Any]:
        return plane.cell((tenant, name))

    @app.post("/v1/cells/{tenant}/{name}/pause")
    def pause_cell(tenant: str, name: str, actor: Actor) -> dict[str, Any]:
        """Kill switch: the agent is killed at once, its sidecars stopped, recovery suspended."""
        changed = plane.pause((tenant, name), paused=True, actor=actor)
        return {"cells": [name], "changed": changed}

    @app.post("/v1/cells/{tenant}/{name}/resume")
    def resume_cell(tenant: str, name: str, actor: Actor) -> dict[str, Any]:
        changed = plane.pause((tenant, name), paused=False, actor=actor)
        return {"cells": [name], "changed": changed}

    @app.post("/v1/tenants/{tenant}/pause")
    def pause_tenant(tenant: str, actor: Actor) -> dict[str, Any]:
        """Kill switch for every cell of the tenant, including cells deployed while paused."""
        return {"cells": plane.pause_tenant(tenant, paused=True, actor=actor)}

    @app.post("/v1/tenants/{tenant}/resume")
    def resume_tenant(tenant: str, actor: Actor) -> dict[str, Any]:
        return {"cells": plane.pause_tenant(tenant, paused=False, actor=actor)}

    @app.get("/v1/cells/{tenant}/{name}/wait")
    def wait(
        tenant: str,
        name: str,
        _: Actor,
        after: Annotated[int, Query(ge=0)] = 0,
        timeout: Annotated[float, Query(gt=0, le=60)] = 30,
    ) -> dict[str, Any]:
        """Long poll: returns when the cell's status version passes ``after``, or at timeout."""
        st = plane.wait((tenant, name), after, timeout)
        gone = plane.store.cell((tenant, name)) is None
        return {**plane.status_view(st), "gone": gone}

    @app.delete("/v1/cells/{tenant}/{name}", status_code=202)
    def delete_cell(
        tenant: str, name: str, actor: Actor, keep_workspace: bool = False
    ) -> dict[str, str]:
        plane.remove((tenant, name), keep_workspace=keep_workspace, actor=actor)
        return {"status": "removing"}

    @app.get("/v1/cells/{tenant}/{name}/logs")
    def logs(
        tenant: str,
        name: str,
        _: Actor,
        follow: bool = False,
        tail: Annotated[int | None, Query(ge=0)] = None,
    ) -> StreamingResponse:
        chunks = plane.logs((tenant, name), follow=follow, tail=tail)
        return StreamingResponse(chunks, media_type="application/octet-stream")

    @app.post("/v1/cells/{tenant}/{name}/exec")
    def exec_(tenant: str, name: str, body: ExecRequest, actor: Actor) -> StreamingResponse:
        """Runs a command as the agent's user; NDJSON lines of output, then the exit code."""
        exec_id, chunks = plane.exec((tenant, name), body.command, actor)

        def lines() -> Iterator[bytes]:
            for fd, data in chunks:
                yield (
                    json.dumps({"fd": fd, "data": base64.b64encode(data).decode()}).encode() + b"\n"
                )
            yield json.dumps({"exit_code": plane.driver.exec_exit_code(exec_id)}).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.post("/v1/cells/{tenant}/{name}/verify")
    def verify(tenant: str, name: str, actor: Actor) -> dict[str, Any]:
        results = plane.verify((tenant, name), actor)
        return {"ok": all(r.ok for r in results), "checks": [r.__dict__ for r in results]}

    @app.get("/v1/cells/{tenant}/{name}/egress", response_model=None)
    def egress_log(
        tenant: str,
        name: str,
        _: Actor,
        denied: bool = False,
        follow: bool = False,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict[str, Any]] | StreamingResponse:
        """The gate's decision records for one cell; ``follow`` streams NDJSON as they come."""
        plane.cell((tenant, name))  # 404 for an unknown cell

        def records(after_id: int, count: int) -> list[AuditRecord]:
            return plane.store.audit_records(
                tenant=tenant,
                cell=name,
                kind="egress",
                decision="deny" if denied else None,
                after_id=after_id,
                limit=count,
            )

        first = records(0, limit)
        if not follow:
            return [r.__dict__ for r in first]

        def stream() -> Iterator[bytes]:
            last = first[-1].id if first else plane.store.last_audit_id()
            for r in first:
                yield json.dumps(r.__dict__).encode() + b"\n"
            while True:
                plane.store.wait_audit(last, timeout=15)
                new = records(last, 1000)
                if not new:
                    last = max(last, plane.store.last_audit_id())
                    yield b"\n"  # keepalive; also notices a client that went away
                for r in new:
                    last = r.id
                    yield json.dumps(r.__dict__).encode() + b"\n"

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @app.get("/v1/gc")
    def gc_dry_run(
        actor: Actor, tenant: str | None = None, all_tenants: bool = False
    ) -> dict[str, Any]:
        """The orphans: engine objects with agentcell labels the store does not know.

        Only tenants the store knows, unless ``tenant`` or ``all_tenants`` is given."""
        return _gc_json(plane.gc(apply=False, actor=actor, tenant=tenant, all_tenants=all_tenants))

    @app.post("/v1/gc")
    def gc(actor: Actor, tenant: str | None = None, all_tenants: bool = False) -> dict[str, Any]:
        """Remove the orphans (of one tenant, if given); one audit record per removal."""
        return _gc_json(plane.gc(apply=True, actor=actor, tenant=tenant, all_tenants=all_tenants))

    @app.get("/v1/audit")
    def audit(
        _: Actor,
        tenant: str | None = None,
        cell: str | None = None,
        kind: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict[str, Any]]:
        return [
            r.__dict__
            for r in plane.store.audit_records(tenant=tenant, cell=cell, kind=kind, limit=limit)
        ]

    return app


_LIST = TypeAdapter(list[dict[str, Any]])


def _json(items: list[dict[str, Any]]) -> Response:
    return Response(_LIST.dump_json(items), media_type="application/json")


def _gc_json(result: GcResult) -> dict[str, Any]:
    def one(o: Orphan, why: str | None = None) -> dict[str, Any]:
        out = {**o.object.__dict__, "reason": o.reason}
        if why is not None:
            out["why"] = why
        return out

    return {
        "applied": result.applied,
        "orphans": [one(o) for o in result.orphans],
        "removed": [one(o) for o in result.removed],
        "kept": [one(o, why) for o, why in result.kept],
        "failed": [one(o, why) for o, why in result.failed],
        "foreign": result.foreign,
    }
