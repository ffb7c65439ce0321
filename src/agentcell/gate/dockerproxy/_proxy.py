"""Serving one client connection of the docker proxy: frame, decide, resolve, forward, relay.

Per request, in this order (every step a refusal with a Docker-style error body and a
record):

1. Framing (h11, plus what h11 forgives): more than one ``Content-Length``, or one with
   ``Transfer-Encoding`` -> 400; a declared body over ``MAX_BODY`` -> 413.
2. ``decide_request`` on the method and the raw request-target -> 403 if refused. A body
   on an endpoint that takes none -> 400; a JSON body read whole (at most ``MAX_BODY``).
3. The object the path names (id, prefix or name) resolved by asking the engine, and
   ``decide_ownership`` on its labels; a foreign object and a missing one get the same
   404 ``No such <kind>: <name>``. The request is rebuilt with the full id
   (``Request.with_ident``): what is forwarded names what was checked.
4. Bodies: ``decode_engine_json`` then ``harden_*``; creates are serialised by one lock,
   under which the cell's children are counted (their labels, via the engine) before
   ``harden_child`` checks the quota. Only ``Hardened.raw`` is forwarded.
5. Lists, prunes and events go out with ``scope_filters``; lists come back through
   ``filter_list``, events through ``filter_event``, ``/info`` through ``scrub_info``.
6. The response relayed as it comes (streams without a read timeout, ended when the
   client goes away); a ``101 Switching Protocols`` from attach or exec start switches
   the connection to a raw two-way relay.

One request at a time per connection (h11 keeps pipelined requests in order);
keep-alive between requests, closed after a refusal that left a body unread, after a
stream and after an upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import traceback
from dataclasses import replace
from typing import Any

import h11

from agentcell.gate._http import MAX_HEAD, end_to_end_headers, receive_event
from agentcell.gate._records import log
from agentcell.gate._relay import PipePool, relay, shutdown_quietly
from agentcell.gate.dockerproxy._config import DockerProxyConfig
from agentcell.gate.dockerproxy._engine import EngineError, EngineStream, ask
from agentcell.gate.dockerproxy._records import (
    BAD_REQUEST,
    BODY_NOT_ALLOWED,
    BODY_TOO_LARGE,
    CL_AND_TE,
    DUPLICATE_CL,
    ENGINE_ERROR,
    FORWARDED,
    INTERNAL_ERROR,
    NOT_FOUND,
    DockerRecord,
    DockerRecordWriter,
)
from agentcell.policy._childbody import (
    ChildUsage,
    Hardened,
    harden_child,
    harden_exec,
    harden_exec_start,
    harden_volume,
)
from agentcell.policy._decision import Decision
from agentcell.policy._dockerapi import (
    BodyKind,
    Kind,
    Request,
    build_target,
    decide_created_volume,
    decide_ownership,
    decide_request,
    error_body,
    filter_event,
    filter_list,
    scope_filters,
    scrub_engine_error,
    scrub_info,
)
from agentcell.policy._enginejson import (
    CONTAINER_CREATE,
    EXEC_CREATE,
    EXEC_START,
    MAX_BODY,
    VOLUME_CREATE,
    Schema,
    decode_engine_json,
)

__all__ = ["MAX_TAR", "DockerProxy"]

MAX_TAR = 256 * 1024 * 1024
"""The largest tar stream copied into a child (``PUT /containers/{id}/archive``)."""
HEAD_TIMEOUT = 30.0  # the first request head of a connection
IDLE_TIMEOUT = 120.0  # between requests of a kept-alive connection, and between body reads
RESPONSE_TIMEOUT = 300.0  # a non-streaming answer (stop waits up to its t)
_JSON = [(b"Content-Type", b"application/json")]
_SCHEMAS: dict[BodyKind, Schema] = {
    BodyKind.CONTAINER_CREATE: CONTAINER_CREATE,
    BodyKind.EXEC_CREATE: EXEC_CREATE,
    BodyKind.EXEC_START: EXEC_START,
    BodyKind.VOLUME_CREATE: VOLUME_CREATE,
}
_LISTS = {"container.list", "network.list", "volume.list"}
_NAMING = {"container.create", "container.rename", "volume.create"}
"""Requests that name an object by a name the agent chose: the name may be someone else's."""
_UPGRADE_HEADERS = [(b"Connection", b"Upgrade"), (b"Upgrade", b"tcp")]


class _Refuse(Exception):
    """Answer the request with ``status`` and a Docker-style error body, and record why."""

    def __init__(self, status: int, decision: Decision, message: str | None = None) -> None:
        super().__init__(decision.reason)
        self.status = status
        self.decision = decision
        self.message = message

    def body(self) -> bytes:
        if self.message is not None:
            return json.dumps({"message": self.message}, ensure_ascii=True).encode("ascii")
        return error_body(self.decision)


def _deny(status: int, reason: str, rule: str = "", message: str | None = None) -> _Refuse:
    return _Refuse(status, Decision(False, reason, rule), message)


def _framing(raw_head: bytes) -> _Refuse | None:
    """What h11 forgives in a request head: repeated Content-Length, CL with TE."""
    lengths = 0
    chunked = False
    for line in raw_head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == b"content-length":
            lengths += 1 + value.count(b",")
        elif name == b"transfer-encoding":
            chunked = True
    if lengths > 1:
        return _deny(400, DUPLICATE_CL)
    if lengths and chunked:
        return _deny(400, CL_AND_TE)
    return None


LINGER_SECONDS = 1.0
LINGER_BYTES = 4 * 1024 * 1024


async def _linger(sock: socket.socket) -> None:
    """Half-close, then read (and drop) what the client still sends, for a moment.

    Closing a socket with unread input makes the kernel send a reset, which can destroy an
    answer the client has not read yet: the 413 for a body over the limit is sent before
    the body has all arrived. Bounded in time and bytes; a client that already closed
    costs one read."""
    shutdown_quietly(sock, socket.SHUT_WR)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_SECONDS
    left = LINGER_BYTES
    with contextlib.suppress(OSError, TimeoutError):
        while left > 0 and (remaining := deadline - loop.time()) > 0:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), remaining)
            if not data:
                return
            left -= len(data)


class _Client:
    """The client side of a connection: its socket and its h11 state."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.loop = asyncio.get_running_loop()
        self.head_request = False

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def head(self, timeout: float) -> tuple[h11.Request, bytes] | None:
        """The next request head and its raw bytes; None when the client is done."""
        raw = bytearray(self.conn.trailing_data[0])
        async with asyncio.timeout(timeout):
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    data = await self.loop.sock_recv(self.sock, 64 * 1024)
                    if len(raw) <= MAX_HEAD:
                        raw += data
                    self.conn.receive_data(data)
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return None
                if isinstance(event, h11.Request):
                    self.head_request = event.method == b"HEAD"
                    end = raw.find(b"\r\n\r\n")
                    return event, bytes(raw[: end if end >= 0 else len(raw)])
                raise h11.RemoteProtocolError("unexpected event")

    async def body(self, limit: int) -> bytes:
        """The whole request body, at most ``limit`` bytes."""
        if self.conn.they_are_waiting_for_100_continue:
            await self.send(h11.InformationalResponse(status_code=100, headers=[]))
        chunks: list[bytes] = []
        size = 0
        while True:
            async with asyncio.timeout(IDLE_TIMEOUT):
                event = await receive_event(self.conn, self.sock)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _deny(413, BODY_TOO_LARGE)
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise _deny(400, BAD_REQUEST)

    async def answer(self, status: int, body: bytes, *, close: bool = False) -> None:
        headers = [*_JSON, (b"Content-Length", b"%d" % len(body))]
        if close:
            headers.append((b"Connection", b"close"))
        events: tuple[h11.Event, ...] = (h11.Response(status_code=status, headers=headers),)
        if not self.head_request:
            events += (h11.Data(data=body),)
        data = b"".join(self.conn.send(event) or b"" for event in (*events, h11.EndOfMessage()))
        await self.loop.sock_sendall(self.sock, data)


class DockerProxy:
    """The per-connection handler, and the state connections share (the create lock)."""

    def __init__(self, config: DockerProxyConfig, records: DockerRecordWriter) -> None:
        self.config = config
        self.records = records
        self.create_lock = asyncio.Lock()
        self.pipes = PipePool()

    def close(self) -> None:
        self.pipes.close()

    async def handle(self, sock: socket.socket) -> None:
        """Serve one connection to its end; closes ``sock``; never raises (but cancels)."""
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # answers go out as they are written
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = _Client(sock)
        try:
            first = True
            while await self._one(client, first):
                first = False
                if client.conn.our_state is not h11.DONE or client.conn.their_state is not h11.DONE:
                    break
                client.conn.start_next_cycle()
        except (OSError, TimeoutError):
            pass
        except Exception:
            log("docker proxy connection failed:\n" + traceback.format_exc().rstrip())
        finally:
            await _linger(sock)
            sock.close()

    async def _one(self, client: _Client, first: bool) -> bool:
        """Serve one request; True if the connection may carry another."""
        try:
            got = await client.head(HEAD_TIMEOUT if first else IDLE_TIMEOUT)
        except (TimeoutError, OSError):
            return False
        except h11.RemoteProtocolError as e:
            record = DockerRecord()
            record.deny(BAD_REQUEST, str(e)[:120])
            record.status = e.error_status_hint
            with contextlib.suppress(Exception):
                await client.answer(record.status, error_body(Decision(False, BAD_REQUEST)))
            self.records.write(record)
            return False
        if got is None:
            return False
        request, raw_head = got
        record = DockerRecord(
            method=request.method.decode("ascii", "replace"),
            path=request.target.decode("ascii", "replace")[:512],
        )
        try:
            return await self._serve(client, request, raw_head, record)
        except _Refuse as refusal:
            record.deny(refusal.decision.reason, refusal.decision.rule)
            record.status = refusal.status
            unread = client.conn.their_state is not h11.DONE
            if client.conn.our_state is h11.SEND_RESPONSE:
                with contextlib.suppress(h11.LocalProtocolError):
                    await client.answer(refusal.status, refusal.body(), close=unread)
                    return not unread
            return False
        except EngineError as e:
            record.reason, record.rule, record.status = ENGINE_ERROR, str(e)[:120], 502
            if client.conn.our_state is h11.SEND_RESPONSE:
                with contextlib.suppress(h11.LocalProtocolError):
                    body = error_body(Decision(False, ENGINE_ERROR))
                    await client.answer(502, body, close=True)
            return False
        except h11.RemoteProtocolError as e:
            record.deny(BAD_REQUEST, str(e)[:120])
            record.status = e.error_status_hint
            if client.conn.our_state is h11.SEND_RESPONSE:
                with contextlib.suppress(h11.LocalProtocolError, OSError):
                    body = error_body(Decision(False, BAD_REQUEST))
                    await client.answer(record.status, body, close=True)
            return False
        except Exception:
            record.reason = INTERNAL_ERROR
            raise
        finally:
            self.records.write(record)

    # -- one request ------------------------------------------------------------------

    async def _serve(
        self, client: _Client, event: h11.Request, raw_head: bytes, record: DockerRecord
    ) -> bool:
        refusal = _framing(raw_head)
        if refusal is not None:
            raise refusal
        headers = event.headers
        declared = next((int(v) for n, v in headers if n == b"content-length"), None)
        chunked = any(n == b"transfer-encoding" for n, _ in headers)
        decided = decide_request(record.method, event.target.decode("ascii", "replace"))
        if isinstance(decided, Decision):
            raise _Refuse(403, decided)
        req = decided
        route = req.route
        record.rule = route.name
        if route.body is BodyKind.NONE:
            if chunked or (declared or 0) > 0:
                raise _deny(400, BODY_NOT_ALLOWED, route.name)
        elif (declared or 0) > (MAX_TAR if route.body is BodyKind.TAR else MAX_BODY):
            raise _deny(413, BODY_TOO_LARGE, route.name)

        body: bytes | None = None
        if route.body not in (BodyKind.NONE, BodyKind.TAR):
            body = await client.body(MAX_BODY)
        elif route.body is BodyKind.NONE:
            await client.body(0)

        if route.ident is not None and route.owned:
            assert route.kind is not None
            req = await self._resolve(req, route.kind, record)
        elif route.ident is not None:
            record.object = route.ident

        if route.scope is not None:
            scoped = scope_filters(
                route.scope,
                req.query.get("filters"),
                tenant=self.config.tenant,
                cell=self.config.cell,
            )
            if isinstance(scoped, Decision):
                raise _Refuse(403, scoped)
            req = replace(req, query={**req.query, "filters": scoped})

        if route.body is BodyKind.CONTAINER_CREATE:
            assert body is not None
            async with self.create_lock:
                hardened = await self._harden_child(body)
                await self._own_volumes(hardened)
                record.allow(FORWARDED, route.name)
                return await self._forward(client, event, req, record, hardened.raw)
        if body is not None:
            forward = self._harden(route.body, body)
            record.allow(FORWARDED, route.name)
            return await self._forward(client, event, req, record, forward.raw)
        record.allow(FORWARDED, route.name)
        return await self._forward(client, event, req, record, None)

    # -- ownership --------------------------------------------------------------------

    async def _resolve(self, req: Request, kind: Kind, record: DockerRecord) -> Request:
        """The request naming the full id of the owned object it names; else 404."""
        ident = req.route.ident
        assert ident is not None
        record.object = ident
        engine, version = self.config.engine_socket, req.version
        missing = _deny(404, NOT_FOUND, str(kind), f"No such {kind}: {ident}")
        full: object = None
        labels: object = None
        if kind is Kind.CONTAINER or kind is Kind.EXEC:
            container: object = ident
            if kind is Kind.EXEC:
                status, doc = await ask(
                    engine, "GET", build_target(f"/exec/{ident}/json", version, {})
                )
                if status != 200 or not isinstance(doc, dict):
                    raise missing
                full, container = doc.get("ID"), doc.get("ContainerID")
                if not isinstance(container, str) or not container:
                    raise missing
            status, doc = await ask(
                engine, "GET", build_target(f"/containers/{container}/json", version, {})
            )
            if status != 200 or not isinstance(doc, dict):
                raise missing
            config = doc.get("Config")
            labels = config.get("Labels") if isinstance(config, dict) else None
            if kind is Kind.CONTAINER:
                full = doc.get("Id")
        elif kind is Kind.VOLUME:
            status, doc = await ask(engine, "GET", build_target(f"/volumes/{ident}", version, {}))
            if status != 200 or not isinstance(doc, dict):
                raise missing
            full, labels = doc.get("Name"), doc.get("Labels")
        elif kind is Kind.NETWORK:
            status, doc = await ask(engine, "GET", build_target(f"/networks/{ident}", version, {}))
            if status != 200 or not isinstance(doc, dict):
                raise missing
            full, labels = doc.get("Id"), doc.get("Labels")
        else:
            raise missing
        if not isinstance(full, str) or not full:
            raise missing
        owned = decide_ownership(
            Kind.CONTAINER if kind is Kind.EXEC else kind,
            labels,
            tenant=self.config.tenant,
            cell=self.config.cell,
        )
        if not owned.allow:
            raise _Refuse(404, owned, f"No such {kind}: {ident}")
        record.object = full
        return req.with_ident(full)

    # -- bodies -----------------------------------------------------------------------

    def _decode(self, kind: BodyKind, body: bytes) -> dict[str, Any]:
        decoded = decode_engine_json(body, _SCHEMAS[kind])
        if isinstance(decoded, Decision):
            raise _Refuse(400 if decoded.reason.startswith(("invalid", "body")) else 403, decoded)
        return decoded

    def _harden(self, kind: BodyKind, body: bytes) -> Hardened:
        decoded = self._decode(kind, body)
        ctx = self.config.context(ChildUsage())
        result: Hardened | Decision
        if kind is BodyKind.EXEC_CREATE:
            result = harden_exec(decoded, cell=ctx)
        elif kind is BodyKind.EXEC_START:
            result = harden_exec_start(decoded)
        else:
            result = harden_volume(decoded, cell=ctx)
        if isinstance(result, Decision):
            raise _Refuse(403, result)
        return result

    async def _harden_child(self, body: bytes) -> Hardened:
        decoded = self._decode(BodyKind.CONTAINER_CREATE, body)
        result = harden_child(decoded, cell=self.config.context(await self._usage()))
        if isinstance(result, Decision):
            raise _Refuse(403, result)
        return result

    async def _usage(self) -> ChildUsage:
        """What the cell's existing children hold, counted from the engine (their labels)."""
        engine = self.config.engine_socket
        filters = scope_filters(
            Kind.CONTAINER, None, tenant=self.config.tenant, cell=self.config.cell
        )
        assert isinstance(filters, str)
        target = build_target("/containers/json", "1.41", {"all": "1", "filters": filters})
        status, items = await ask(engine, "GET", target)
        if status != 200 or not isinstance(items, list):
            raise EngineError(f"cannot count the cell's children: {status}")
        children = filter_list(
            Kind.CONTAINER, items, tenant=self.config.tenant, cell=self.config.cell
        )
        memory = nano_cpus = 0
        for child in children:
            status, doc = await ask(
                engine, "GET", build_target(f"/containers/{child.get('Id')}/json", "1.41", {})
            )
            if status == 404:
                continue  # removed since the list
            if status != 200 or not isinstance(doc, dict):
                raise EngineError(f"cannot inspect a child: {status}")
            host = doc.get("HostConfig") or {}
            memory += int(host.get("Memory") or 0)
            nano_cpus += int(host.get("NanoCpus") or 0)
        return ChildUsage(containers=len(children), nano_cpus=nano_cpus, memory=memory)

    async def _own_volumes(self, hardened: Hardened) -> None:
        """Make each named volume a child mounts exist, and be the cell's."""
        ctx = self.config.context(ChildUsage())
        for name in hardened.volumes:
            made = harden_volume({"Name": name}, cell=ctx)
            if isinstance(made, Decision):
                raise _Refuse(403, made)
            status, doc = await ask(
                self.config.engine_socket,
                "POST",
                build_target("/volumes/create", "1.41", {}),
                made.raw,
            )
            if status not in (200, 201) or not isinstance(doc, dict):
                raise EngineError(f"cannot create volume {name}: {status}")
            owned = decide_ownership(
                Kind.VOLUME, doc.get("Labels"), tenant=self.config.tenant, cell=self.config.cell
            )
            if not owned.allow:
                raise _Refuse(403, owned, f"volume {name} is not the cell's")

    # -- forwarding -------------------------------------------------------------------

    async def _forward(
        self,
        client: _Client,
        event: h11.Request,
        req: Request,
        record: DockerRecord,
        body: bytes | None,
    ) -> bool:
        route = req.route
        wants_upgrade = (
            route.upgrades
            and any(n == b"upgrade" for n, _ in event.headers)
            and client.conn.their_state is not h11.SEND_BODY
        )
        extra: list[tuple[bytes, bytes]] = []
        agent = next((v for n, v in event.headers if n == b"user-agent"), None)
        if agent is not None:
            extra.append((b"User-Agent", agent))
        if wants_upgrade:
            extra += _UPGRADE_HEADERS
        engine = await EngineStream.open(self.config.engine_socket)
        try:
            if route.body is BodyKind.TAR:
                await self._send_tar(client, engine, req, extra)
            else:
                await engine.request(
                    route.method, req.target, body=body, extra=extra, close=not wants_upgrade
                )
            return await self._respond(client, engine, req, record)
        finally:
            engine.close()

    async def _send_tar(
        self, client: _Client, engine: EngineStream, req: Request, extra: list[tuple[bytes, bytes]]
    ) -> None:
        headers = [
            (b"Host", b"docker"),
            (b"Content-Type", b"application/x-tar"),
            (b"Transfer-Encoding", b"chunked"),
            *extra,
            (b"Connection", b"close"),
        ]
        await engine.send(h11.Request(method="PUT", target=req.target, headers=headers))
        size = 0
        while True:
            async with asyncio.timeout(IDLE_TIMEOUT):
                got = await receive_event(client.conn, client.sock)
            if isinstance(got, h11.Data):
                size += len(got.data)
                if size > MAX_TAR:
                    raise _deny(413, BODY_TOO_LARGE, req.route.name)
                await engine.send(h11.Data(data=got.data))
            elif isinstance(got, h11.EndOfMessage):
                await engine.send(h11.EndOfMessage())
                return
            else:
                raise _deny(400, BAD_REQUEST)

    async def _respond(
        self, client: _Client, engine: EngineStream, req: Request, record: DockerRecord
    ) -> bool:
        route = req.route
        streams = route.streams or route.upgrades
        async with asyncio.timeout(None if streams else RESPONSE_TIMEOUT):
            while True:
                head = await engine.next_event()
                if isinstance(head, h11.InformationalResponse) and head.status_code == 101:
                    record.status = 101
                    return await self._switch(client, engine, head)
                if isinstance(head, h11.Response):
                    break
                if not isinstance(head, h11.InformationalResponse):
                    raise EngineError(f"unexpected engine event {type(head).__name__}")
        record.status = head.status_code
        if route.name in _NAMING and (head.status_code >= 400 or route.name == "volume.create"):
            return await self._respond_naming(client, engine, req, record, head)
        transform = route.name in _LISTS or route.scrub
        if transform and head.status_code == 200:
            async with asyncio.timeout(RESPONSE_TIMEOUT):
                raw = await _rest(engine)
            payload = self._transform(req, raw)
            headers = [
                (n, v)
                for n, v in end_to_end_headers(head.headers.raw_items())
                if n.lower() not in (b"content-length", b"transfer-encoding")
            ]
            headers.append((b"Content-Length", b"%d" % len(payload)))
            await client.send(h11.Response(status_code=200, headers=headers, reason=head.reason))
            await client.send(h11.Data(data=payload))
            await client.send(h11.EndOfMessage())
            return True
        headers = [
            (n, v)
            for n, v in end_to_end_headers(head.headers.raw_items())
            if n.lower() != b"transfer-encoding"
        ]
        if streams:
            headers.append((b"Connection", b"close"))
        await client.send(
            h11.Response(status_code=head.status_code, headers=headers, reason=head.reason)
        )
        events = route.name == "system.events" and head.status_code == 200
        if not streams:
            async with asyncio.timeout(RESPONSE_TIMEOUT):
                await self._copy_body(client, engine, events=False)
            return True
        # No read timeout: a follow or an event stream lasts as long as the client wants.
        # A client that went away is seen at the next write (EPIPE/ECONNRESET); a half-close
        # from it is not the end of a stream it still reads.
        await self._copy_body(client, engine, events=events)
        return False

    async def _respond_naming(
        self,
        client: _Client,
        engine: EngineStream,
        req: Request,
        record: DockerRecord,
        head: h11.Response,
    ) -> bool:
        """The answer to a request naming a name, which may be another tenant's.

        A volume created is relayed only if it is the cell's (``decide_created_volume``):
        the engine answers a create naming an existing volume with that volume. An error
        goes back without the ids in its message (``scrub_engine_error``): "already in use
        by container <id>" names a container that may be another tenant's.
        """
        async with asyncio.timeout(RESPONSE_TIMEOUT):
            raw = await _rest(engine)
        try:
            doc: object = json.loads(raw)
        except ValueError:
            doc = None
        if head.status_code < 400:
            owned = decide_created_volume(doc, tenant=self.config.tenant, cell=self.config.cell)
            if not owned.allow:
                raise _Refuse(409, owned)
            payload = raw
        else:
            payload = json.dumps(scrub_engine_error(doc), ensure_ascii=True).encode("ascii")
        headers = [
            (n, v)
            for n, v in end_to_end_headers(head.headers.raw_items())
            if n.lower() not in (b"content-length", b"transfer-encoding")
        ]
        headers.append((b"Content-Length", b"%d" % len(payload)))
        status = head.status_code
        await client.send(h11.Response(status_code=status, headers=headers, reason=head.reason))
        await client.send(h11.Data(data=payload))
        await client.send(h11.EndOfMessage())
        return True

    async def _copy_body(self, client: _Client, engine: EngineStream, *, events: bool) -> None:
        pending = b""
        while True:
            got = await engine.next_event()
            if isinstance(got, h11.Data):
                if not events:
                    await client.send(h11.Data(data=got.data))
                    continue
                pending += got.data
                *lines, pending = pending.split(b"\n")
                kept = [line + b"\n" for line in lines if self._event_ok(line)]
                if kept:
                    await client.send(h11.Data(data=b"".join(kept)))
                if len(pending) > 1024 * 1024:
                    raise EngineError("event too large")
            elif isinstance(got, h11.EndOfMessage):
                await client.send(h11.EndOfMessage())
                return
            else:
                raise EngineError(f"unexpected engine event {type(got).__name__}")

    def _event_ok(self, line: bytes) -> bool:
        try:
            event = json.loads(line)
        except ValueError:
            return False
        return filter_event(event, tenant=self.config.tenant, cell=self.config.cell)

    def _transform(self, req: Request, raw: bytes) -> bytes:
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise EngineError("engine answer not JSON") from e
        tenant, cell = self.config.tenant, self.config.cell
        out: object
        if req.route.scrub:
            out = scrub_info(doc if isinstance(doc, dict) else {}, runtimes=self.config.runtimes)
        elif req.route.name == "volume.list":
            volumes = doc.get("Volumes") if isinstance(doc, dict) else None
            out = {
                "Volumes": filter_list(Kind.VOLUME, volumes or [], tenant=tenant, cell=cell),
                "Warnings": None,
            }
        else:
            kind = Kind.CONTAINER if req.route.name == "container.list" else Kind.NETWORK
            out = filter_list(kind, doc if isinstance(doc, list) else [], tenant=tenant, cell=cell)
        return json.dumps(out, separators=(",", ":")).encode() + b"\n"

    async def _switch(
        self, client: _Client, engine: EngineStream, head: h11.InformationalResponse
    ) -> bool:
        """Relay a 101 to the client, then raw bytes both ways until both ends are done."""
        headers = [
            *[
                (n, v)
                for n, v in end_to_end_headers(head.headers.raw_items())
                if n.lower() not in (b"content-length", b"transfer-encoding")
            ],
            *_UPGRADE_HEADERS,
        ]
        await client.send(
            h11.InformationalResponse(status_code=101, headers=headers, reason=head.reason)
        )
        up_extra, _ = client.conn.trailing_data
        down_extra, _ = engine.conn.trailing_data
        loop = client.loop
        if up_extra:
            await loop.sock_sendall(engine.sock, bytes(up_extra))
        if down_extra:
            await loop.sock_sendall(client.sock, bytes(down_extra))
        await relay(client.sock, engine.sock, self.pipes)
        return False


async def _rest(engine: EngineStream) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        got = await engine.next_event()
        if isinstance(got, h11.Data):
            size += len(got.data)
            if size > 32 * 1024 * 1024:
                raise EngineError("engine answer too large")
            chunks.append(got.data)
        elif isinstance(got, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            raise EngineError(f"unexpected engine event {type(got).__name__}")
