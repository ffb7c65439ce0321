"""Alerts: when a cell fails, POST one JSON event to the operator's webhook.

Delivery runs on its own thread so the reconciler never waits on it; each event is tried
a few times with backoff, and the outcome is one audit record (kind "notify").
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from agentcell.control._store import AuditRecord, Store
from agentcell.errors import ConfigError

__all__ = ["Notifier", "check_webhook"]

log = logging.getLogger("agentcell.notify")

_TRIES = 3
_TIMEOUT = 5.0


def check_webhook(url: str) -> str:
    """The webhook URL as given, or ConfigError saying what a valid one looks like."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"webhook {url!r} is not an http(s) URL; give one such as "
            "https://alerts.example.com/agentcell"
        )
    return url


class Notifier:
    """Sends events to ``url`` (None: no webhook configured, events are only audited)."""

    def __init__(self, url: str | None, store: Store) -> None:
        self.url = check_webhook(url) if url else None
        self.store = store
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.url is None:
            return
        self._thread = threading.Thread(target=self._run, name="agentcell-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=_TIMEOUT * _TRIES)

    def notify(self, tenant: str, cell: str, state: str, reason: str) -> None:
        if self.url is None:
            return
        self._queue.put(
            {"time": time.time(), "tenant": tenant, "cell": cell, "state": state, "reason": reason}
        )

    def _run(self) -> None:
        assert self.url is not None
        with httpx.Client(timeout=_TIMEOUT) as client:
            while (event := self._queue.get()) is not None:
                error = ""
                for attempt in range(_TRIES):
                    try:
                        client.post(self.url, json=event).raise_for_status()
                        error = ""
                        break
                    except httpx.HTTPError as e:
                        error = str(e) or type(e).__name__
                        time.sleep(2**attempt)  # backoff between delivery tries
                self.store.audit(
                    AuditRecord(
                        event["tenant"],
                        event["cell"],
                        "notifier",
                        "notify",
                        "fail" if error else "allow",
                        f"webhook failed after {_TRIES} tries: {error}"
                        if error
                        else "webhook sent",
                        {"state": event["state"], "reason": event["reason"]},
                    )
                )
