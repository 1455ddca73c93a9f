"""What the report's first screen says beside the headline figures: failures and anomalies,
and the not-measured and probe lists with a reason shared by many rows said once.

Input is the report model (snapprof.report.model.build_model): plain data, never a path;
nothing is measured or computed here, rows are selected and grouped.
"""

from __future__ import annotations

from snapprof.analysis.compare import RESOLUTION_NOTE, resolution_ms


def by_reason(rows: list[dict], key: str = "reason") -> list[dict]:
    """[{reason, rows}] in order of first appearance: each reason once, with its rows."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r.get(key) or "no reason recorded"), []).append(r)
    return [{"reason": reason, "rows": rs} for reason, rs in groups.items()]


def coarse(model: dict) -> list[dict]:
    """Measured figures whose method has a coarse resolution (e.g. the kernel's sleep-time
    report, whole seconds from the RTC): [{label, name, resolution_ms}]."""
    out = []
    for m in model.get("metrics", []):
        res = resolution_ms(m.get("method") or "") if m.get("unit") == "ms" else 0.0
        if m.get("n") and res:
            out.append({"label": m["label"], "name": m["name"], "resolution_ms": res})
    return out


def first_screen(model: dict) -> dict:
    """``problems``: failed and incomplete runs (grouped), lost records, what the reader left
    out, headline figures not measured (reasons said once), other figures not measured
    (a count), figures at a coarse resolution. ``not_measured`` / ``probes_missing``: the
    lists of the collapsed section, grouped by reason."""
    h = model["header"]
    missing_head = [c for c in model["headline"] if not c.get("n")]
    headline_names = {c["name"] for c in model["headline"]}
    others = [x for x in h["not_measured"] if x["name"] not in headline_names]
    return {
        "runs_not_complete": model.get("runs_not_complete", []),
        "drops": h.get("ringbuf_drops"),  # None: no run says how many were lost
        "runs_drops_unknown": h.get("runs_drops_unknown", []),
        "runs_with_drops": h.get("runs_with_drops", []),
        "capture_warnings": model.get("capture_warnings", []),
        "headline_missing": by_reason(missing_head),
        "other_not_measured": len(others),
        "coarse": coarse(model),
        "resolution_note": RESOLUTION_NOTE,
        "no_runs": h["runs_total"] == 0,
        "not_measured": by_reason(h["not_measured"]),
        "probes_missing": by_reason([p for p in h["probes"] if not p.get("attached")]),
    }


def has_problems(fs: dict) -> bool:
    return bool(fs["runs_not_complete"] or fs["drops"] or fs["runs_drops_unknown"] or fs["capture_warnings"]
                or fs["headline_missing"] or fs["coarse"] or fs["no_runs"])
