"""The control port: how the control plane loads a policy into a running gate.

``PUT /v1/policy`` (wire-form JSON, bearer token) validates and swaps the policy at
once; ``GET /v1/policy`` says which one is loaded; ``GET /healthz`` needs no token.
A refused policy leaves the last good one in force. One request per connection, one
task per connection on the gate's event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import traceback
from typing import Any

import h11

from agentcell.gate._http import MAX_HEAD, close_gracefully, receive_event, simple_response
from agentcell.gate._records import log
from agentcell.gate.egress._state import GateState
from agentcell.policy._egress import EgressPolicy, PolicyError

__all__ = ["MAX_POLICY_BYTES", "Control"]

MAX_POLICY_BYTES = 1024 * 1024
_TIMEOUT = 10.0


class Control:
    """Serves control-port connections; ``handle`` runs in its own thread per connection."""

    def __init__(self, state: GateState, token: str) -> None:
        self._state = state
        self._token = token.encode("utf-8")

    async def handle(self, sock: socket.socket) -> None:
        """Serve one request and close ``sock``; never raises (but cancels)."""
        loop = asyncio.get_running_loop()
        try:
            sock.setblocking(False)
            async with asyncio.timeout(_TIMEOUT):
                status, body = await self._serve(sock)
                if status:
                    await loop.sock_sendall(
                        sock,
                        simple_response(status, json.dumps(body), content_type="application/json"),
                    )
        except (OSError, TimeoutError):
            pass
        except Exception:
            log("control connection failed:\n" + traceback.format_exc().rstrip())
        finally:
            await close_gracefully(sock)

    async def _serve(self, sock: socket.socket) -> tuple[int, dict[str, Any]]:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            request = await receive_event(conn, sock)
        except h11.RemoteProtocolError:
            return 400, {"error": "bad request"}
        if isinstance(request, h11.ConnectionClosed):
            return 0, {}
        if not isinstance(request, h11.Request):
            return 400, {"error": "bad request"}
        path = request.target.split(b"?", 1)[0]
        if request.method == b"GET" and path == b"/healthz":
            return 200, {"status": "ok"}
        if not self._authorised(request):
            return 401, {"error": "unauthorised"}
        if path != b"/v1/policy" or request.method not in (b"GET", b"PUT"):
            return 404, {"error": "not found"}
        if request.method == b"GET":
            return 200, {"digest": self._state.digest, "loaded": self._state.loaded}
        if conn.they_are_waiting_for_100_continue:
            continue_ = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
            await asyncio.get_running_loop().sock_sendall(sock, continue_ or b"")
        body = bytearray()
        while True:
            try:
                event = await receive_event(conn, sock)
            except h11.RemoteProtocolError:
                return 400, {"error": "bad request"}
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_POLICY_BYTES:
                    return 413, {"error": f"policy larger than {MAX_POLICY_BYTES} bytes"}
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return 400, {"error": "bad request"}
        return self._load(bytes(body))

    def _authorised(self, request: h11.Request) -> bool:
        values = [value for name, value in request.headers if name == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, credential = values[0].partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self._token)

    def _load(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as e:
            log(f"policy refused, keeping the last good one: not JSON: {e}")
            return 400, {"error": f"not JSON: {e}"}
        try:
            policy = EgressPolicy.from_json(data)
            digest = policy.digest()
        except PolicyError as e:
            log(f"policy refused, keeping the last good one: {e}")
            return 400, {"error": str(e)}
        except Exception as e:
            log(
                "policy refused (the loader failed), keeping the last good one:\n"
                + traceback.format_exc().rstrip()
            )
            return 400, {"error": f"invalid policy: {type(e).__name__}"}
        closed = self._state.load(policy, digest)
        log(
            f"policy {digest} loaded ({len(policy.allow)} allow, {len(policy.deny)} deny, "
            f"{len(policy.resolve)} resolve); {closed} open flows closed"
        )
        return 200, {"digest": digest}
