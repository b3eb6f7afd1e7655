"""Small statistics for the report: percentiles (linear interpolation) and medians that skip gaps."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    data = sorted(values)
    if not data:
        raise ValueError("no values")
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Iterable[float | None]) -> float | None:
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else None


def paired_ratio(ours: list[float | None], base: list[float | None]) -> float | None:
    """Median over repetitions of ours[i] / base[i]: each ratio compares runs made back to back."""
    return median([a / b for a, b in zip(ours, base, strict=False) if a is not None and b])
