"""Human formatting of figures, shared by the text and HTML reporters.

None or NaN is never printed as a number: it is "not measured" (or "–" inside a table
whose row already says why).
"""

from __future__ import annotations

import math

NOT_MEASURED = "not measured"


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value, unit: str = "", dash: str = "–") -> str:
    """A value in its unit, readable: ms above a second become s, bytes become MiB."""
    if missing(value):
        return dash
    try:
        v = float(value)
    except (TypeError, ValueError):  # not a number (the reader refuses these): never one
        return dash
    if not math.isfinite(v):
        return dash
    if unit == "ms":
        if abs(v) >= 1000:
            return f"{v / 1000:.2f} s"
        return f"{v:.3g} ms" if abs(v) >= 0.01 else f"{v:.2g} ms"
    if unit == "bytes":
        return f"{v / 2**20:,.1f} MiB"
    if unit == "kB":
        return f"{v / 1024:,.1f} MiB" if abs(v) >= 1024 else f"{v:,.0f} kB"
    if unit in ("pages", "count", "errno"):
        text = f"{v:,.0f}"
        return f"{text} pages" if unit == "pages" else text
    if unit == "MB/s":
        return f"{v:,.1f} MB/s"
    if unit == "ratio":
        return f"{v:.3f}"
    return f"{v:,.6g} {unit}".strip()


def spread(stats: dict, unit: str) -> str:
    """min–max, p95 and the 95 % CI of the median, for one line of text."""
    if not stats.get("n"):
        return ""
    parts = [f"min {number(stats['min'], unit)}", f"max {number(stats['max'], unit)}"]
    if stats["n"] > 1:
        parts.append(f"p95 {number(stats['p95'], unit)}")
    if missing(stats.get("ci_low")):
        parts.append(f"95% CI of median: too few runs (n={stats['n']})")
    else:
        parts.append(f"95% CI {number(stats['ci_low'], unit)}–{number(stats['ci_high'], unit)}")
    return ", ".join(parts)
