"""The REST API (``/v1``): thin handlers that parse input, call the control plane, render JSON."""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http import HTTPStatus
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentcell import __version__
from agentcell.api._models import (
    Applied,
    AuditEntry,
    CellDetail,
    CellStatusView,
    CellSummary,
    Check,
    GcAnswer,
    Healthz,
    IssuedToken,
    Paused,
    Removing,
    Revoked,
    TokenInfo,
    Verified,
    Whoami,
)
from agentcell.control import (
    TIME_FORMS,
    AuditLog,
    AuditQuery,
    AuditRecord,
    ControlPlane,
    GcResult,
    csv_header,
    csv_rows,
    parse_time,
)
from agentcell.control import IssuedToken as Issued
from agentcell.errors import (
    AgentcellError,
    ConflictError,
    ForbiddenError,
    InputError,
    NotFoundError,
    RateLimitedError,
    RuntimeDriverError,
    SpecError,
    StoreError,
    UnauthorizedError,
)
from agentcell.plan import Orphan
from agentcell.policy import MAX_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME, Principal, sees
from agentcell.spec import Name, json_schema

__all__ = ["create_app"]


class Problem(BaseModel):
    """Every error answer but a request that fails validation: what kind, and why."""

    error: str = Field(description="the kind of error, e.g. NotFoundError")
    reason: str = Field(description="what is wrong, in a sentence")
    hint: str | None = Field(default=None, description="what would be valid, when known")


class SpecProblem(Problem):
    """A spec that does not validate: each issue names its place in the document."""

    issues: list[dict[str, Any]]


class InvalidRequest(BaseModel):
    """A request that fails validation: where (``loc``) and what (``msg``) for each error."""

    detail: list[dict[str, Any]]


_WHY = {
    400: "The body could not be read: not JSON, or not in the declared encoding.",
    401: "No valid token. Send 'Authorization: Bearer <token>'.",
    403: "The token may not do this: an admin-only operation, or a Tenant document.",
    404: "No such object; another tenant's objects answer the same.",
    409: "The request contradicts stored state or a limit (quota, cell state, names in use).",
    429: "Too many failed authentications from this client; retry after Retry-After seconds.",
    502: "The Docker Engine failed or did not answer.",
    503: "The control plane's store failed.",
}


_RECORDS: dict[int | str, dict[str, Any]] = {
    200: {
        "model": list[AuditEntry],
        "description": "Audit records, oldest first; with follow, NDJSON (or CSV) as they come.",
    }
}

_YAML: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "YAML documents (a Tenant, then its Agents) after a comment header.",
        "content": {"application/yaml": {}},  # a stream of documents: no one schema
    }
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route that takes a token: 401, 429 and 503, and
    ``codes``."""
    return {c: {"model": Problem, "description": _WHY[c]} for c in sorted({401, 429, 503, *codes})}


class ApplyRequest(BaseModel):
    yaml: str = Field(description="spec text: one or more YAML documents")
    source: str = Field(default="<api>", description="file name used in error messages")


class ExecRequest(BaseModel):
    command: list[str] = Field(min_length=1)


_LIFETIME = Field(
    default=None,
    ge=MIN_TOKEN_LIFETIME,
    le=MAX_TOKEN_LIFETIME,
    description="seconds until the token expires (a minute to ten years); none: until revoked",
)


class TenantCreate(BaseModel):
    name: Name
    token_expires_in: float | None = _LIFETIME


class TokenRequest(BaseModel):
    expires_in: float | None = _LIFETIME


def _issued(issued: Issued, replaces: str | None = None) -> IssuedToken:
    """A token just issued: the only answer that ever carries it."""
    answer = IssuedToken(
        tenant=issued.tenant, token_id=issued.id, token=issued.token, expires=issued.expires
    )
    if replaces is not None:
        answer.replaces = replaces
    return answer


def auth(request: Request) -> Principal:
    """The caller, or 401 (and an audit record) without a valid token; 429 while limited."""
    plane: ControlPlane = request.app.state.plane
    client = request.client.host if request.client else "?"
    return plane.auth.check(
        request.headers.get("authorization"),
        client,
        {"method": request.method, "path": request.url.path},
    )


Caller = Annotated[Principal, Depends(auth)]


def visible_cell(caller: Principal, tenant: str, name: str) -> tuple[str, str]:
    """The cell's key; another tenant's cell is as missing as one that does not exist."""
    if not sees(caller, tenant):
        raise NotFoundError(f"no cell {tenant}/{name}")
    return tenant, name


def visible_tenant(caller: Principal, tenant: str) -> str:
    if not sees(caller, tenant):
        raise NotFoundError(f"no tenant {tenant!r}")
    return tenant


def invalid_input(loc: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 that says what is wrong, in the same documented shape as the framework's own."""
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


def admin_only(caller: Principal, what: str) -> None:
    if not caller.is_admin:
        raise ForbiddenError(
            f"{what} needs the admin token; a tenant token acts on its own tenant's cells only"
        )


def scoped_tenant(caller: Principal, tenant: str | None) -> str | None:
    """The tenant filter of a listing: a tenant token always lists its own tenant only."""
    if caller.tenant is None:
        return tenant
    if tenant is not None and tenant != caller.tenant:
        return _NOBODY
    return caller.tenant


_NOBODY = "-"  # no tenant has this name: Name never starts with '-'
_AUTH_HINT = (
    "send 'Authorization: Bearer <token>': the admin token is in the state directory, "
    "a tenant token comes from 'agentcell tenant create'"
)


def create_app(plane: ControlPlane) -> FastAPI:  # noqa: C901, PLR0915 (one closure per route, by design)
    app = FastAPI(
        title="agentcell",
        version=__version__,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )

    app.state.plane = plane

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        """What is wrong with the request, without echoing its input (it may be a secret)."""
        errors = [
            {k: v for k, v in e.items() if k not in ("input", "ctx", "url")} for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.exception_handler(StarletteHTTPException)
    def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """The framework's own refusals (an unreadable body, no such route or method) in the
        same shape as every other error."""
        phrase = HTTPStatus(exc.status_code).phrase
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": phrase, "reason": str(exc.detail)},
            headers=exc.headers,
        )

    @app.exception_handler(AgentcellError)
    def _errors(request: Request, exc: AgentcellError) -> JSONResponse:
        # RateLimitedError is an UnauthorizedError: it is asked first.
        if isinstance(exc, RateLimitedError):
            return JSONResponse(
                status_code=429,
                content={"error": type(exc).__name__, "reason": str(exc)},
                headers={"Retry-After": str(math.ceil(exc.retry_after))},
            )
        if isinstance(exc, UnauthorizedError):
            return JSONResponse(
                status_code=401,
                content={"error": type(exc).__name__, "reason": str(exc), "hint": _AUTH_HINT},
                headers={"WWW-Authenticate": "Bearer"},
            )
        if isinstance(exc, InputError):  # input the body's own model could not judge
            return _invalid(request, invalid_input(("body",), str(exc)))
        if isinstance(exc, SpecError):
            return JSONResponse(
                status_code=422,
                content={
                    "error": "invalid spec",
                    "reason": str(exc),
                    "issues": [i.__dict__ for i in exc.issues],
                },
            )
        status = 500
        for cls, code in (
            (NotFoundError, 404),
            (ForbiddenError, 403),
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
    def healthz() -> Healthz:
        return Healthz(status="ok", version=__version__)

    @app.get("/v1/schema")
    def schema() -> dict[str, Any]:
        return json_schema()

    @app.get("/v1/whoami", responses=errors())
    def whoami(caller: Caller) -> Whoami:
        """Who the presented token is: the admin, or which tenant (and token id)."""
        return Whoami(admin=caller.is_admin, tenant=caller.tenant, token_id=caller.token_id)

    @app.post(
        "/v1/apply",
        responses={
            **errors(400, 403, 409),
            422: {
                "model": SpecProblem | InvalidRequest,
                "description": "The spec does not validate (issues), or the request does not.",
            },
        },
    )
    def apply(body: ApplyRequest, caller: Caller) -> Applied:
        result = plane.apply(body.yaml, body.source, caller.actor, scope=caller.tenant)
        return Applied.model_validate({"tenants": result.tenants, "cells": result.cells})

    # The two lists are encoded here in one pass: FastAPI would first validate every item
    # against ``list[dict[str, Any]]`` (a third of the time at 1,000 cells). The documented
    # response schema stays the same through ``response_model``.
    @app.get("/v1/tenants", responses=errors(), response_model=list[dict[str, Any]])
    def tenants(caller: Caller) -> Response:
        return _json(
            [
                t.model_dump(mode="json", by_alias=True)
                for t in plane.store.tenants()
                if sees(caller, t.metadata.name)
            ]
        )

    @app.post(
        "/v1/tenants",
        responses=errors(400, 403, 409),
        status_code=201,
        response_model_exclude_unset=True,
    )
    def create_tenant(body: TenantCreate, caller: Caller) -> IssuedToken:
        """A new tenant and its first token. The token is in this answer and nowhere else."""
        admin_only(caller, "creating a tenant")
        issued = plane.create_tenant(body.name, caller.actor, token_lifetime=body.token_expires_in)
        return _issued(issued)

    @app.delete("/v1/tenants/{tenant}", responses=errors(403, 404, 409), status_code=204)
    def delete_tenant(tenant: str, caller: Caller) -> None:
        visible_tenant(caller, tenant)
        admin_only(caller, "removing a tenant")
        plane.remove_tenant(tenant, caller.actor)

    @app.get(
        "/v1/tenants/{tenant}/export",
        responses={**_YAML, **errors(404)},
        response_class=Response,  # errors stay documented as JSON
    )
    def export(tenant: str, caller: Caller) -> PlainTextResponse:
        """The tenant's spec and its agents' specs as YAML; never a secret value."""
        text = plane.export(visible_tenant(caller, tenant))
        return PlainTextResponse(text, media_type="application/yaml")

    @app.get("/v1/tenants/{tenant}/tokens", responses=errors(400, 404))
    def tokens(tenant: str, caller: Caller) -> list[TokenInfo]:
        """The tenant's tokens by id and creation time (revoked ones too); never a secret."""
        return [
            TokenInfo.model_validate(t) for t in plane.tokens.list(visible_tenant(caller, tenant))
        ]

    @app.post(
        "/v1/tenants/{tenant}/tokens",
        responses=errors(400, 404),
        status_code=201,
        response_model_exclude_unset=True,
    )
    def issue_token(tenant: str, caller: Caller, body: TokenRequest | None = None) -> IssuedToken:
        """Another token of the tenant; ``expires_in`` bounds its life."""
        lifetime = body.expires_in if body else None
        issued = plane.tokens.issue(visible_tenant(caller, tenant), caller.actor, lifetime=lifetime)
        return _issued(issued)

    @app.post(
        "/v1/tenants/{tenant}/tokens/{token_id}/rotate",
        responses=errors(400, 404),
        status_code=201,
        response_model_exclude_unset=True,
    )
    def rotate_token(
        tenant: str, token_id: str, caller: Caller, body: TokenRequest | None = None
    ) -> IssuedToken:
        """A new token replaces this one, which stops working at once. It lives
        ``expires_in`` seconds, or as long as the old one was given."""
        lifetime = body.expires_in if body else None
        issued = plane.tokens.rotate(
            visible_tenant(caller, tenant), token_id, caller.actor, lifetime=lifetime
        )
        return _issued(issued, replaces=token_id)

    @app.delete("/v1/tenants/{tenant}/tokens/{token_id}", responses=errors(404))
    def revoke_token(tenant: str, token_id: str, caller: Caller) -> Revoked:
        revoked = plane.tokens.revoke(visible_tenant(caller, tenant), token_id, caller.actor)
        return Revoked(token_id=token_id, revoked=revoked)

    @app.get("/v1/cells", responses=errors(), response_model=list[CellSummary])
    def cells(caller: Caller, tenant: str | None = None) -> Response:
        return _json(plane.cells(scoped_tenant(caller, tenant)))

    @app.get(
        "/v1/cells/{tenant}/{name}", responses=errors(404, 502), response_model_exclude_unset=True
    )
    def cell(tenant: str, name: str, caller: Caller) -> CellDetail:
        return CellDetail.model_validate(plane.cell(visible_cell(caller, tenant, name)))

    @app.post("/v1/cells/{tenant}/{name}/pause", responses=errors(404, 409, 502))
    def pause_cell(tenant: str, name: str, caller: Caller) -> Paused:
        """Kill switch: the agent is killed at once, its sidecars stopped, recovery suspended."""
        key = visible_cell(caller, tenant, name)
        changed = plane.pause(key, paused=True, actor=caller.actor)
        return Paused(cells=[name], changed=changed)

    @app.post("/v1/cells/{tenant}/{name}/resume", responses=errors(404, 409, 502))
    def resume_cell(tenant: str, name: str, caller: Caller) -> Paused:
        key = visible_cell(caller, tenant, name)
        changed = plane.pause(key, paused=False, actor=caller.actor)
        return Paused(cells=[name], changed=changed)

    @app.post(
        "/v1/tenants/{tenant}/pause",
        responses=errors(404, 409, 502),
        response_model_exclude_unset=True,
    )
    def pause_tenant(tenant: str, caller: Caller) -> Paused:
        """Kill switch for every cell of the tenant, including cells deployed while paused."""
        name = visible_tenant(caller, tenant)
        return Paused(cells=plane.pause_tenant(name, paused=True, actor=caller.actor))

    @app.post(
        "/v1/tenants/{tenant}/resume",
        responses=errors(404, 409, 502),
        response_model_exclude_unset=True,
    )
    def resume_tenant(tenant: str, caller: Caller) -> Paused:
        name = visible_tenant(caller, tenant)
        return Paused(cells=plane.pause_tenant(name, paused=False, actor=caller.actor))

    @app.get(
        "/v1/cells/{tenant}/{name}/wait",
        responses=errors(404, 502),
        response_model_exclude_unset=True,
    )
    def wait(
        tenant: str,
        name: str,
        caller: Caller,
        after: Annotated[int, Query(ge=0)] = 0,
        timeout: Annotated[float, Query(gt=0, le=60)] = 30,
    ) -> CellStatusView:
        """Long poll: returns when the cell's status version passes ``after``, or at timeout."""
        key = visible_cell(caller, tenant, name)
        st = plane.wait(key, after, timeout)
        return CellStatusView.model_validate(plane.status_view(st))

    @app.delete("/v1/cells/{tenant}/{name}", responses=errors(404, 502), status_code=202)
    def delete_cell(
        tenant: str, name: str, caller: Caller, keep_workspace: bool = False
    ) -> Removing:
        key = visible_cell(caller, tenant, name)
        plane.remove(key, keep_workspace=keep_workspace, actor=caller.actor)
        return Removing(status="removing")

    @app.get("/v1/cells/{tenant}/{name}/logs", responses=errors(404, 502))
    def logs(
        tenant: str,
        name: str,
        caller: Caller,
        follow: bool = False,
        tail: Annotated[int | None, Query(ge=0)] = None,
    ) -> StreamingResponse:
        chunks = plane.logs(visible_cell(caller, tenant, name), follow=follow, tail=tail)
        return StreamingResponse(chunks, media_type="application/octet-stream")

    @app.post("/v1/cells/{tenant}/{name}/exec", responses=errors(400, 404, 409, 502))
    def exec_(tenant: str, name: str, body: ExecRequest, caller: Caller) -> StreamingResponse:
        """Runs a command as the agent's user; NDJSON lines of output, then the exit code."""
        key = visible_cell(caller, tenant, name)
        exec_id, chunks = plane.exec(key, body.command, caller.actor)

        def lines() -> Iterator[bytes]:
            for fd, data in chunks:
                yield (
                    json.dumps({"fd": fd, "data": base64.b64encode(data).decode()}).encode() + b"\n"
                )
            yield json.dumps({"exit_code": plane.driver.exec_exit_code(exec_id)}).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.post("/v1/cells/{tenant}/{name}/verify", responses=errors(404, 409, 502))
    def verify(tenant: str, name: str, caller: Caller) -> Verified:
        results = plane.verify(visible_cell(caller, tenant, name), caller.actor)
        return Verified(
            ok=all(r.ok for r in results),
            checks=[Check(id=r.id, section=r.section, ok=r.ok, detail=r.detail) for r in results],
        )

    @app.get(
        "/v1/cells/{tenant}/{name}/egress",
        responses={**_RECORDS, **errors(404)},
        response_model=None,
    )
    def egress_log(
        tenant: str,
        name: str,
        caller: Caller,
        denied: bool = False,
        follow: bool = False,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict[str, Any]] | StreamingResponse:
        """The gate's decision records for one cell; ``follow`` streams NDJSON as they come."""
        plane.cell(visible_cell(caller, tenant, name))  # 404 for an unknown cell

        query = AuditQuery(
            tenant=tenant,
            cell=name,
            kinds=("egress",),
            decision="deny" if denied else None,
            limit=limit,
        )
        first = plane.store.audit_log.query(query)
        if not follow:
            return [r.__dict__ for r in first]
        stream = _follow(plane.store.audit_log, query, first, _ndjson_chunk)
        return StreamingResponse(stream, media_type="application/x-ndjson")

    @app.get("/v1/gc", responses=errors(403, 502), response_model_exclude_unset=True)
    def gc_dry_run(
        caller: Caller, tenant: str | None = None, all_tenants: bool = False
    ) -> GcAnswer:
        """The orphans: engine objects with agentcell labels the store does not know.

        Only tenants the store knows, unless ``tenant`` or ``all_tenants`` is given."""
        admin_only(caller, "gc")
        return _gc_json(
            plane.gc(apply=False, actor=caller.actor, tenant=tenant, all_tenants=all_tenants)
        )

    @app.post("/v1/gc", responses=errors(403, 502), response_model_exclude_unset=True)
    def gc(caller: Caller, tenant: str | None = None, all_tenants: bool = False) -> GcAnswer:
        """Remove the orphans (of one tenant, if given); one audit record per removal."""
        admin_only(caller, "gc")
        return _gc_json(
            plane.gc(apply=True, actor=caller.actor, tenant=tenant, all_tenants=all_tenants)
        )

    @app.get("/v1/audit", responses={**_RECORDS, **errors()}, response_model=None)
    def audit(
        caller: Caller,
        tenant: str | None = None,
        cell: str | None = None,
        kind: Annotated[
            list[str] | None, Query(description="repeatable: any of these kinds")
        ] = None,
        since: Annotated[str | None, Query(description=f"from: {TIME_FORMS}")] = None,
        until: Annotated[str | None, Query(description=f"to: {TIME_FORMS}")] = None,
        denied: bool = False,
        actor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
        follow: bool = False,
        format: Literal["json", "ndjson", "csv"] = "json",
    ) -> list[dict[str, Any]] | StreamingResponse:
        """The audit trail: the newest ``limit`` matching records, oldest first.

        ``follow`` keeps the response open and streams each new match as it is stored
        (NDJSON, or CSV rows with ``format=csv``); an empty line every 15 s keeps it alive."""
        query = AuditQuery(
            tenant=scoped_tenant(caller, tenant),
            cell=cell,
            kinds=tuple(kind or ()),
            decision="deny" if denied else None,
            actor=actor,
            since=_time_param("since", since),
            until=_time_param("until", until),
            limit=limit,
        )
        first = plane.store.audit_log.query(query)
        if format == "json" and not follow:
            return [r.__dict__ for r in first]
        render = _csv_chunk if format == "csv" else _ndjson_chunk
        head = [csv_header().encode()] if format == "csv" else []
        body = (
            _follow(plane.store.audit_log, query, first, render)
            if follow
            else iter([render(first)])
        )
        media = "text/csv" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(_chain(head, body), media_type=media)

    from agentcell.api._secrets import add_secret_routes

    add_secret_routes(app, plane)
    return app


def _time_param(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_time(text, time.time())
    except ValueError as e:
        raise invalid_input(("query", name), str(e)) from None


def _ndjson_chunk(records: list[AuditRecord]) -> bytes:
    return b"".join(json.dumps(r.__dict__).encode() + b"\n" for r in records)


def _csv_chunk(records: list[AuditRecord]) -> bytes:
    return csv_rows(records).encode()


def _chain(head: list[bytes], body: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from body


def _follow(
    log: AuditLog,
    query: AuditQuery,
    first: list[AuditRecord],
    render: Callable[[list[AuditRecord]], bytes],
) -> Iterator[bytes]:
    """``first``, then every newer record matching ``query`` as it is stored, forever."""
    last = first[-1].id if first else log.last_id()
    if first:
        yield render(first)
    while True:
        # Every record up to ``top`` is committed before the query looks, so none matching
        # is skipped when the cursor moves to it; one stored while the query ran is above it.
        top = log.wait(last, timeout=15)
        new = log.query(replace(query, after_id=last, limit=1000))
        if not new:
            last = max(last, top)
            yield b"\n"  # keepalive; also notices a client that went away
            continue
        last = new[-1].id
        yield render(new)


_LIST = TypeAdapter(list[dict[str, Any]])


def _json(items: list[dict[str, Any]]) -> Response:
    return Response(_LIST.dump_json(items), media_type="application/json")


def _gc_json(result: GcResult) -> GcAnswer:
    def one(o: Orphan, why: str | None = None) -> dict[str, Any]:
        out = {**o.object.__dict__, "reason": o.reason}
        if why is not None:
            out["why"] = why
        return out

    return GcAnswer.model_validate(
        {
            "applied": result.applied,
            "orphans": [one(o) for o in result.orphans],
            "removed": [one(o) for o in result.removed],
            "kept": [one(o, why) for o, why in result.kept],
            "failed": [one(o, why) for o, why in result.failed],
            "foreign": result.foreign,
        }
    )
