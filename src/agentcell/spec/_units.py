"""Quantities of the spec: byte sizes (``512Mi``) and durations (``10s``)."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

__all__ = ["ByteSize", "Duration", "format_bytes", "parse_bytes", "parse_duration"]

_BYTE_UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(|k|M|G|T|Ki|Mi|Gi|Ti)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_bytes(value: Any) -> int:
    """``512Mi`` / ``1Gi`` / ``2G`` / ``1048576`` -> a number of bytes."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 512Mi, 1Gi or a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        m = _BYTES_RE.match(value)
        if m:
            return int(Decimal(m.group(1)) * _BYTE_UNITS[m.group(2)])
    raise ValueError(
        f"{value!r} is not a size: use a number of bytes or a number with one of the "
        "units Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T (powers of 1000), e.g. 512Mi"
    )


def format_bytes(n: int) -> str:
    """The shortest exact binary spelling of ``n`` bytes (``536870912`` -> ``512Mi``)."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        size = _BYTE_UNITS[unit]
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def parse_duration(value: Any) -> float:
    """``500ms`` / ``10s`` / ``2m`` / ``1h`` / ``7d`` / a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 10s")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(
        f"{value!r} is not a duration: use a number with one of the units ms, s, m, h, d, e.g. 10s"
    )


def _format_duration(seconds: float) -> str:
    """The shortest spelling that parses back to exactly ``seconds``."""
    if seconds and seconds < 1:
        ms = f"{round(seconds * 1000)}ms"
        if parse_duration(ms) == seconds:
            return ms
    short = f"{seconds:g}s"
    if _DURATION_RE.match(short) and parse_duration(short) == seconds:
        return short
    return f"{Decimal(repr(seconds)):f}s"


ByteSize = Annotated[
    int,
    BeforeValidator(parse_bytes),
    PlainSerializer(format_bytes, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?(k|M|G|T|Ki|Mi|Gi|Ti)?$"},
            ],
            "description": "bytes, or a number with a unit: 512Mi, 1Gi, 2G",
        }
    ),
]

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(_format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)$"},
            ],
            "description": "seconds, or a number with a unit: 500ms, 10s, 2m, 1h, 7d",
        }
    ),
]
