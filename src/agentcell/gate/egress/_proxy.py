"""The proxy port: one client connection, one request, one decision record.

``CONNECT host:port`` opens a tunnel (after the SNI check on TLS ports); an
absolute-form ``http://`` request is forwarded in origin-form with hop-by-hop
headers removed. Both are parsed strictly with h11, decided by ``GateState`` and
dialled at exactly the decided address. Anything else is refused. Every path writes
its record once and closes every socket it opened. Each connection is one task on
the gate's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import traceback

import h11

from agentcell.gate._http import (
    MAX_HEAD,
    BadAuthority,
    close_gracefully,
    end_to_end_headers,
    receive_event,
    simple_response,
    split_authority,
)
from agentcell.gate._records import (
    BAD_AUTHORITY,
    BAD_REQUEST,
    BAD_UPSTREAM_RESPONSE,
    DIAL_FAILED,
    HOST_MISMATCH,
    HTTPS_ABSOLUTE_FORM,
    INTERNAL_ERROR,
    NO_CLIENT_HELLO,
    NO_SNI,
    NOT_A_PROXY_REQUEST,
    NOT_TLS,
    SNI_MISMATCH,
    UNSUPPORTED_SCHEME,
    Record,
    RecordWriter,
    log,
)
from agentcell.gate._relay import PipePool, relay, shutdown_quietly
from agentcell.gate.egress._state import Flow, GateState
from agentcell.gate.egress._tls import MAX_HELLO_BYTES, HelloStatus, parse_client_hello
from agentcell.policy._egress import EgressDecision, IPAddress, normalise_host

__all__ = ["Proxy"]

HEAD_TIMEOUT = 30.0  # to receive a complete request head
HELLO_TIMEOUT = 10.0  # to receive a complete ClientHello after "200 Connection established"
DIAL_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0  # silence allowed while forwarding a plain HTTP request
SEND_TIMEOUT = 30.0  # for the gate's own short answers
_RECV = 64 * 1024
_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


class _Refuse(Exception):
    """Answer ``status`` with ``reason`` and record a denial."""

    def __init__(self, status: int, reason: str, rule: str = "") -> None:
        super().__init__(reason)
        self.status, self.reason, self.rule = status, reason, rule


class _Silent(Exception):
    """The client sent no request at all: nothing to answer, nothing to record."""


class Proxy:
    """Serves proxy-port connections: ``handle`` is one task per connection."""

    def __init__(self, state: GateState, records: RecordWriter, tls_ports: frozenset[int]):
        self._state = state
        self._records = records
        self._tls_ports = tls_ports
        self._pipes = PipePool()

    def close(self) -> None:
        self._pipes.close()

    async def handle(self, client: socket.socket) -> None:
        """Serve one connection to its end; closes ``client``; never raises (but cancels)."""
        record = Record()
        graceful = True
        try:
            client.setblocking(False)
            graceful = await self._serve(client, record)
        except _Refuse as refusal:
            record.deny(refusal.reason, refusal.rule)
            with contextlib.suppress(OSError):
                await _send_now(client, simple_response(refusal.status, f"{refusal.reason}\n"))
        except _Silent:
            record.written = True
        except (OSError, TimeoutError):
            graceful = False  # a peer went away or stalled: the record says how far it got
        except Exception:
            log("proxy connection failed:\n" + traceback.format_exc().rstrip())
            record.reason = INTERNAL_ERROR  # keeps the decision and rule it had reached
            graceful = False
        finally:
            self._records.write(record)
            if graceful:
                await close_gracefully(client)
            else:
                client.close()

    # -- request head -------------------------------------------------------------

    async def _serve(self, client: socket.socket, record: Record) -> bool:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        deadline = asyncio.get_running_loop().time() + HEAD_TIMEOUT
        try:
            async with asyncio.timeout_at(deadline):
                event = await receive_event(conn, client)
        except (TimeoutError, OSError):
            if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                raise _Silent from None
            raise _Refuse(400, BAD_REQUEST) from None
        except h11.RemoteProtocolError:
            raise _Refuse(400, BAD_REQUEST) from None
        if isinstance(event, h11.ConnectionClosed):
            raise _Silent
        if not isinstance(event, h11.Request):
            raise _Refuse(400, BAD_REQUEST)
        record.method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        if event.method == b"CONNECT":
            return await self._connect(client, conn, target, record, deadline)
        return await self._forward(client, conn, event, target, record)

    # -- CONNECT ------------------------------------------------------------------

    async def _admit(
        self, client: socket.socket, record: Record, host: str, port: int
    ) -> tuple[Flow, EgressDecision]:
        """Decide; when allowed, register the flow (so a reload can close it) and record it."""
        decision, generation = await self._state.decide(host, port)
        if not decision.allow or decision.address is None:
            raise _Refuse(403, decision.reason, decision.rule)
        flow = Flow(client, record, host, port, decision.address)
        refused = self._state.admit(flow, generation)
        if refused is not None:
            raise _Refuse(403, refused.reason, refused.rule)
        record.address = str(decision.address)
        record.allow(decision.reason, decision.rule)
        return flow, decision

    async def _connect(
        self,
        client: socket.socket,
        conn: h11.Connection,
        target: str,
        record: Record,
        deadline: float,
    ) -> bool:
        try:
            host, port = split_authority(target, None)
        except BadAuthority:
            record.host = target
            raise _Refuse(400, BAD_AUTHORITY) from None
        record.host, record.port = host, port
        try:
            end = conn.next_event()  # almost always already here, right behind the head
            if end is h11.NEED_DATA:
                async with asyncio.timeout_at(deadline):
                    end = await receive_event(conn, client)
        except (TimeoutError, OSError, h11.RemoteProtocolError):
            raise _Refuse(400, BAD_REQUEST) from None
        if not isinstance(end, h11.EndOfMessage):
            raise _Refuse(400, BAD_REQUEST)  # CONNECT carries no body
        flow, decision = await self._admit(client, record, host, port)
        try:
            return await self._tunnel(client, conn, flow, decision)
        finally:
            self._state.release(flow)
            if flow.end_reason is not None:
                record.deny(flow.end_reason, flow.end_rule)

    async def _tunnel(
        self, client: socket.socket, conn: h11.Connection, flow: Flow, decision: EgressDecision
    ) -> bool:
        record = flow.record
        # Written by hand: h11 would add "Connection: close" for HTTP/1.0 clients.
        await _send_now(client, _ESTABLISHED)
        buffered = bytes(conn.trailing_data[0])  # what the client sent after the head
        if flow.port in self._tls_ports:
            refusal, buffered = await _check_hello(client, buffered, flow.host)
            if refusal is not None:
                record.deny(refusal)  # the gate's own check refused, not a rule
                return False
        assert decision.address is not None
        try:
            upstream = await _dial(decision.address, flow.port)
        except OSError:
            record.allow(DIAL_FAILED, decision.rule)
            return False
        try:
            if not flow.attach(upstream):
                return False
            _tune(client)
            if buffered:
                await _send_now(upstream, buffered)
            up, down = await relay(client, upstream, self._pipes)
            record.bytes_up, record.bytes_down = len(buffered) + up, down
        finally:
            upstream.close()
        return False  # the tunnel is over in both directions: just close

    # -- absolute-form http:// ------------------------------------------------------

    async def _forward(
        self,
        client: socket.socket,
        conn: h11.Connection,
        request: h11.Request,
        target: str,
        record: Record,
    ) -> bool:
        scheme, sep, rest = target.partition("://")
        if not sep:
            raise _Refuse(400, NOT_A_PROXY_REQUEST)
        if scheme.lower() == "https":
            raise _Refuse(400, HTTPS_ABSOLUTE_FORM)
        if scheme.lower() != "http":
            raise _Refuse(400, UNSUPPORTED_SCHEME)
        cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, path = rest[:cut], rest[cut:]
        if "#" in path:
            raise _Refuse(400, BAD_REQUEST)
        if not path.startswith("/"):
            path = "/" + path
        try:
            host, port = split_authority(authority, 80)
        except BadAuthority:
            record.host = authority
            raise _Refuse(400, BAD_AUTHORITY) from None
        record.host, record.port = host, port
        host_header = _host_header(request, host, port)
        flow, decision = await self._admit(client, record, host, port)
        try:
            return await self._exchange(client, conn, request, flow, decision, path, host_header)
        finally:
            self._state.release(flow)
            if flow.end_reason is not None:
                record.deny(flow.end_reason, flow.end_rule)

    async def _exchange(
        self,
        client: socket.socket,
        conn: h11.Connection,
        request: h11.Request,
        flow: Flow,
        decision: EgressDecision,
        path: str,
        host_header: bytes,
    ) -> bool:
        loop = asyncio.get_running_loop()
        record = flow.record
        assert decision.address is not None
        try:
            upstream = await _dial(decision.address, flow.port)
        except OSError:
            record.allow(DIAL_FAILED, decision.rule)
            await loop.sock_sendall(client, simple_response(502, f"{DIAL_FAILED}\n"))
            return True
        counted = _Counted(upstream)
        try:
            if not flow.attach(upstream):
                return False
            headers = [
                (name, value)
                for name, value in end_to_end_headers(request.headers.raw_items())
                if name.lower() not in (b"host", b"expect")
            ]
            if any(name.lower() == b"transfer-encoding" for name, _ in headers):
                headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            headers = [(b"Host", host_header), *headers, (b"Connection", b"close")]
            up = h11.Connection(h11.CLIENT, max_incomplete_event_size=4 * MAX_HEAD)
            await counted.send(
                up.send(h11.Request(method=request.method, target=path.encode(), headers=headers))
            )
            if conn.they_are_waiting_for_100_continue:
                await _send(client, conn, h11.InformationalResponse(status_code=100, headers=[]))
            # The request body, streamed.
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT):
                        event = await receive_event(conn, client)
                except (h11.RemoteProtocolError, OSError, TimeoutError):
                    record.allow(BAD_REQUEST, decision.rule)
                    return False
                if isinstance(event, h11.Data):
                    await counted.send(up.send(h11.Data(data=event.data)))
                elif isinstance(event, h11.EndOfMessage):
                    await counted.send(up.send(h11.EndOfMessage()))
                    break
                else:
                    record.allow(BAD_REQUEST, decision.rule)
                    return False
            return await _relay_response(client, conn, up, counted, record, decision)
        finally:
            record.bytes_up, record.bytes_down = counted.sent, counted.received
            shutdown_quietly(upstream)
            upstream.close()


async def _relay_response(
    client: socket.socket,
    conn: h11.Connection,
    up: h11.Connection,
    counted: _Counted,
    record: Record,
    decision: EgressDecision,
) -> bool:
    """Stream the upstream response to the client, re-framed by h11; never follows it."""
    started = False
    while True:
        try:
            event: h11.Event | type[h11.PAUSED] | None = await counted.receive_event(up)
        except (h11.RemoteProtocolError, OSError, TimeoutError):
            event = None
        if isinstance(event, h11.InformationalResponse):
            if event.status_code not in (100, 101):  # 100: ours was sent; 101: never asked
                await _send(
                    client,
                    conn,
                    h11.InformationalResponse(
                        status_code=event.status_code,
                        headers=end_to_end_headers(event.headers.raw_items()),
                        reason=event.reason,
                    ),
                )
                continue
            if event.status_code == 100:
                continue
        elif isinstance(event, h11.Response) and not started:
            started = True
            headers = [*end_to_end_headers(event.headers.raw_items()), (b"Connection", b"close")]
            await _send(
                client,
                conn,
                h11.Response(status_code=event.status_code, headers=headers, reason=event.reason),
            )
            continue
        elif isinstance(event, h11.Data) and started:
            await _send(client, conn, h11.Data(data=event.data))
            continue
        elif isinstance(event, h11.EndOfMessage) and started:
            await _send(client, conn, h11.EndOfMessage())
            return True
        # Anything else: a broken, switched or truncated upstream answer.
        record.allow(BAD_UPSTREAM_RESPONSE, decision.rule)
        if not started:
            await asyncio.get_running_loop().sock_sendall(
                client, simple_response(502, f"{BAD_UPSTREAM_RESPONSE}\n")
            )
            return True
        return False  # mid-body: cut the client off so it sees the truncation


async def _send_now(sock: socket.socket, data: bytes) -> None:
    """Send ``data``: at once when the socket takes it all (the usual case), else waiting."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        async with asyncio.timeout(SEND_TIMEOUT):
            await asyncio.get_running_loop().sock_sendall(sock, data[sent:])


async def _send(client: socket.socket, conn: h11.Connection, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        async with asyncio.timeout(IDLE_TIMEOUT):
            await asyncio.get_running_loop().sock_sendall(client, data)


async def _check_hello(
    client: socket.socket, buffered: bytes, host: str
) -> tuple[str | None, bytes]:
    """Read until a whole ClientHello; a refusal reason unless its SNI names ``host``."""
    loop = asyncio.get_running_loop()
    data = bytearray(buffered)
    try:
        async with asyncio.timeout(HELLO_TIMEOUT):
            while True:
                hello = parse_client_hello(bytes(data))
                if hello.status is HelloStatus.HELLO:
                    break
                if hello.status is HelloStatus.NOT_TLS or len(data) >= MAX_HELLO_BYTES:
                    return NOT_TLS, b""
                chunk = await loop.sock_recv(client, MAX_HELLO_BYTES - len(data))
                if not chunk:
                    return NO_CLIENT_HELLO, b""
                data += chunk
    except (TimeoutError, OSError):
        return NO_CLIENT_HELLO, b""
    try:
        wanted = normalise_host(host)
    except ValueError:
        return SNI_MISMATCH, b""
    if hello.sni is None:
        # A client names no server when it dials an address; a name needs its SNI.
        return (None, bytes(data)) if not isinstance(wanted, str) else (NO_SNI, b"")
    try:
        named = normalise_host(hello.sni)
    except ValueError:
        return SNI_MISMATCH, b""
    if named != wanted:
        return SNI_MISMATCH, b""
    return None, bytes(data)


class _Counted:
    """An upstream socket whose bytes are counted both ways."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = 0
        self.received = 0

    async def send(self, data: bytes | None) -> None:
        if data:
            async with asyncio.timeout(IDLE_TIMEOUT):
                await asyncio.get_running_loop().sock_sendall(self.sock, data)
            self.sent += len(data)

    async def receive_event(self, conn: h11.Connection) -> h11.Event | type[h11.PAUSED]:
        loop = asyncio.get_running_loop()
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            async with asyncio.timeout(IDLE_TIMEOUT):
                data = await loop.sock_recv(self.sock, _RECV)
            self.received += len(data)
            conn.receive_data(data)


def _host_header(request: h11.Request, host: str, port: int) -> bytes:
    """The Host header to send upstream; refuses one naming another host than the target."""
    values = [value for name, value in request.headers if name == b"host"]
    if len(values) > 1:
        raise _Refuse(400, BAD_REQUEST)
    if not values:
        return (host if port == 80 else f"{host}:{port}").encode("ascii")
    try:
        target = normalise_host(host)
    except ValueError:
        return values[0]  # the decision function refuses this host, with its own reason
    try:
        named_host, named_port = split_authority(values[0].decode("ascii"), 80)
        named = normalise_host(named_host)
    except (BadAuthority, UnicodeDecodeError, ValueError):
        raise _Refuse(403, HOST_MISMATCH) from None
    if named != target or named_port != port:
        raise _Refuse(403, HOST_MISMATCH)
    return values[0]


async def _dial(address: IPAddress, port: int) -> socket.socket:
    """Connect to exactly ``address`` (a literal: nothing is resolved here)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        async with asyncio.timeout(DIAL_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, (str(address), port))
        _tune(sock)
    except TimeoutError:
        sock.close()
        raise OSError("dial timed out") from None
    except BaseException:
        sock.close()
        raise
    return sock


def _tune(sock: socket.socket) -> None:
    """No Nagle delay: the tunnel forwards what arrives, as it arrives."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
