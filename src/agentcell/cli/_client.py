"""The CLI's client of the control plane's REST API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import platformdirs

from agentcell.cli._config import config_path, load_config
from agentcell.errors import ClientError

__all__ = ["DEFAULT_URL", "FLAGS", "Client", "default_state_dir"]

DEFAULT_URL = "http://127.0.0.1:7878"
FLAGS: dict[str, str | None] = {"token": None}
"""Set by the command line's global options (``agentcell --token T ...``)."""


def default_state_dir() -> Path:
    env = os.environ.get("AGENTCELL_STATE_DIR")
    return Path(env) if env else platformdirs.user_data_path("agentcell")


class Client:
    """Talks to the control plane. The token is the first of: ``token`` (the ``--token``
    flag), ``$AGENTCELL_TOKEN``, the config file's ``token``, the admin token in the state
    directory. The URL likewise: ``url``, ``$AGENTCELL_URL``, the config's, the default."""

    def __init__(
        self, url: str | None = None, token: str | None = None, state_dir: Path | None = None
    ) -> None:
        config = load_config()
        self.url = (
            url or os.environ.get("AGENTCELL_URL") or config.get("url") or DEFAULT_URL
        ).rstrip("/")
        self.token = (
            token
            or FLAGS["token"]
            or os.environ.get("AGENTCELL_TOKEN")
            or config.get("token")
            or self._read_token(state_dir or default_state_dir())
        )
        self.http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(90.0, connect=5.0),
            headers={"Authorization": f"Bearer {self.token}"},
        )

    @staticmethod
    def _read_token(state_dir: Path) -> str:
        path = state_dir / "admin.token"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise ClientError(
                f"no token: none given with --token, AGENTCELL_TOKEN or in {config_path()}, "
                f"and the admin token {path} does not exist. Start the control plane "
                "(agentcell serve) once to create it, log in with a tenant token "
                "(agentcell login), or set --state-dir"
            ) from None
        except PermissionError:
            raise ClientError(
                f"cannot read the token {path}: permission denied (it is mode "
                "0600; run as the user who runs agentcell serve)"
            ) from None

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ClientError(self._unreachable(e)) from None
        return self._decode(r)

    def stream(self, method: str, path: str, **kw: Any) -> Iterator[bytes]:
        try:
            with self.http.stream(method, path, timeout=None, **kw) as r:
                if r.status_code >= 400:
                    r.read()
                    self._decode(r)
                yield from r.iter_bytes()
        except httpx.TransportError as e:
            raise ClientError(self._unreachable(e)) from None

    def lines(self, method: str, path: str, **kw: Any) -> Iterator[str]:
        try:
            with self.http.stream(method, path, timeout=None, **kw) as r:
                if r.status_code >= 400:
                    r.read()
                    self._decode(r)
                yield from r.iter_lines()
        except httpx.TransportError as e:
            raise ClientError(self._unreachable(e)) from None

    def _unreachable(self, e: Exception) -> str:
        return (
            f"cannot reach the control plane at {self.url}: {e}. "
            "Start it with 'agentcell serve' (or set AGENTCELL_URL)"
        )

    @staticmethod
    def _decode(r: httpx.Response) -> Any:
        if r.status_code == 204:
            return None
        try:
            body = r.json()
        except ValueError:
            body = {"reason": r.text}
        if r.status_code >= 400:
            detail = body.get("detail", body) if isinstance(body, dict) else body
            if isinstance(detail, dict):
                reason = detail.get("reason") or detail
                hint = detail.get("hint")
                msg = f"{reason}" + (f" ({hint})" if hint else "")
            elif isinstance(detail, list):  # request validation by the API framework
                msg = "; ".join(
                    f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail
                )
            else:
                msg = str(detail)
            if r.status_code == 401:
                msg = f"unauthorized: {msg}"
            elif r.status_code == 403:
                msg = f"forbidden: {msg}"
            raise ClientError(msg)
        return body
