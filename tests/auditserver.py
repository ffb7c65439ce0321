"""An in-process API server over a real store (no engine): for the audit route and command."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import uvicorn

from agentcell.api import create_app
from agentcell.control import Authenticator, ControlPlane, Store, TenantTokens
from livecell import free_port, wait_for

TOKEN = "test-token-0123456789"


@dataclass
class AuditServer:
    url: str
    store: Store
    plane: ControlPlane


@contextmanager
def audit_server(tmp_path: Path) -> Iterator[AuditServer]:
    """uvicorn in a thread serving ``create_app`` over a plane that has only a store and a token."""
    store = Store(tmp_path / "agentcell.db")
    plane = cast(
        ControlPlane,
        SimpleNamespace(
            store=store,
            token=TOKEN,
            auth=Authenticator(store, TOKEN),
            tokens=TenantTokens(store),
        ),
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(plane), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "the in-process API server to start")
    try:
        yield AuditServer(f"http://127.0.0.1:{port}", store, plane)
    finally:
        server.should_exit = True
        server.force_exit = True  # open follow streams never end by themselves
        thread.join(10)
        store.close()


def auth() -> dict[str, Any]:
    return {"Authorization": f"Bearer {TOKEN}"}
