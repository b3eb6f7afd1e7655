"""Durations as the manifest writes them ("500ms", "30s", "5m", "1h", "7d", or seconds), and the strict base of
its models."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

MAX_DURATION = 24 * 3600.0


def parse_duration(value: Any, maximum: float = MAX_DURATION) -> float:
    """Seconds from an int/float (seconds) or a string like "500ms", "30s", "5m", "1h", "7d"."""
    shown = _short(repr(value), quote=False)
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '1h'")
    if isinstance(value, int) and abs(value) > maximum:
        seconds = math.inf if value > 0 else -math.inf  # float() of a huge int overflows
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"{shown} is not a duration: use seconds (30) or a string like '500ms', '30s', '5m', '1h'")
    if math.isnan(seconds):
        raise ValueError("nan is not a duration: use seconds (30) or a string like '500ms', '30s', '5m', '1h'")
    if seconds < 0.001:
        raise ValueError(f"{shown}: a duration must be at least 1ms")
    if seconds > maximum:
        limit = format_duration(maximum) if maximum > MAX_DURATION else f"{maximum / 3600:g}h"
        raise ValueError(f"{shown}: a duration must be at most {limit}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact string for a duration: 300 -> '5m', 0.5 -> '500ms'."""
    for unit in ("d", "h", "m", "s"):
        amount = seconds / _UNIT_SECONDS[unit]
        if amount >= 1 and amount == int(amount):
            return f"{int(amount)}{unit}"
    return f"{round(seconds * 1000)}ms"


def _short(value: str, limit: int = 40, quote: bool = True) -> str:
    value = value if len(value) <= limit else value[:limit] + "..."
    return repr(value) if quote else value


Duration = Annotated[
    float,
    Field(json_schema_extra={"anyOf": [{"type": "number"}, {"type": "string", "pattern": _DURATION.pattern}]}),
]


class _Strict(BaseModel):
    # strict: `retries: "3"` or `concurrency: true` is a mistake to report, not a value to coerce
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
