"""A figure across kernel versions: each kernel's median and 95 % interval, and the steps
between consecutive versions that the statistics call real.

Input: captures grouped by label in version order ({"6.12.117+deb13-amd64": [frames], ...}).
The per-kernel figures are `compare`'s own summary (one comparison over all labels), and a
step is `compare` of two consecutive labels: a verdict (better, worse, changed) needs the
95 % interval of the shift to exclude 0 and p <= 0.05, as everywhere in snapprof; with too
few runs there is none. A kernel on which a figure was not measured has no point, and its
reason is kept (never a zero).

    t = build_trend(groups, names=HEADLINE)
    t.points   # name, label, n, median, ci_low, ci_high, unit, method, reason
    t.steps    # name, before, after, median_before, median, delta, delta_pct, ci_low_pct, ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from snapprof import metrics as registry
from snapprof.analysis.compare import Comparison, compare, group_reason

#: The figures a trend shows, in this order (metric names from snapprof.metrics).
HEADLINE = (
    "freeze_user_ms", "freeze_kernel_ms", "prealloc_ms", "copy_window_ms", "image_pages",
    "zero_pages", "device_suspend_ms", "device_resume_ms", "cycle_ms",
)
POINT_COLUMNS = ["name", "label", "n", "median", "ci_low", "ci_high", "min", "max", "unit",
                 "method", "reason"]
STEP_COLUMNS = ["name", "before", "after", "unit", "n_before", "n", "median_before", "median",
                "delta", "delta_pct", "ci_low", "ci_high", "ci_low_pct", "ci_high_pct", "p",
                "verdict", "note"]
REAL = ("better", "worse", "changed")


@dataclass
class Trend:
    labels: list[str]
    names: list[str]
    points: pd.DataFrame
    steps: pd.DataFrame
    userspace: dict = field(default_factory=dict)
    level: float = 0.95

    def real_steps(self) -> pd.DataFrame:
        return self.steps[self.steps["verdict"].map(is_real)]


def is_real(verdict) -> bool:
    """better, worse, or changed (higher/lower) for a figure with no good direction."""
    return isinstance(verdict, str) and verdict.split(" ")[0] in REAL


def _nan(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.nan
    return x


def build_trend(groups: dict[str, list], names=HEADLINE) -> Trend:
    """Points for every (figure, label) and a step for every consecutive pair of labels."""
    labels = list(groups)
    if len(labels) < 2:
        from snapprof.errors import SnapprofError

        raise SnapprofError(f"a trend needs at least two kernels, got {len(labels)}")
    whole: Comparison = compare(dict(groups))
    summ = {(r["name"], r["label"]): r for r in whole.summary.to_dict("records") if r["kind"] == "metric"}
    points = []
    for name in names:
        unit = registry.get(name).unit if name in registry.REGISTRY else ""
        for lab in labels:
            r = summ.get((name, lab))
            if r is not None and r.get("n"):
                points.append({"name": name, "label": lab, "n": int(r["n"]), "median": _nan(r["median"]),
                               "ci_low": _nan(r["ci_low"]), "ci_high": _nan(r["ci_high"]),
                               "min": _nan(r["min"]), "max": _nan(r["max"]), "unit": r["unit"] or unit,
                               "method": r.get("method") or "", "reason": ""})
            else:
                points.append({"name": name, "label": lab, "n": 0, "median": math.nan, "ci_low": math.nan,
                               "ci_high": math.nan, "min": math.nan, "max": math.nan, "unit": unit,
                               "method": "", "reason": group_reason(whole.groups[lab], name)})
    steps = []
    for before, after in zip(labels, labels[1:]):
        pair = compare({before: groups[before], after: groups[after]})
        diffs = {r["name"]: r for r in pair.diffs.to_dict("records") if r["kind"] == "metric"}
        nc = {r["name"]: r["reason"] for r in pair.not_comparable.to_dict("records") if r["kind"] == "metric"}
        for name in names:
            d = diffs.get(name)
            if d is None:
                steps.append({"name": name, "before": before, "after": after, "verdict": "not comparable",
                              "note": nc.get(name, "not measured on either side")})
                continue
            steps.append({k: d.get(k) for k in STEP_COLUMNS if k in d} |
                         {"name": name, "before": before, "after": after, "n_before": d["n_base"],
                          "median_before": d["median_base"], "note": d.get("note") or ""})
    return Trend(labels=labels, names=list(names), points=pd.DataFrame(points, columns=POINT_COLUMNS),
                 steps=pd.DataFrame(steps, columns=STEP_COLUMNS), userspace=whole.userspace,
                 level=whole.level)
