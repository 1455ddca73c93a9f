"""What a reader of ``snapprof compare`` sees first: the real changes, and the rows grouped by area.

Input is a ``Comparison`` (snapprof.analysis.compare); nothing here computes a statistic,
it selects and orders rows of ``Comparison.diffs``:

* ``real_changes``: the rows with a real verdict ("better", "worse", "changed (higher)",
  "changed (lower)"), worse first, then the largest changes. "no clear difference", "too few
  runs …" and "no verdict: finer than the resolution" are not changes, and neither is a
  setting or a fact of the machine (``snapprof.metrics.Metric.setting``: RAM, free memory,
  /sys/power/image_size, …): it is no finding about the kernel.
* ``settings_that_differ``: those settings where the sides differ — a real verdict, or one
  value on each side (a setting is the same in every run) and the two not equal. They make
  the comparison less controlled; the reader is told so beside the real changes.
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
         "copy": "Atomic copy and image",
         "memory": "Memory composition (what is in the image; largest change first)",
         "devices": "Devices", "io": "Image I/O",
         "resume": "Resume", "systemd": "systemd's part (journal)", "cycle": "Whole cycle",
         "system": "System and settings",
         "other": "Other figures", "phases": "Phases (durations)"}
#: Order of the verdicts in the summary: regressions first, then every other change by size
#: (a large improvement before a small change of a figure with no good direction).
VERDICT_ORDER = {"worse": 0, "changed": 1, "better": 1}


def is_real(verdict) -> bool:
    """True for a verdict that states a change."""
    return isinstance(verdict, str) and verdict.split(" ")[0] in REAL


def is_setting(kind: str, name: str) -> bool:
    """True for a setting or a fact of the machine (not behaviour measured in the cycle)."""
    return kind == "metric" and registry.get(name).setting


def is_real_change(row: dict) -> bool:
    """A diffs row that is a finding: a real verdict on a figure that is not a setting."""
    return is_real(row["verdict"]) and not is_setting(row["kind"], row["name"])


def area_of(kind: str, name: str) -> str:
    return "phases" if kind == "phase" else registry.get(name).area


def area_title(area: str) -> str:
    return AREAS.get(area, area)


def _area_rank(area: str) -> int:
    keys = list(AREAS)
    if area in AREAS:
        return keys.index(area)
    return keys.index("phases")  # unknown areas: just before phases (ties: phases last)


#: Areas whose rows are listed by size of the change (|% change|, largest first; rows
#: without a % change last) rather than in the registry's order: the memory composition's
#: ~30 figures, where what grew or shrank most is the answer.
BY_SIZE = ("memory",)


def by_size(rows: pd.DataFrame) -> pd.DataFrame:
    """rows ordered by |delta_pct|, largest first, then by |delta| where there is no %."""
    key = pd.DataFrame({"pct": [-abs(x) if not math.isnan(x) else math.inf for x in rows["delta_pct"]],
                        "abs": [-abs(x) if not math.isnan(x) else math.inf for x in rows["delta"]]},
                       index=rows.index)
    return rows.loc[key.sort_values(["pct", "abs"], kind="stable").index]


def by_area(diffs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """[(area, rows)] of a diffs frame, areas in AREAS order, rows in their own order (by
    size of the change in the BY_SIZE areas)."""
    if diffs.empty:
        return []
    areas = [area_of(k, n) for k, n in zip(diffs["kind"], diffs["name"])]
    d = diffs.assign(_area=areas)
    order = sorted(dict.fromkeys(areas), key=lambda a: (_area_rank(a), a == "phases"))
    out = []
    for a in order:
        rows = d[d["_area"] == a].drop(columns="_area")
        out.append((a, by_size(rows) if a in BY_SIZE else rows))
    return out


def real_changes(cmp, label: str | None = None) -> pd.DataFrame:
    """The real changes (``is_real_change``; of one label, or all): worse first, then the
    others by size of the % change (rows without a % change last), labels in their order."""
    d = _of_label(cmp, label)
    d = d[[is_real_change(r) for r in d.to_dict("records")]] if not d.empty else d
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


def settings_that_differ(cmp, label: str | None = None) -> pd.DataFrame:
    """The diffs rows of settings (``is_setting``) whose sides differ (of one label, or all):
    a real verdict, or each side one value and the two unequal. Labels in their order, then
    the largest % difference first (rows without a % difference last)."""
    d = _of_label(cmp, label)
    if d.empty:
        return d.reset_index(drop=True)
    spans = {(r["kind"], r["name"], r["label"]): (r["min"], r["max"])
             for r in cmp.summary.to_dict("records")}

    def one_value(kind, name, lab) -> bool:
        lo, hi = spans.get((kind, name, lab), (math.nan, math.nan))
        return lo == hi  # False for NaN: not measured

    keep = [is_setting(r["kind"], r["name"])
            and (is_real(r["verdict"])
                 or (one_value(r["kind"], r["name"], r["baseline"])
                     and one_value(r["kind"], r["name"], r["label"])
                     and r["median"] != r["median_base"]))
            for r in d.to_dict("records")]
    d = d[keep]
    if d.empty:
        return d.reset_index(drop=True)
    lab_rank = {lab: i for i, lab in enumerate(cmp.labels)}
    key = pd.DataFrame({
        "lab": d["label"].map(lab_rank),
        "size": [-abs(x) if not math.isnan(x) else math.inf for x in d["delta_pct"]],
    }, index=d.index)
    return d.loc[key.sort_values(["lab", "size"], kind="stable").index].reset_index(drop=True)


def _of_label(cmp, label: str | None) -> pd.DataFrame:
    d = cmp.diffs
    return d if label is None else d[d["label"] == label]


def forest_rows(cmp, label: str) -> pd.DataFrame:
    """One row per comparable figure of ``label`` vs the baseline (every diffs row), grouped
    by area, with ``area`` and ``significant`` (a real change: ``is_real_change``) added."""
    parts = [rows.assign(area=a) for a, rows in by_area(cmp.diffs[cmp.diffs["label"] == label])]
    if not parts:
        return cmp.diffs.iloc[0:0].assign(area=[], significant=[])
    out = pd.concat(parts, ignore_index=True)
    out["significant"] = [is_real_change(r) for r in out.to_dict("records")]
    return out
