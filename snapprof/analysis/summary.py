"""Multi-run summaries: per metric and per phase, n / median / p95 / min / max and a 95 %
distribution-free confidence interval of the median (snapprof.analysis.stats).

Statistics are taken over the runs that completed (failed and incomplete runs are reported
as such, not mixed into the spread). A metric with no measured value gets n = 0, NaN
statistics and the reason it was not measured.
"""

from __future__ import annotations

import pandas as pd

from snapprof import metrics as registry
from snapprof.analysis.frames import CaptureFrames, phase_durations
from snapprof.analysis.phases import PHASE_LABELS
from snapprof.analysis.stats import summarize

STAT_COLUMNS = ["n", "median", "p95", "min", "max", "ci_low", "ci_high"]
NO_REASON = "no measurement and no reason recorded in this capture"


def summary_runs(frames: CaptureFrames) -> list[int]:
    """The runs statistics are taken over: the complete ones."""
    return frames.run_ids("complete")


def not_measured_reason(frames: CaptureFrames, name: str, run_ids: list[int] | None = None) -> str:
    """Why ``name`` has no value: the recorder's reasons (distinct, "; "-joined), else the
    probes of its area when none of them attached, else NO_REASON."""
    nm = frames.not_measured[frames.not_measured["name"] == name]
    if run_ids is not None:
        nm = nm[nm["run_id"].isin(run_ids)]
    reasons = list(dict.fromkeys(nm["reason"].astype(str)))
    if reasons:
        return "; ".join(reasons)
    area = registry.get(name).area
    probes = frames.probes
    same_area = probes[probes["area"] == area]
    missing = same_area[~same_area["attached"]]
    if not missing.empty and not same_area["attached"].any():
        return "; ".join(f"probe {p} not attached: {r or 'no reason given'}"
                         for p, r in zip(missing["name"], missing["reason"]))
    return NO_REASON


def metric_summary(frames: CaptureFrames, names: list[str] | None = None) -> pd.DataFrame:
    """Index metric name; columns label, unit, area, method, source, the STAT_COLUMNS and
    ``reason`` (why not measured; empty when n > 0).

    ``names`` defaults to every registry metric plus any other name in the capture, in
    registry order.
    """
    run_ids = summary_runs(frames)
    all_runs = frames.wide()
    wide = all_runs.reindex(run_ids)
    info = frames.metric_info()
    if names is None:
        extra = [n for n in info.index if n not in registry.REGISTRY]
        names = list(registry.REGISTRY) + sorted(extra)
    rows = []
    for name in names:
        m = registry.get(name)
        values = wide[name] if name in wide.columns else pd.Series(dtype="float64")
        stats = summarize(values.to_numpy())
        has = name in info.index
        reason = ""
        if not stats["n"]:
            elsewhere = (all_runs[name].dropna().index.tolist() if name in all_runs.columns else [])
            reason = (f"measured only in runs that did not complete: "
                      f"{', '.join(map(str, elsewhere))}" if elsewhere
                      else not_measured_reason(frames, name, run_ids or None))
        rows.append({
            "name": name, "label": m.label, "unit": info.loc[name, "unit"] if has else m.unit,
            "area": m.area, "lower_is_better": m.lower_is_better,
            "method": info.loc[name, "method"] if has else "",
            "source": info.loc[name, "source"] if has else "",
            **stats,
            "reason": reason,
        })
    return pd.DataFrame(rows).set_index("name")


def phase_summary(frames: CaptureFrames) -> pd.DataFrame:
    """Index phase (cycle order, phases seen in the capture); label, method and the
    STAT_COLUMNS of the phase durations (ms) over the complete runs."""
    run_ids = summary_runs(frames)
    durations = phase_durations(frames).reindex(run_ids)
    methods = frames.phases.groupby("phase")["method"].agg(
        lambda s: ", ".join(sorted(set(s.dropna()))))
    rows = []
    for phase in durations.columns:
        rows.append({"phase": phase, "label": PHASE_LABELS.get(phase, phase),
                     "method": methods.get(phase, ""),
                     **summarize(durations[phase].to_numpy())})
    cols = ["phase", "label", "method", *STAT_COLUMNS]
    return pd.DataFrame(rows, columns=cols).set_index("phase")
