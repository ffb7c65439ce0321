"""agentcell demo agent: a health endpoint, a workspace heartbeat and an egress probe.

Standard library only; runs as any uid under a read-only root filesystem. Environment:

    AGENT_HEALTH_PORT        port of ``GET /healthz`` -> 200 ``ok`` (default 8080)
    AGENT_HEARTBEAT_SECONDS  period of the heartbeat (default 5); ``/workspace/heartbeat``
                             holds "<unix time> <count>" and is replaced atomically
    AGENT_PROBE_SECONDS      period of the egress probe (default 15)
    AGENT_PROBE_URL          what the probe fetches (default http://api.allowed.test/)

The probe runs only when ``HTTP_PROXY``/``http_proxy`` is set (urllib sends through it);
without a proxy the agent never resolves a name nor sends a packet. SIGTERM or SIGINT
stops it within a second. Logs are timestamped lines on stdout.
"""

from __future__ import annotations

import http.client
import http.server
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

WORKSPACE = Path("/workspace")
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}

log = logging.getLogger("agent")


class HealthHandler(http.server.BaseHTTPRequestHandler):
    """Answers ``GET /healthz`` with 200 ``ok``; everything else is 404."""

    def do_GET(self) -> None:
        status, body = (200, b"ok") if self.path == "/healthz" else (404, b"not found")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: health checks arrive every few seconds."""


class Heartbeat:
    """Writes the heartbeat file; logs once each time the workspace stops or starts working."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "heartbeat"
        self.count = 0
        self.failing = False

    def beat(self) -> None:
        scratch = self.path.with_name(".heartbeat.tmp")
        try:
            scratch.write_text(f"{time.time():.3f} {self.count + 1}\n")
            os.replace(scratch, self.path)
        except OSError as exc:
            if not self.failing:
                log.warning(
                    "heartbeat: %s is not writable (%s), no heartbeat until it is",
                    self.path.parent,
                    exc.strerror or exc,
                )
            self.failing = True
            return
        self.count += 1
        if self.failing or self.count == 1:
            log.info("heartbeat: writing %s", self.path)
        self.failing = False


def probe_once(url: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (URL is the operator's)
            log.info("probe url=%s status=%s", url, response.status)
    except urllib.error.HTTPError as exc:
        log.info("probe url=%s status=%s", url, exc.code)
    except urllib.error.URLError as exc:
        log.info("probe url=%s error=%s", url, exc.reason)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        log.info("probe url=%s error=%s", url, exc)


def probe_loop(url: str, period: float, stop: threading.Event) -> None:
    while True:
        probe_once(url)
        if stop.wait(period):
            return


def main() -> int:
    logging.Formatter.converter = time.gmtime
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03dZ %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # Block the stop signals before any thread starts, so every thread inherits the mask and
    # the main thread alone collects them with sigtimedwait (this also works as PID 1).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    port = int(os.environ.get("AGENT_HEALTH_PORT", "8080"))
    heartbeat_period = float(os.environ.get("AGENT_HEARTBEAT_SECONDS", "5"))
    probe_period = float(os.environ.get("AGENT_PROBE_SECONDS", "15"))
    probe_url = os.environ.get("AGENT_PROBE_URL", "http://api.allowed.test/")

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), HealthHandler)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="health", daemon=True
    ).start()
    log.info("agent: started uid=%d health=:%d/healthz", os.getuid(), port)

    stop = threading.Event()
    if os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy"):
        threading.Thread(
            target=probe_loop, args=(probe_url, probe_period, stop), name="probe", daemon=True
        ).start()
    else:
        log.info("probe: no proxy configured, egress disabled")

    heartbeat = Heartbeat(WORKSPACE)
    while True:
        heartbeat.beat()
        received = signal.sigtimedwait(STOP_SIGNALS, heartbeat_period)
        if received is not None:
            break
    log.info("agent: %s received, stopping", signal.Signals(received.si_signo).name)
    stop.set()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
