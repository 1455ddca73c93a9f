"""``snapprof report DATASET``: per label, the statistics ``snapprof report`` shows for one
capture (n, median, its 95 % interval, p95, min, max per figure over complete runs), the
captures, runs and failure rate — computed over the dataset by an engine and ``orderstats``.

``fleet_summary`` makes the model (frames and metadata); ``render_text``, ``render_json``
and ``render_html`` (self-contained, reports/templates/fleet.html.j2) render it, taking no
path.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from snapprof import metrics as registry
from snapprof.analysis import compare as C
from snapprof.errors import SnapprofError
from snapprof.fleet import orderstats
from snapprof.fleet.pooled import _labels, _rate


def fleet_summary(engine, by: str = "kernel", only=None, level: float = C.LEVEL) -> dict:
    caps = engine.captures()
    if caps.empty:
        raise SnapprofError("the dataset holds no capture: add some with snapprof pool")
    labels, notes = _labels(caps, by)
    caps = caps.assign(label=labels)
    order = list(dict.fromkeys(labels))
    if only:
        missing = [lab for lab in only if lab not in order]
        if missing:
            raise SnapprofError(f"no capture in the dataset has the label {missing[0]!r} (--by {by})")
        order = list(dict.fromkeys(only))
        caps = caps[caps["label"].isin(order)]
    caps = caps.assign(cap=caps.groupby("label", sort=False).cumcount())
    red = engine.reduce(caps[["capture_id", "label", "cap"]])
    counts = engine.run_counts()
    from snapprof.fleet.duck import connect
    con = connect()
    try:
        vals = red.vals[red.vals["kind"].isin(["metric", "phase"]) & red.vals["value"].notna()]
        con.register("vals", vals)
        summ = orderstats.summaries(con, "vals", level)
    finally:
        con.close()
    units = {(n, lab): u for n, lab, u in red.units[["name", "label", "unit"]].itertuples(index=False)}
    names = C.display_order({(k, n) for k, n in zip(summ["kind"], summ["k1"])})
    rank = {key: i for i, key in enumerate(names)}
    summ = summ.assign(unit=[("ms" if k == "phase" else units.get((n, lab), registry.get(n).unit))
                             for k, n, lab in zip(summ["kind"], summ["k1"], summ["label"])],
                       _o=[rank[(k, n)] for k, n in zip(summ["kind"], summ["k1"])],
                       _l=[order.index(lab) for lab in summ["label"]])
    summ = (summ.sort_values(["_o", "_l"], kind="stable").rename(columns={"k1": "name"})
            [["kind", "name", "label", "n", "median", "ci_low", "ci_high", "p95", "min", "max", "unit"]]
            .reset_index(drop=True))
    groups = []
    for lab in order:
        c = caps[caps["label"] == lab]
        groups.append({"label": lab, "captures": int(len(c)), "runs_total": int(c["runs_total"].sum()),
                       "runs_complete": int(c["runs_complete"].sum()),
                       "hosts": int(c["host"].nunique()), "failure_rate": _rate(c, counts)})
    return {"by": by, "level": level, "labels": order, "notes": notes, "groups": groups,
            "summary": summ}


def _num(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.6g}"


def render_text(model: dict) -> str:
    from snapprof.termsafe import visible

    lines = [f"snapprof report: dataset, {len(model['labels'])} labels (--by {model['by']})"]
    for g in model["groups"]:
        r = g["failure_rate"]
        fail = f", {r['failed']} of {r['runs']} cycles failed" if r else ""
        lines.append(f"  {visible(g['label'])}: {g['captures']} captures from {g['hosts']} hosts, "
                     f"{g['runs_complete']} complete of {g['runs_total']} runs{fail}")
    lines += [f"  note: {visible(n)}" for n in model["notes"]]
    lines.append("")
    head = ["figure", "label", "n", "median", f"{int(model['level'] * 100)}% interval", "p95",
            "min", "max", "unit"]
    rows = [[visible(("phase: " if r.kind == "phase" else "") + r.name), visible(r.label), str(r.n),
             _num(r.median), f"{_num(r.ci_low)}..{_num(r.ci_high)}" if not pd.isna(r.ci_low) else "too few runs",
             _num(r.p95), _num(r.min), _num(r.max), visible(r.unit)]
            for r in model["summary"].itertuples(index=False)]
    width = [max(len(x) for x in col) for col in zip(head, *rows)]
    for row in [head, *rows]:
        lines.append("  ".join(x.ljust(w) for x, w in zip(row, width)).rstrip())
    return "\n".join(lines) + "\n"


def render_html(model: dict) -> str:
    """The dataset's statistics as one self-contained page (no script, no request): what was
    pooled per label, then every figure per label, grouped by area as compare does."""
    from snapprof.analysis.compare_summary import AREAS
    from snapprof.paths import reports_dir
    from snapprof.report.html import environment

    areas: dict[str, list[dict]] = {}
    for r in model["summary"].itertuples(index=False):
        if r.kind == "phase":
            area, figure = "phases", f"phase: {r.name}"
        else:
            m = registry.get(r.name)
            area, figure = m.area, (m.label if m.label != r.name else r.name)
        interval = (f"{_num(r.ci_low)}..{_num(r.ci_high)}" if not pd.isna(r.ci_low) else None)
        areas.setdefault(area, []).append({
            "figure": figure, "label": r.label, "n": int(r.n), "median": _num(r.median),
            "interval": interval, "p95": _num(r.p95), "min": _num(r.min), "max": _num(r.max),
            "unit": r.unit})
    known = list(AREAS)
    order = sorted(areas, key=lambda a: known.index(a) if a in known else known.index("phases") - 0.5)
    css = (reports_dir() / "report.css").read_text(encoding="utf-8")
    return environment().get_template("fleet.html.j2").render(
        css=css, by=model["by"], labels=model["labels"], notes=model["notes"],
        groups=model["groups"], level_pct=int(model["level"] * 100),
        areas=[{"title": AREAS.get(a, a), "rows": areas[a]} for a in order])


def render_json(model: dict) -> str:
    from snapprof.termsafe import json_text

    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v

    out = {k: model[k] for k in ("by", "level", "labels", "notes", "groups")}
    out["summary"] = [{k: clean(v) for k, v in r.items()} for r in model["summary"].to_dict("records")]
    return json_text(json.dumps(out, ensure_ascii=False, indent=1, allow_nan=False)) + "\n"
