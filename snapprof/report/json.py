"""JSON report for scripts: the report model, with null for anything not measured."""

from __future__ import annotations

import json


def render_json(model: dict) -> str:
    """The model as JSON (NaN is never emitted: missing figures are null with a reason)."""
    return json.dumps(model, indent=1, allow_nan=False, ensure_ascii=False) + "\n"
