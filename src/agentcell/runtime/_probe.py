"""Active health probes of a cell's agent, run from the host against the container."""

from __future__ import annotations

import http.client
import socket

from agentcell.plan import ObservedContainer
from agentcell.policy import DOCKER_PROXY_PORT, GATE_CONTROL_PORT, is_egress_network
from agentcell.spec import Health

__all__ = ["probe", "probe_sidecar"]

SIDECAR_TIMEOUT = 1.0


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


def probe_sidecar(tenant: str, sidecar: ObservedContainer) -> tuple[bool, str]:
    """One liveness probe of a running sidecar, from the host: (answered, what happened).

    The egress gate answers ``GET /healthz`` on its control port (egress network); the
    docker proxy answers ``GET /_ping`` on the cell network. A hung process still lets
    the kernel accept the connection, so only an HTTP answer counts.
    """
    if sidecar.role == "egress":
        ips = [ip for name, ip in sidecar.addresses if is_egress_network(tenant, name)]
        port, path = GATE_CONTROL_PORT, "/healthz"
    elif sidecar.role == "dockerproxy":
        ips = [ip for _, ip in sidecar.addresses]
        port, path = DOCKER_PROXY_PORT, "/_ping"
    else:
        return False, f"no liveness probe for role {sidecar.role!r}"
    if not ips:
        return False, f"{sidecar.role}: no address to probe"
    conn = http.client.HTTPConnection(ips[0], port, timeout=SIDECAR_TIMEOUT)
    try:
        conn.request("GET", path, headers={"User-Agent": "agentcell-probe"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return False, f"{sidecar.role} {path}: {e.__class__.__name__}: {e}"
    finally:
        conn.close()
    return status == 200, f"{sidecar.role} {path}: status {status}"
