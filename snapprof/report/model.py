"""The report's content as plain data (dicts, lists, floats, None), built from frames.

One model feeds the three reporters: JSON dumps it, text lays it out in aligned tables,
HTML renders it with Jinja2 and adds figures. Missing figures are None (never 0) and
carry the reason they are missing. Statistics are over the complete runs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from snapprof import __version__
from snapprof import metrics as registry
from snapprof.analysis import composition
from snapprof.analysis.derived import image_compressor
from snapprof.analysis.failures import failed_runs, failure_rate, grouped_culprits, slice_holdups
from snapprof.analysis.frames import CaptureFrames, phase_durations
from snapprof.analysis.kmsg import EXTRA_LABELS, kernel_figures
from snapprof.analysis.phases import PHASE_LABELS, SHRINK_EVENT, SYSTEMD_SPANS, after_copy, spans
from snapprof.analysis.summary import NO_REASON, STAT_COLUMNS, metric_summary, phase_summary

HEADLINE = ("freeze_user_ms", "freeze_kernel_ms", "image_bytes", "cycle_ms")
MEMORY_FLOW = ("mem_total_kb", "saveable_pages", "shrink_requested_pages",
               "shrink_reclaimed_pages", "prealloc_requested_pages", "prealloc_got_pages",
               "preallocated_pages", "saveable_after_pages", "copy_pages", "zero_pages",
               "meta_pages", "image_pages", "image_bytes")
SUSPEND_STAGES = ("prepare", "suspend", "suspend_late", "suspend_noirq")
RESUME_STAGES = ("resume_noirq", "resume_early", "resume", "complete")
META_HEADER = ("kernel_release", "kernel_version", "distro", "lab_distro", "machine",
               "hostname", "mem_total_kb", "swap_total_kb", "cmdline", "trigger",
               "power_disk", "pm_test", "image_size", "reserved_size", "recorded_at",
               "snapprof_version", "bcc_version", "python_version")
TOP = 15
#: Metric areas of the "Image I/O and resume" section (and the JSON's ``io`` list).
IO_AREAS = ("io", "resume")
CHOICE_KEYS = ("pm_test", "power_disk")  # /sys/power files that list choices, "[current]" marked


def _selected(value: str | None) -> str | None:
    """The bracketed current choice of a /sys/power choice list ("[none] core" → "none")."""
    if value and "[" in value and "]" in value:
        return value[value.index("[") + 1:value.index("]")]
    return value


def clean(value):
    """JSON-safe scalar: NaN/NA → None, numpy → Python."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def records(df: pd.DataFrame) -> list[dict]:
    return [{k: clean(v) for k, v in row.items()} for row in df.to_dict("records")]


def build_model(frames: CaptureFrames, max_timelines: int = 6) -> dict:
    msum = metric_summary(frames)
    wide = frames.wide()
    measured_names = set(frames.metrics["name"])
    model = {
        "snapprof_version": __version__,
        "source": frames.source,
        "header": _header(frames, msum),
        "headline": [_metric_row(msum, n) for n in HEADLINE],
        "runs": (runs := _runs(frames, wide)),
        "runs_not_complete": _group_not_complete(runs),
        "failures": _failures(frames),
        "metrics": [_metric_row(msum, n) for n in msum.index],
        "phases": _phases(frames),
        "timelines": _timelines(frames, wide, max_timelines),
        "freezer": _freezer(frames, msum),
        "memory": _memory(frames, msum, wide),
        # what is in the image (snapprof.analysis.composition): absent with a reason on
        # captures without the composition
        "composition": composition.composition(frames),
        "devices": _devices(frames, msum),
        "io": [_metric_row(msum, n) for n in msum.index if msum.loc[n, "area"] in IO_AREAS],
        # systemd's part of a `systemctl hibernate` (the journal), where the capture has it
        "systemd": [_metric_row(msum, n) for n in msum.index
                    if msum.loc[n, "area"] == "systemd" and n in measured_names],
        "kernel_log": _kernel_log(frames, wide),
        # what the capture reader left out or recovered, counted (empty for a sound capture)
        "capture_warnings": list(frames.warnings),
    }
    return model


def _failures(frames: CaptureFrames) -> dict:
    """Why runs failed (snapprof.analysis.failures): each failed run with its kind, the
    tasks that refused to freeze and their hints, memory at an image-allocation failure;
    the failure rate with its exact interval; culprits repeated across runs, grouped."""
    runs = failed_runs(frames)
    return {"runs": runs, "rate": failure_rate(frames), "groups": grouped_culprits(runs),
            "slice_holdups": slice_holdups(frames)}


def _metric_row(msum: pd.DataFrame, name: str) -> dict:
    row = msum.loc[name]
    return {"name": name, **{k: clean(row[k]) for k in
                             ["label", "unit", "area", "method", "source", *STAT_COLUMNS,
                              "reason"]}}


def _header(frames: CaptureFrames, msum: pd.DataFrame) -> dict:
    status = frames.runs["status"].value_counts()
    probes = frames.probes
    no_composition = composition.absent_reason(frames)
    not_measured = [{"name": name, "label": row["label"],
                     # a capture without the composition says so once, not "no reason" 28 times
                     "reason": (no_composition if no_composition and name in composition.COMPOSITION_METRICS
                                and row["reason"] == NO_REASON else row["reason"])}
                    for name, row in msum.iterrows() if row["n"] == 0]
    partly = []
    nm = frames.not_measured
    for name, group in nm.groupby("name", sort=False):
        if name in msum.index and msum.loc[name, "n"] > 0:
            partly.append({"name": name, "label": registry.get(name).label,
                           "runs": [int(r) for r in group["run_id"]],
                           "reason": "; ".join(dict.fromkeys(group["reason"].astype(str)))})
    known = frames.runs["ringbuf_drops"].dropna()  # unknown drop counts stay unknown, not 0
    comp = image_compressor(frames)
    return {
        "compressor": {"name": comp[0], "how": comp[1]} if comp else None,
        "meta": {k: _selected(frames.meta.get(k)) if k in CHOICE_KEYS else frames.meta.get(k)
                 for k in META_HEADER},
        "meta_other": {k: v for k, v in sorted(frames.meta.items()) if k not in META_HEADER},
        "runs_total": int(len(frames.runs)),
        "runs_by_status": {s: int(status.get(s, 0)) for s in ("complete", "failed", "incomplete")},
        "probes_attached": int(probes["attached"].sum()),
        "probes_total": int(len(probes)),
        "probes": records(probes),
        "not_measured": not_measured,
        "not_measured_in_some_runs": partly,
        "ringbuf_drops": int(known.sum()) if len(known) else None,
        "runs_with_drops": [int(r) for r in frames.runs.loc[known[known > 0].index, "run_id"]],
        # runs whose recorder stored no drop count (older or killed recorders): unknown, not 0
        "runs_drops_unknown": [int(r) for r in frames.runs.loc[
            frames.runs["ringbuf_drops"].isna(), "run_id"]] if len(frames.runs) else [],
    }


def _runs(frames: CaptureFrames, wide: pd.DataFrame) -> list[dict]:
    started = frames.phases[frames.phases["start_ns"].notna()]
    tails = started.groupby("run_id").tail(1).set_index("run_id")
    last = {int(rid): {"phase": ph, "ended": bool(pd.notna(end))}
            for rid, ph, end in zip(tails.index, tails["phase"], tails["end_ns"])}
    out = []
    for row in records(frames.runs):
        rid = row["run_id"]
        cycle = wide.loc[rid, "cycle_ms"] if "cycle_ms" in wide.columns else None
        lp = last.get(rid)
        out.append({**row, "cycle_ms": clean(cycle),
                    "last_phase": lp["phase"] if lp else None,
                    "last_phase_label": PHASE_LABELS.get(lp["phase"]) if lp else None,
                    "last_phase_ended": lp["ended"] if lp else None})
    return out


def _group_not_complete(runs: list[dict]) -> list[dict]:
    """Failed and incomplete runs grouped by status, error and the last phase reached."""
    groups: dict[tuple, list[int]] = {}
    for r in runs:
        if r["status"] != "complete":
            key = (r["status"], r["error"], r["last_phase_label"], r["last_phase_ended"])
            groups.setdefault(key, []).append(r["run_id"])
    return [{"status": k[0], "error": k[1], "last_phase_label": k[2], "last_phase_ended": k[3],
             "n": len(ids), "runs": ids} for k, ids in groups.items()]


def _phases(frames: CaptureFrames) -> dict:
    psum = phase_summary(frames)
    summary = [{"phase": p, **{k: clean(v) for k, v in row.items()}} for p, row in psum.iterrows()]
    durations = phase_durations(frames)
    per_run = []
    for rid, row in durations.iterrows():
        per_run.append({"run_id": int(rid), "durations_ms": {p: clean(v) for p, v in row.items()}})
    return {"summary": summary, "per_run": per_run, "order": list(durations.columns)}


def _select_runs(frames: CaptureFrames, wide: pd.DataFrame, limit: int) -> list[tuple[int, str]]:
    runs = frames.runs
    if len(runs) <= limit:
        return [(int(r), s) for r, s in zip(runs["run_id"], runs["status"])]
    complete = frames.run_ids("complete")
    if "cycle_ms" in wide.columns and wide.loc[complete, "cycle_ms"].notna().any():
        key = wide.loc[complete, "cycle_ms"].dropna().sort_values()
        what = "whole cycle"
    else:
        key = phase_durations(frames).reindex(complete).sum(axis=1, min_count=1).dropna().sort_values()
        what = "sum of phases"
    picks: list[tuple[int, str]] = []
    if not key.empty:
        picks += [(int(key.index[0]), f"fastest ({what})"),
                  (int(key.index[len(key) // 2]), f"median ({what})"),
                  (int(key.index[-1]), f"slowest ({what})")]
    for status in ("failed", "incomplete"):
        ids = frames.run_ids(status)
        if ids:
            picks.append((ids[0], f"first {status} run ({len(ids)} in all)"))
    seen, out = set(), []
    for rid, why in picks:
        if rid not in seen:
            seen.add(rid)
            out.append((rid, why))
    return out[:limit]


def _timelines(frames: CaptureFrames, wide: pd.DataFrame, limit: int) -> dict:
    chosen = _select_runs(frames, wide, limit)
    shrink = spans(frames.events, [SHRINK_EVENT]).set_index("run_id")
    systemd = spans(frames.events, list(SYSTEMD_SPANS))
    runs = frames.runs.set_index("run_id")
    items = []
    for rid, why in chosen:
        ph = frames.phases[frames.phases["run_id"] == rid]
        sd = systemd[systemd["run_id"] == rid]
        starts = pd.concat([ph["start_ns"], sd["start_ns"]]).dropna()
        t0 = runs.loc[rid, "started_ns"]
        if starts.size and (pd.isna(t0) or t0 > starts.min()):
            t0 = starts.min()  # systemd's part comes before the kernel's
        phases = []
        for name in SYSTEMD_SPANS:  # systemd's part first, in its order
            row = sd[sd["name"] == name]
            if row.empty or pd.isna(t0):
                continue
            a, b = row["start_ns"].iloc[0], row["end_ns"].iloc[0]
            phases.append({"phase": name, "label": SYSTEMD_SPANS[name], "start_ms": (a - t0) / 1e6,
                           "end_ms": None if pd.isna(b) else (b - t0) / 1e6,
                           "duration_ms": None if pd.isna(b) else (b - a) / 1e6,
                           "method": "journal, wall clock"})
        for row in ph.itertuples(index=False):
            rel = lambda ns: None if pd.isna(ns) or pd.isna(t0) else (ns - t0) / 1e6  # noqa: E731
            phases.append({"phase": row.phase, "label": PHASE_LABELS.get(row.phase, row.phase),
                           "start_ms": rel(row.start_ns), "end_ms": rel(row.end_ns),
                           "duration_ms": clean(row.duration_ms), "method": clean(row.method)})
        nested = []
        if rid in shrink.index and not pd.isna(t0):
            s = shrink.loc[rid]
            nested.append({"label": "shrink_all_memory", "start_ms": (s["start_ns"] - t0) / 1e6,
                           "end_ms": clean((s["end_ns"] - t0) / 1e6)})
        items.append({"run_id": rid, "status": runs.loc[rid, "status"], "why": why,
                      "error": clean(runs.loc[rid, "error"]), "phases": phases, "nested": nested,
                      "after_copy": (_after_copy(ph, frames.metrics[frames.metrics["run_id"] == rid], t0)
                                     if runs.loc[rid, "trigger"] == "hibernate" else None)})
    note = ("" if len(chosen) == len(frames.runs) else
            f"{len(frames.runs)} runs: timelines shown for {len(chosen)} of them, chosen as named.")
    return {"runs": items, "note": note}


def _after_copy(ph: pd.DataFrame, metrics: pd.DataFrame, t0) -> dict:
    """phases.after_copy of a real-hibernation run, times in ms from the timeline's start."""
    a = after_copy(ph, metrics)
    rel = lambda ns: None if pd.isna(ns) or pd.isna(t0) else (ns - t0) / 1e6  # noqa: E731
    return {"start_ms": rel(a["start_ns"]), "end_ms": rel(a["end_ns"]),
            **{k: a[k] for k in ("window_ms", "window_method", "steps", "offline", "rest_ms")}}


def in_place_seen(probes: pd.DataFrame) -> bool:
    """Whether the capture's probes could see a task frozen in place: only the hooks on
    freeze_task() do, which the light freezer probes leave out (measurement freezer_sweep;
    a capture from before that split had them in freezer_passes)."""
    if probes is None or probes.empty or "name" not in probes:
        return False
    att = dict(zip(probes["name"], probes["attached"]))
    if "freezer_sweep" in att:
        return bool(att["freezer_sweep"])
    return bool(att.get("freezer_passes")) and "freezer_wakeups" not in att


def _freezer(frames: CaptureFrames, msum: pd.DataFrame) -> dict:
    t = frames.tasks
    seen = in_place_seen(frames.probes)
    out = {"metrics": [_metric_row(msum, n) for n in msum.index if msum.loc[n, "area"] == "freezer"],
           "tasks_recorded": int(len(t)), "slowest": [], "failed": [],
           # None: not seen by these probes (never a 0 for "not counted")
           "in_place": 0 if seen else None}
    if t.empty:
        return out
    timed = t[t["freeze_latency_ms"].notna()]
    if not timed.empty:
        g = timed.groupby(["comm", "stage", "kthread"], dropna=False)["freeze_latency_ms"]
        agg = g.agg(["count", "median", "max"]).reset_index()
        agg = agg.sort_values("max", ascending=False).head(TOP)
        out["slowest"] = records(agg.rename(columns={"count": "n", "median": "median_ms",
                                                     "max": "max_ms"}))
    failed = t[t["frozen"] == 0]
    runs = frames.runs.set_index("run_id")["status"]
    out["failed"] = [{**r, "run_status": runs.get(r["run_id"])} for r in
                     records(failed[["run_id", "pid", "comm", "stage", "kthread"]])]
    if seen:  # a task with no latency that froze: in place, or by itself before its request
        out["in_place"] = int(((t["freeze_latency_ms"].isna()) & (t["frozen"] == 1)).sum())
    return out


def _memory(frames: CaptureFrames, msum: pd.DataFrame, wide: pd.DataFrame) -> dict:
    flow = [_metric_row(msum, n) for n in MEMORY_FLOW]
    present = [n for n in MEMORY_FLOW if n in wide.columns]
    per_run = [{"run_id": int(rid), **{n: clean(row[n]) for n in present}}
               for rid, row in wide[present].iterrows()] if present else []
    shrink = [_metric_row(msum, n) for n in ("prealloc_ms", "shrink_ms", "prealloc_result")]
    return {"flow": flow, "per_run": per_run, "columns": present, "timing": shrink}


RESUME_VERBS = ("resume", "thaw", "restore", "recover", "on")


def _device_tables(d: pd.DataFrame) -> dict[str, list[dict]]:
    """The slowest callbacks per direction (suspend, resume): per device, driver, PM verb
    and stage, the number of runs, median and max. A callback with no stage goes by its
    PM verb."""
    keys = ["device", "driver", "event", "stage"]
    part = d.loc[d["duration_ms"].notna(), keys + ["duration_ms"]]
    resume = part["stage"].isin(RESUME_STAGES) | (
        part["stage"].isna() & part["event"].isin(RESUME_VERBS))
    known = part["stage"].isin(SUSPEND_STAGES + RESUME_STAGES) | part["stage"].isna()
    part = part[known].assign(resume=resume[known], stage=part["stage"].fillna("?"),
                              driver=part["driver"].fillna(""), event=part["event"].fillna(""))
    out = {"suspend": [], "resume": []}
    if part.empty:
        return out
    agg = part.groupby(["resume", *keys])["duration_ms"].agg(["count", "median", "max"])
    agg = agg.reset_index().rename(columns={"count": "n", "median": "median_ms", "max": "max_ms"})
    for direction, flag in (("suspend", False), ("resume", True)):
        top = agg[agg["resume"] == flag].sort_values(["median_ms", "max_ms"], ascending=False)
        out[direction] = records(top.drop(columns="resume").head(TOP))
    return out


def _devices(frames: CaptureFrames, msum: pd.DataFrame) -> dict:
    d = frames.devices
    errors = d[d["error"].notna() & (d["error"] != 0)]
    return {
        "metrics": [_metric_row(msum, n) for n in msum.index if msum.loc[n, "area"] == "devices"],
        "callbacks_recorded": int(len(d)),
        **_device_tables(d),
        "errors": records(errors[["run_id", "device", "driver", "event", "stage", "error"]]),
    }


def _kernel_log(frames: CaptureFrames, wide: pd.DataFrame, max_runs: int = 20) -> dict:
    figs = kernel_figures(frames.kmsg)
    measured = frames.metrics[["run_id", "name", "value", "method", "source"]].rename(
        columns={"value": "measured"})
    figs = figs.merge(measured, on=["run_id", "name"], how="left")
    labels = {n: (registry.REGISTRY[n].label if n in registry.REGISTRY
                  else EXTRA_LABELS.get(n, n)) for n in figs["name"].unique()}
    figs = figs.assign(label=figs["name"].map(labels), has_metric=figs["name"].isin(
        list(registry.REGISTRY)), kernel=figs["value"])
    checks = records(figs[["run_id", "name", "label", "unit", "kernel", "text", "measured",
                           "has_metric", "method", "source"]])
    run_ids = sorted({c["run_id"] for c in checks})
    shown = set(run_ids[:max_runs])
    lines = {}
    for rid, group in frames.kmsg.groupby("run_id"):
        if int(rid) in shown or (not run_ids and len(lines) < 1):
            lines[int(rid)] = [clean(x) for x in group["text"]]
    return {"checks": checks, "runs_shown": sorted(shown), "runs_with_figures": len(run_ids),
            "lines": lines}
