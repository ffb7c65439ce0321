"""The CLI's own config file: which control plane to talk to, and with which token.

``$AGENTCELL_CONFIG``, else ``<user config dir>/agentcell/config.yaml``; YAML with the keys
``url`` and ``token``; written with mode 0600 because it holds a token.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from agentcell.errors import ClientError

__all__ = ["CONFIG_KEYS", "config_path", "load_config", "save_config"]

CONFIG_KEYS = ("url", "token")


def config_path() -> Path:
    env = os.environ.get("AGENTCELL_CONFIG")
    return Path(env) if env else platformdirs.user_config_path("agentcell") / "config.yaml"


def load_config(path: Path | None = None) -> dict[str, str]:
    """The config's settings; {} when there is no file. A bad file is a clear error."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ClientError(f"cannot read the config {path}: {e}") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ClientError(f"the config {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ClientError(f"the config {path} must be a mapping with the keys url and token")
    unknown = sorted(str(k) for k in data if k not in CONFIG_KEYS)
    if unknown:
        raise ClientError(
            f"the config {path} has unknown key(s) {', '.join(unknown)}; valid: url, token"
        )
    for key, value in data.items():
        if not isinstance(value, str) or not value:
            raise ClientError(f"the config {path}: {key} must be a non-empty string")
    return {str(k): str(v) for k, v in data.items()}


def save_config(settings: dict[str, str], path: Path | None = None) -> Path:
    """Write the settings atomically, mode 0600 (the directory 0700 when made here)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump({k: settings[k] for k in CONFIG_KEYS if settings.get(k)}, f)
    os.replace(tmp, path)
    return path
