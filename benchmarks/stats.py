"""Percentiles and number formatting for the reports."""

from __future__ import annotations

import math
import statistics


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile, interpolated between the closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    """n, min, mean, p50, p90, p95, p99, max of a list of milliseconds (rounded to microseconds)."""
    if not values:
        return {"n": 0}
    out = {"n": len(values), "min": min(values), "mean": statistics.fmean(values)}
    for p in (50, 90, 95, 99):
        out[f"p{p}"] = percentile(values, p)
    out["max"] = max(values)
    return {k: (v if k == "n" else round(v, 3)) for k, v in out.items()}


def ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) < 10:
        return f"{value:.2f} ms"
    if abs(value) < 1000:
        return f"{value:.1f} ms"
    return f"{value / 1000:.2f} s"


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0f}%"


def mb(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f} MB"
