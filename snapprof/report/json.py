"""JSON report for scripts: the report model, with null for anything not measured.

``strict_dumps`` is the one JSON writer of the reporters and exporters: strict JSON (no
NaN or Infinity: a non-finite number is null, absent, and the model says why a figure is
absent), the exact text of the capture (``ensure_ascii=False``) with every control
character escaped (``termsafe.json_text``), so JSON printed to a terminal cannot drive it.
"""

from __future__ import annotations

import json
import math

from snapprof.termsafe import json_text


def _finite(obj):
    """obj with every non-finite float replaced by None (absent), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _default(obj):
    """numpy scalars as Python numbers; bytes as text (bad bytes as \\x escapes)."""
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "backslashreplace")
    if hasattr(obj, "item"):
        return _finite(obj.item())
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def strict_dumps(obj, indent: int | None = None) -> str:
    return json_text(json.dumps(_finite(obj), indent=indent, allow_nan=False,
                                ensure_ascii=False, default=_default))


def render_json(model: dict) -> str:
    """The model as JSON (NaN is never emitted: missing figures are null with a reason)."""
    return strict_dumps(model, indent=1) + "\n"
