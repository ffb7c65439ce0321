"""The secrets routes of the REST API: write-only values, listings without them, and the
restart that delivers a rotated value at once."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from agentcell.api._app import Caller, errors, invalid_input, visible_cell, visible_tenant
from agentcell.control import ControlPlane
from agentcell.errors import InputError

__all__ = ["add_secret_routes"]


class SecretPut(BaseModel):
    value: str = Field(description="the secret's bytes, base64-encoded (standard alphabet)")


def _unprocessable(e: Exception) -> RequestValidationError:
    return invalid_input(("body", "value"), str(e))


def add_secret_routes(app: FastAPI, plane: ControlPlane) -> None:
    """Add the ``/v1/tenants/{tenant}/secrets`` routes and ``POST .../restart`` to ``app``."""

    @app.put("/v1/tenants/{tenant}/secrets/{name}", responses=errors(400, 404))
    def put_secret(tenant: str, name: str, body: SecretPut, caller: Caller) -> dict[str, Any]:
        """Set or rotate a secret. Returns its version and times; never the value."""
        visible_tenant(caller, tenant)
        try:
            value = base64.b64decode(body.value, validate=True)
        except (binascii.Error, ValueError):
            raise _unprocessable(ValueError("not base64 (standard alphabet, padded)")) from None
        try:
            return plane.secrets.set(tenant, name, value, caller.actor)
        except InputError as e:
            raise _unprocessable(e) from None

    @app.get("/v1/tenants/{tenant}/secrets", responses=errors(404))
    def list_secrets(tenant: str, caller: Caller) -> list[dict[str, Any]]:
        """Names, versions, times and the cells using each; there is no way to read a value."""
        return plane.secrets.listing(visible_tenant(caller, tenant))

    @app.delete("/v1/tenants/{tenant}/secrets/{name}", responses=errors(404, 409), status_code=204)
    def delete_secret(tenant: str, name: str, caller: Caller) -> None:
        """Remove a secret; 409 naming the cells while any cell lists it."""
        plane.secrets.remove(visible_tenant(caller, tenant), name, caller.actor)

    @app.post("/v1/cells/{tenant}/{name}/restart", responses=errors(404, 409, 502))
    def restart_cell(tenant: str, name: str, caller: Caller) -> dict[str, Any]:
        """Restart the agent (its secret files rewritten first). Returns the request number;
        the cell's ``restart.honoured`` reaches it when done."""
        key = visible_cell(caller, tenant, name)
        return {"cell": f"{tenant}/{name}", "request": plane.restart(key, caller.actor)}
