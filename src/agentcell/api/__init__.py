"""The versioned REST API of the control plane (OpenAPI at ``/v1/openapi.json``)."""

from agentcell.api._app import create_app

__all__ = ["create_app"]
