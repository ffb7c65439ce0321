"""Active health probes of a cell's agent, run from the host against the container."""

from __future__ import annotations

import http.client
import socket

from agentcell.spec import Health

__all__ = ["probe"]


def probe(health: Health, ip: str) -> tuple[bool, str]:
    """One probe attempt: (passed, what happened). Exec probes are run by the caller."""
    timeout = health.timeout
    if health.http is not None:
        conn = http.client.HTTPConnection(ip, health.http.port, timeout=timeout)
        try:
            conn.request("GET", health.http.path, headers={"User-Agent": "agentcell-probe"})
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException) as e:
            return False, f"http {health.http.path}: {e.__class__.__name__}: {e}"
        finally:
            conn.close()
        ok = 200 <= status < 400
        return ok, f"http {health.http.path}: status {status}"
    if health.tcp is not None:
        try:
            with socket.create_connection((ip, health.tcp.port), timeout=timeout):
                return True, f"tcp {health.tcp.port}: connected"
        except OSError as e:
            return False, f"tcp {health.tcp.port}: {e}"
    return False, "no probe of this kind runs from the host"
