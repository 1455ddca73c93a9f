"""What a reader of ``snapprof compare`` sees first: the real changes, and the rows grouped by area.

Input is a ``Comparison`` (snapprof.analysis.compare); nothing here computes a statistic,
it selects and orders rows of ``Comparison.diffs``:

* ``real_changes``: the rows with a real verdict ("better", "worse", "changed (higher)",
  "changed (lower)"), worse first, then the largest changes. "no clear difference", "too few
  runs …" and "no verdict: finer than the resolution" are not changes.
* ``area_of`` / ``by_area``: the area of each figure (``snapprof.metrics.Metric.area``;
  phases are their own group), in a fixed order, for the full table and the forest plot.
"""

from __future__ import annotations

import math

import pandas as pd

from snapprof import metrics as registry

#: First word of a verdict that states a change (the others state none).
REAL = ("better", "worse", "changed")
#: Display order of the areas, and their titles; an area not named here comes before phases.
AREAS = {"freezer": "Freezer", "shrink": "Memory shrinking and preallocation",
         "copy": "Atomic copy and image", "devices": "Devices", "io": "Image I/O",
         "resume": "Resume", "cycle": "Whole cycle", "system": "System and settings",
         "other": "Other figures", "phases": "Phases (durations)"}
#: Order of the verdicts in the summary: regressions first.
VERDICT_ORDER = {"worse": 0, "changed": 1, "better": 2}


def is_real(verdict) -> bool:
    """True for a verdict that states a change."""
    return isinstance(verdict, str) and verdict.split(" ")[0] in REAL


def area_of(kind: str, name: str) -> str:
    return "phases" if kind == "phase" else registry.get(name).area


def area_title(area: str) -> str:
    return AREAS.get(area, area)


def _area_rank(area: str) -> int:
    keys = list(AREAS)
    if area in AREAS:
        return keys.index(area)
    return keys.index("phases")  # unknown areas: just before phases (ties: phases last)


def by_area(diffs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """[(area, rows)] of a diffs frame, areas in AREAS order, rows in their own order."""
    if diffs.empty:
        return []
    areas = [area_of(k, n) for k, n in zip(diffs["kind"], diffs["name"])]
    d = diffs.assign(_area=areas)
    order = sorted(dict.fromkeys(areas), key=lambda a: (_area_rank(a), a == "phases"))
    return [(a, d[d["_area"] == a].drop(columns="_area")) for a in order]


def real_changes(cmp, label: str | None = None) -> pd.DataFrame:
    """The diffs rows with a real verdict (of one label, or all), worse first, then by size
    of the % change (rows without a % change last), labels in their order."""
    d = cmp.diffs
    if label is not None:
        d = d[d["label"] == label]
    d = d[d["verdict"].map(is_real)]
    if d.empty:
        return d.reset_index(drop=True)
    lab_rank = {lab: i for i, lab in enumerate(cmp.labels)}
    key = pd.DataFrame({
        "lab": d["label"].map(lab_rank),
        "verdict": d["verdict"].map(lambda v: VERDICT_ORDER[v.split(" ")[0]]),
        "size": [-abs(x) if not math.isnan(x) else math.inf for x in d["delta_pct"]],
    }, index=d.index)
    order = key.sort_values(["lab", "verdict", "size"], kind="stable").index
    return d.loc[order].reset_index(drop=True)


def forest_rows(cmp, label: str) -> pd.DataFrame:
    """One row per comparable figure of ``label`` vs the baseline (every diffs row), grouped
    by area, with ``area`` and ``significant`` (a real verdict) added."""
    parts = [rows.assign(area=a) for a, rows in by_area(cmp.diffs[cmp.diffs["label"] == label])]
    if not parts:
        return cmp.diffs.iloc[0:0].assign(area=[], significant=[])
    out = pd.concat(parts, ignore_index=True)
    out["significant"] = out["verdict"].map(is_real)
    return out
