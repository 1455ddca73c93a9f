"""Kernels side by side: pooled groups of captures, per-group summaries, differences, verdicts.

Input is frames (``CaptureFrames``), never paths. Captures with the same label are pooled;
the first label is the **baseline** and every other label is compared against it.

For every metric (``CaptureFrames.wide()``) and every phase duration
(``frames.phase_durations``), over **complete runs only**:

* per label: ``stats.summarize`` — the same figures ``snapprof report`` shows for one capture;
* per other label vs the baseline: the difference of medians (absolute and in % of the
  baseline median), the Hodges–Lehmann shift with its exact distribution-free 95 %
  interval (``stats.shift_ci``; the % interval divides by the baseline median), and the
  two-sided Mann–Whitney p-value (``stats.mann_whitney``: exact permutation distribution
  up to EXACT_MAX_N runs in all, tie-corrected normal approximation beyond);
* a verdict. "better"/"worse" (or "changed (higher)"/"changed (lower)" for a metric with
  no good direction, ``lower_is_better`` None in snapprof.metrics)
  needs the interval to exclude 0 **and** p ≤ 1 - level. When the interval cannot reach the
  level with so few runs (e.g. 3 vs 3 at 95 %), the verdict is "too few runs (n=3 vs 3)",
  never a guess. A metric measured on one side only is "not comparable", with the
  recorder's reason when it left one, never compared against a zero.
"""

from __future__ import annotations

import abc
import functools
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from snapprof import metrics as registry
from snapprof.capture import COLUMNS, CaptureReader
from snapprof.analysis import composition, stats
from snapprof.analysis.derived import add_derived_all, image_compressor
from snapprof.analysis.failures import rate_of
from snapprof.analysis.frames import (PROBE_COLUMNS, RUN_COLUMNS, CaptureFrames, build_frames,
                                      check_phases, read_device_totals, read_table)
from snapprof.analysis.phases import (CLOCK_BACK, CLOCK_JUMP, PHASE_LABELS, PHASE_ORDER,
                                      derive_phases)
from snapprof.analysis.summary import NO_REASON, not_measured_reason, summary_runs
from snapprof.analysis.upgrade import ELAPSED_SQL_LIKE
from snapprof.errors import SnapprofError

LEVEL = 0.95

#: Capture settings that should match for a comparison to be about the kernel alone.
#: What a capture says of the userspace it was recorded on (everything but the kernel): the
#: suite and the C library, Python and bcc the recorder ran on. Older captures have some.
USERSPACE_KEYS = (("distro", "suite"), ("libc_version", "libc"), ("python_version", "Python"),
                  ("bcc_version", "bcc"))
SETUP_KEYS = ("machine", "mem_total_kb", "swap_total_kb", "trigger", "pm_test", "power_disk",
              "image_size", "reserved_size")
#: Settings the kernel itself shifts a little (MemTotal excludes the kernel's own memory,
#: the default image_size is 2/5 of it): only a difference above this fraction is a note.
SETUP_TOLERANCE = {"mem_total_kb": 0.05, "image_size": 0.05}

#: Metrics that make up the page accounting plot and table ("what the image is made of").
PAGE_METRICS = ("saveable_pages", "saveable_after_pages", "preallocated_pages",
                "shrink_reclaimed_pages", "copy_pages", "zero_pages", "meta_pages", "image_pages")

SUMMARY_COLUMNS = ["kind", "name", "label", "n", "median", "p95", "min", "max", "ci_low",
                   "ci_high", "unit", "method"]
DIFF_COLUMNS = ["kind", "name", "title", "label", "baseline", "unit", "lower_is_better",
                "n_base", "n", "median_base", "median", "delta", "delta_pct", "shift",
                "ci_low", "ci_high", "ci_low_pct", "ci_high_pct", "p", "test", "verdict",
                "note"]
#: measured_in / median / n / unit: the side that measured a figure the other did not (else NaN)
NC_COLUMNS = ["kind", "name", "title", "label", "baseline", "reason", "measured_in", "median",
              "n", "unit"]


@dataclass
class Group:
    """All captures under one label, complete runs only in the value tables."""

    label: str
    sources: list[str]
    meta: dict[str, str]                 # meta of the first capture of the group
    runs_total: int
    excluded: dict[str, int]             # status -> number of runs left out (failed, incomplete)
    values: pd.DataFrame                 # metric values, one row per complete run
    phases: pd.DataFrame                 # phase durations (ms), one row per complete run
    units: dict[str, str]
    methods: dict[str, str]              # metric or phase -> method(s), ", "-joined
    frames: list[CaptureFrames]
    nm_names: set[str]                   # metrics with a not_measured row in a complete run
    nm_reasons: dict                     # (capture position, metric) -> the recorder's reasons
    complete: list[list[int]]            # complete run ids of each capture
    devices: pd.DataFrame                # cap, run_id, device, driver, ms (callbacks of the run summed)
    tasks: pd.DataFrame                  # cap, run_id, stage, comm, ms (slowest task of that name)
    meta_differs: list[str] = field(default_factory=list)  # meta keys that differ within the group
    #: image compressor of the group's captures, how it is known ("lz4 (the kernel's log)"),
    #: "/"-joined when pooled captures differ; None when no capture names one
    compressor: str | None = None
    #: (kind, name) -> how many negative durations were refused (left out of values/phases)
    refused: dict = field(default_factory=dict)

    @property
    def n_runs(self) -> int:
        return len(self.values)


@dataclass
class Comparison:
    labels: list[str]
    baseline: str
    groups: dict[str, Group]
    level: float
    summary: pd.DataFrame          # SUMMARY_COLUMNS
    diffs: pd.DataFrame            # DIFF_COLUMNS, one row per (kind, name, label != baseline)
    not_comparable: pd.DataFrame   # NC_COLUMNS
    devices: pd.DataFrame          # per device and label: changes against the baseline
    tasks: pd.DataFrame            # per (stage, comm) and label: changes against the baseline
    setup_notes: list[str] = field(default_factory=list)  # settings that differ from the baseline
    label_notes: list[str] = field(default_factory=list)  # how default labels were chosen
    #: is the kernel the only variable? see userspace_check
    userspace: dict = field(default_factory=dict)
    #: label -> failed cycles over all cycles with its exact interval and kinds
    #: (snapprof.analysis.failures.rate_of); a label without runs has none
    failure_rates: dict = field(default_factory=dict)

    def row(self, kind: str, name: str, label: str) -> dict | None:
        """The diffs row for (kind, name, label), or None."""
        d = self.diffs
        hit = d[(d["kind"] == kind) & (d["name"] == name) & (d["label"] == label)]
        return None if hit.empty else hit.iloc[0].to_dict()


# --------------------------------------------------------------------------- grouping


#: From this many captures on, they are read by worker processes (one per CPU).
PARALLEL_FROM = 8


#: Tables ``snapprof compare`` does not use per row: the device callbacks come summed per
#: run and device (frames.read_device_totals), the kernel log only for the freezer's
#: "(elapsed N seconds)" lines (older captures' freezer times: snapprof.analysis.upgrade).
COMPARE_OMITS = ("devices", "kmsg")


def _read_frames(path, for_compare: bool = False) -> CaptureFrames:
    """Frames of one capture with its phases left empty (derived later, for all at once)."""
    omitted = COMPARE_OMITS if for_compare else ()
    with CaptureReader(path) as reader:
        meta = reader.meta()
        probes = pd.DataFrame(reader.probes(), columns=PROBE_COLUMNS)
        runs = pd.DataFrame(reader.runs(), columns=RUN_COLUMNS)
        # the same reading as frames.load_capture
        tables = {name: (pd.DataFrame(columns=list(cols)) if name in omitted
                         else read_table(reader, name))
                  for name, cols in COLUMNS.items()}
        if "kmsg" in omitted:  # but for the freezer's elapsed lines (analysis.upgrade)
            tables["kmsg"] = pd.DataFrame.from_records(reader.fetch(
                f"SELECT {', '.join(COLUMNS['kmsg'])} FROM kmsg WHERE text LIKE ? ORDER BY run_id",
                (ELAPSED_SQL_LIKE,)), columns=list(COLUMNS["kmsg"]))
        summed = read_device_totals(reader) if for_compare else None
        warnings = reader.warnings
    f = build_frames(meta, probes, runs, tables, source=os.path.basename(os.fspath(path)),
                     derive=False, warnings=warnings)
    f.summed_devices, f.omitted = summed, omitted
    return f


def load_captures(paths, jobs: int | None = None, for_compare: bool = False) -> list[CaptureFrames]:
    """``frames.load_capture`` for many captures at once, with the same result.

    ``derive_phases`` works run by run and costs mostly per call, not per row, so the
    phases of all captures are derived in one call on their events put together (run ids
    moved apart by capture), then split back. Everything else is ``frames.build_frames``.
    From PARALLEL_FROM captures on, the files are read by ``jobs`` worker processes
    (default: one per CPU). Errors (not a capture, ...) are raised for the first bad path.

    ``for_compare``: only what ``compare`` uses, faster: the device callbacks summed per run
    and device by SQLite (``CaptureFrames.summed_devices``, the same figures as
    ``frames.device_totals`` of the rows) and no per-callback ``devices`` or ``kmsg`` rows
    (empty, named in ``CaptureFrames.omitted``).
    """
    paths = list(paths)
    jobs = jobs or os.cpu_count() or 1
    read = functools.partial(_read_frames, for_compare=for_compare)
    if len(paths) >= PARALLEL_FROM and jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            loaded = list(pool.map(read, paths, chunksize=max(1, len(paths) // (2 * jobs))))
    else:
        loaded = [read(p) for p in paths]
    if not loaded:
        return []
    events = [f.events.assign(run_id=f.events["run_id"] + (i << 32)) for i, f in enumerate(loaded)]
    metrics = [f.metrics.assign(run_id=f.metrics["run_id"] + (i << 32)) for i, f in enumerate(loaded)]
    phases = derive_phases(pd.concat(events, ignore_index=True), pd.concat(metrics, ignore_index=True))
    cap = phases["run_id"].to_numpy() >> 32
    for i, f in enumerate(loaded):
        part = phases[cap == i]
        f.phases = part.assign(run_id=part["run_id"] - (i << 32)).reset_index(drop=True)
        check_phases(f)
    add_derived_all(loaded)
    return loaded


def default_label(frames: CaptureFrames) -> str:
    release = (frames.meta.get("kernel_release") or "").strip()
    if not release:
        raise SnapprofError(f"{frames.source or 'capture'}: no kernel_release in its meta; "
                            "name it with --label")
    return release


#: Label suffix of a capture whose image compressor is not known, beside others of the same
#: kernel release whose compressor is.
UNKNOWN_COMPRESSOR = "compressor unknown"


def default_labels(frames_list: list[CaptureFrames]) -> tuple[list[str], list[str]]:
    """(labels, notes): the kernel release of each capture; captures of one release that differ
    in image compressor (``derived.image_compressor``) get it appended ("6.12.117+deb13-amd64
    lz4") so they are not pooled, and a note says so."""
    labels = [default_label(f) for f in frames_list]
    comps = [image_compressor(f) for f in frames_list]
    notes = []
    for release in dict.fromkeys(labels):
        idx = [i for i, lab in enumerate(labels) if lab == release]
        if len({comps[i][0] if comps[i] else None for i in idx}) < 2:
            continue
        said = []
        for i in idx:
            labels[i] = f"{release} {comps[i][0] if comps[i] else UNKNOWN_COMPRESSOR}"
            said.append(f"{frames_list[i].source or 'capture'}: "
                        + (f"{comps[i][0]} ({comps[i][1]})" if comps[i] else "not named"))
        notes.append(f"captures of {release} differ in image compressor, so the label names it "
                     f"and they are not pooled ({'; '.join(said)}); --label overrides")
    return labels, notes


class LabelledCaptures(dict):
    """Label -> captures (``group_captures``), with ``notes`` on how the labels were chosen."""

    def __init__(self, *args, notes: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.notes = list(notes or [])


def _status_counts(frames: CaptureFrames) -> dict[str, int]:
    counts = frames.runs["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in ("failed", "incomplete") if counts.get(s, 0)}


def group_reason(group: "Group", name: str) -> str:
    """Why metric ``name`` has no value in the group: the per-capture reasons of ``snapprof
    report`` (summary.not_measured_reason), distinct, "; "-joined."""
    reasons = []
    for i, f in enumerate(group.frames):
        own = group.nm_reasons.get((i, name))
        # the recorder's reasons are taken from the pooled table; without any, the report's
        # own fallback (an unattached probe of the same area) applies
        reasons.append("; ".join(own) if own else
                       not_measured_reason(f, name, group.complete[i] or None))
    uniq = [r for r in dict.fromkeys(reasons) if r != NO_REASON]
    return "; ".join(uniq) if uniq else NO_REASON


def _pooled(frames_list: list[CaptureFrames], complete: list[list[int]], attr: str,
            cols: list[str]) -> pd.DataFrame:
    """Rows of one frame table (an attribute, or a method such as ``device_totals``) from
    every capture, complete runs only, with a ``cap`` column (the capture's position in
    the group) so run ids of different captures stay apart."""
    parts = []
    for f, runs in zip(frames_list, complete):
        table = getattr(f, attr)
        df = (table() if callable(table) else table)[cols]
        if len(runs) != len(f.runs):
            df = df[df["run_id"].isin(runs).to_numpy()]
        parts.append(df)
    out = pd.concat(parts, ignore_index=True)
    out["cap"] = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    return out


def _wide(long: pd.DataFrame, index: pd.MultiIndex, columns: str, values: str) -> pd.DataFrame:
    """As CaptureFrames.wide() / frames.phase_durations(), for all captures of a group at once."""
    if long.empty:
        return pd.DataFrame(index=index, dtype="float64")
    table = long.pivot_table(index=["cap", "run_id"], columns=columns, values=values,
                             aggfunc="first", dropna=False)
    table.columns.name = None
    return table.reindex(index).astype("float64").replace([np.inf, -np.inf], np.nan)


def build_group(label: str, frames_list: list[CaptureFrames]) -> Group:
    complete = [summary_runs(f) for f in frames_list]
    keys = [(i, r) for i, runs in enumerate(complete) for r in runs]
    index = pd.MultiIndex.from_arrays([[k[0] for k in keys], [k[1] for k in keys]],
                                      names=["cap", "run_id"])
    excluded: dict[str, int] = {}
    for f in frames_list:
        for status, count in _status_counts(f).items():
            excluded[status] = excluded.get(status, 0) + count

    metrics = _pooled(frames_list, complete, "metrics", ["run_id", "name", "value", "unit", "method"])
    metrics, refused = _refuse_negative(metrics, "metric", "name", "value",
                                        metrics["unit"] == "ms")
    values = _wide(metrics, index, "name", "value")
    phases_long = _pooled(frames_list, complete, "phases", ["run_id", "phase", "duration_ms", "method"])
    phases_long, refused_phases = _refuse_negative(phases_long, "phase", "phase", "duration_ms")
    refused.update(refused_phases)
    phases = _wide(phases_long, index, "phase", "duration_ms")
    phases = phases[[p for p in PHASE_ORDER if p in phases.columns]
                    + sorted(p for p in phases.columns if p not in PHASE_ORDER)]
    units = metrics.groupby("name")["unit"].first().to_dict()
    methods = {("metric", n): ", ".join(sorted(set(m)))
               for n, m in metrics.groupby("name")["method"]}
    measured = phases_long[phases_long["duration_ms"].notna()]
    methods.update({("phase", n): ", ".join(sorted(set(m.dropna())))
                    for n, m in measured.groupby("phase")["method"]})

    # one row per (run, device) already, sorted by both: the sum in exact integer ns
    dev = _pooled(frames_list, complete, "device_totals", ["run_id", "device", "driver", "duration_ns"])
    if dev.empty:
        devices = pd.DataFrame(columns=["cap", "run_id", "device", "driver", "ms"])
    else:
        devices = dev.assign(ms=dev["duration_ns"] / 1e6)[["cap", "run_id", "device", "driver", "ms"]]
    tk = _pooled(frames_list, complete, "tasks", ["run_id", "stage", "comm", "freeze_latency_ms"])
    if tk.empty:
        tasks = pd.DataFrame(columns=["cap", "run_id", "stage", "comm", "ms"])
    else:
        tk = tk.assign(stage=tk["stage"].fillna("?"), comm=tk["comm"].fillna("?"))
        tasks = (tk.groupby(["cap", "run_id", "stage", "comm"])["freeze_latency_ms"].max()
                 .rename("ms").reset_index())

    nm = _pooled(frames_list, complete, "not_measured", ["run_id", "name", "reason"])
    nm_reasons = {key: list(dict.fromkeys(r.astype(str)))
                  for key, r in nm.groupby(["cap", "name"], sort=False)["reason"]}
    differs = sorted(k for k in ("kernel_release", *SETUP_KEYS)
                     if len({fr.meta.get(k) for fr in frames_list}) > 1)
    comps = [image_compressor(f) for f in frames_list]
    if len({c[0] if c else None for c in comps}) > 1:
        differs.append("image compressor")
    named = list(dict.fromkeys(f"{c[0]} ({c[1]})" for c in comps if c))
    return Group(
        label=label,
        sources=[f.source or "?" for f in frames_list],
        meta=dict(frames_list[0].meta),
        runs_total=sum(len(f.runs) for f in frames_list),
        excluded=excluded,
        values=values,
        phases=phases,
        units=units,
        methods=methods,
        frames=list(frames_list),
        nm_names=set(nm["name"]),
        nm_reasons=nm_reasons,
        complete=complete,
        devices=devices,
        tasks=tasks,
        meta_differs=differs,
        compressor=" / ".join(named) or None,
        refused=refused,
    )


#: Why a negative duration is never a figure, said with the count refused.
NEGATIVE = ("negative durations refused (a duration is never negative: the clock was set "
            "back during the span, or the capture is damaged)")


def _refuse_negative(long: pd.DataFrame, kind: str, key: str, value: str, where=True
                     ) -> tuple[pd.DataFrame, dict]:
    """Rows of a long table without its negative durations (``where``: the rows that are
    durations), and (kind, name) -> how many were left out. Never a verdict from one."""
    bad = (long[value] < 0) & where
    if not bad.any():
        return long, {}
    counts = long.loc[bad, key].value_counts()
    return long[~bad], {(kind, str(n)): int(c) for n, c in counts.items()}


def group_captures(frames_list: list[CaptureFrames], labels: list[str] | None = None
                   ) -> LabelledCaptures:
    """Label -> captures, in order of first appearance (the first label is the baseline).
    Without ``labels``: ``default_labels``, whose notes go with the result."""
    notes: list[str] = []
    if labels is not None:
        if len(labels) != len(frames_list):
            raise SnapprofError(f"--label given {len(labels)} times for {len(frames_list)} captures; "
                                "give one --label per capture, in order")
        for lab in labels:
            if not lab.strip():
                raise SnapprofError("--label must not be empty")
    else:
        labels, notes = default_labels(frames_list)
    groups = LabelledCaptures(notes=notes)
    for lab, f in zip(labels, frames_list):
        groups.setdefault(lab.strip(), []).append(f)
    return groups


# --------------------------------------------------------------------------- statistics


def verdict_of(lower_is_better, ci_low, ci_high, p, level, n_base, n) -> str:
    if math.isnan(ci_low) or math.isnan(ci_high):
        return f"too few runs (n={n_base} vs {n})"
    if (ci_low > 0 or ci_high < 0) and p <= 1 - level + 1e-9:  # 1 - 0.9 < 0.1 in floats
        up = ci_low > 0
        if lower_is_better is None:
            return "changed (higher)" if up else "changed (lower)"
        return "worse" if up == bool(lower_is_better) else "better"
    return "no clear difference"


def compare_samples(base, cand, lower_is_better, level: float = LEVEL) -> dict:
    """All figures for one sample pair (NaNs dropped): medians, differences, interval, test, verdict."""
    a, b = stats.clean(base), stats.clean(cand)
    med_a, med_b = float(np.median(a)), float(np.median(b))
    shift = stats.shift_ci(a, b, level)
    test = stats.mann_whitney(a, b)
    delta = med_b - med_a

    def pct(x):
        return x / abs(med_a) * 100.0 if med_a != 0 and not math.isnan(x) else math.nan

    return {
        "n_base": len(a), "n": len(b), "median_base": med_a, "median": med_b,
        "delta": delta, "delta_pct": pct(delta), "shift": shift.estimate,
        "ci_low": shift.ci_low, "ci_high": shift.ci_high,
        "ci_low_pct": pct(shift.ci_low), "ci_high_pct": pct(shift.ci_high),
        "p": test.p, "test": f"Mann-Whitney U ({test.method})",
        "verdict": verdict_of(lower_is_better, shift.ci_low, shift.ci_high, test.p, level,
                            len(a), len(b)),
    }


def _title(kind: str, name: str) -> str:
    if kind == "phase":
        return f"phase: {PHASE_LABELS.get(name, name)}"
    return registry.get(name).label


def display_order(names) -> list[tuple[str, str]]:
    """(kind, name) in display order: registry metrics, other metrics, then phases in cycle order."""
    names = set(names)
    reg = [("metric", m) for m in registry.REGISTRY if ("metric", m) in names]
    other = sorted(k for k in names if k[0] == "metric" and k[1] not in registry.REGISTRY)
    phases = [("phase", p) for p in PHASE_ORDER if ("phase", p) in names]
    extra = sorted(k for k in names if k[0] == "phase" and k[1] not in PHASE_ORDER)
    return reg + other + phases + extra


def _series(group: Group, kind: str, name: str) -> pd.Series | None:
    table = group.values if kind == "metric" else group.phases
    if name not in table.columns:
        return None
    s = table[name].dropna()
    return s if len(s) else None


#: Why a phase seen in the complete runs has no duration, by what its clock did.
CLOCK_JUMP_REASON = ("its span holds the clocks' jump after the atomic copy, by an amount no "
                     "sleep-time report gave")
CLOCK_BACK_REASON = ("the clock was set back during its span (its end stamped before its begin, "
                     "or less clock time than the sleep time injected inside it)")


def _unit(groups: list[Group], kind: str, name: str) -> str:
    if kind == "phase":
        return "ms"
    for g in groups:
        if name in g.units:
            return g.units[name]
    return registry.get(name).unit


def _changes(base: pd.DataFrame, cand: pd.DataFrame, keys: list[str], label: str,
             baseline: str, level: float) -> pd.DataFrame:
    """Per key (device, or stage+comm): medians over the runs it appears in, and the change."""
    rows = []
    gb = {k: s["ms"].to_numpy() for k, s in base.groupby(keys)} if not base.empty else {}
    gc = {k: s["ms"].to_numpy() for k, s in cand.groupby(keys)} if not cand.empty else {}
    for k in sorted(set(gb) | set(gc), key=str):
        kt = k if isinstance(k, tuple) else (k,)
        row = dict(zip(keys, kt), label=label, baseline=baseline)
        a, b = gb.get(k), gc.get(k)
        a = stats.clean(a) if a is not None else np.array([])
        b = stats.clean(b) if b is not None else np.array([])
        row.update(runs_base=len(a), runs=len(b))
        if len(a) == 0 or len(b) == 0:
            where = baseline if len(a) else label
            row.update(median_base=float(np.median(a)) if len(a) else math.nan,
                       median=float(np.median(b)) if len(b) else math.nan,
                       delta=math.nan, delta_pct=math.nan, ci_low=math.nan, ci_high=math.nan,
                       p=math.nan, verdict=f"only in {where}" if len(a) or len(b) else "no timing")
        else:
            row.update({c: v for c, v in compare_samples(a, b, True, level).items()
                        if c in ("median_base", "median", "delta", "delta_pct", "ci_low",
                                 "ci_high", "p", "verdict")})
        rows.append(row)
    cols = keys + ["label", "baseline", "runs_base", "runs", "median_base", "median", "delta",
                   "delta_pct", "ci_low", "ci_high", "p", "verdict"]
    out = pd.DataFrame(rows, columns=cols)
    if out.empty:
        return out
    out["abs_delta"] = out["delta"].abs()
    return out.sort_values(["abs_delta"], ascending=False, na_position="last").drop(
        columns="abs_delta").reset_index(drop=True)


#: The coarsest resolution a method can have, in ms. The kernel's sleep-time report comes
#: from the persistent clock (the RTC, whole seconds) when no clocksource runs through
#: suspend, as in the lab; nothing in a capture says which, so it is taken as 1 s.
METHOD_RESOLUTION_MS = {"sleep-time": 1000.0}
RESOLUTION_NOTE = "sleep-time: the kernel's report, from the RTC in whole seconds where no clock runs through suspend"
NO_VERDICT_RESOLUTION = "no verdict: finer than the resolution"


def resolution_ms(methods: str) -> float:
    """The coarsest resolution among ", "-joined methods (0 when all are fine-grained)."""
    return max((METHOD_RESOLUTION_MS.get(m.strip(), 0.0) for m in (methods or "").split(",")), default=0.0)


def _finer_than(row: dict, res: float) -> bool:
    """A change whose interval does not lie wholly beyond ±res is finer than the resolution:
    no verdict can be drawn from it."""
    lo, hi = row["ci_low"], row["ci_high"]
    return not (lo > res or hi < -res)


def _close(key: str, a: str, b: str) -> bool:
    tol = SETUP_TOLERANCE.get(key)
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return tol is not None and abs(x - y) <= tol * max(abs(x), abs(y))


def _runs_left_out(g: Group) -> str:
    return ", ".join(f"{n} {s}" for s, n in g.excluded.items()) or "no runs"


class Figures(abc.ABC):
    """Where a comparison's statistics come from: every complete run's values in memory
    (``SampleFigures``, for capture files) or a dataset's reduced statistics
    (``snapprof.fleet.pooled``). ``assemble`` applies compare's rules to either, so the two
    give the same Comparison for the same runs (tests/test_fleet_parity.py)."""

    @abc.abstractmethod
    def names(self) -> set[tuple[str, str]]:
        """(kind, name) of every metric and phase with a value in any label."""

    @abc.abstractmethod
    def summary(self, label: str, kind: str, name: str) -> dict | None:
        """``stats.summarize``'s figures of the label's measured values, None if it has none."""

    @abc.abstractmethod
    def difference(self, label: str, kind: str, name: str, lower_is_better) -> dict:
        """``compare_samples``' row: the baseline against ``label``."""

    @abc.abstractmethod
    def reason(self, group: Group, name: str) -> str:
        """Why metric ``name`` has no value in the group (``group_reason``)."""

    @abc.abstractmethod
    def composition_absent(self, group: Group) -> str | None:
        """Why the group's captures have no memory composition, if one says so."""

    @abc.abstractmethod
    def phase_clock(self, group: Group, name: str) -> str | None:
        """"jump" or "back" if the phase's clock jumped or was set back in the group's first
        capture that shows it, else None."""

    def missing_reason(self, group: Group, kind: str, name: str) -> str:
        """Why a metric or phase has no value in the group."""
        if group.n_runs == 0:
            return "no complete run"
        if (kind, name) in group.refused:
            why = f"{group.refused[(kind, name)]} {NEGATIVE}"
            if kind == "phase":
                return why
            other = self.reason(group, name)
            return why if other == NO_REASON else f"{why}; {other}"
        if kind == "metric":
            why = self.reason(group, name)
            if why == NO_REASON and name in composition.COMPOSITION_METRICS:
                # captures without the composition: one reason for the whole group of figures
                return self.composition_absent(group) or why
            return why
        if name == "copy":
            return "copy_window_ms: " + self.reason(group, "copy_window_ms")
        clock = self.phase_clock(group, name)
        if clock == "jump":
            return CLOCK_JUMP_REASON
        if clock == "back":
            return CLOCK_BACK_REASON
        return "no events for this phase in its complete runs"

    @abc.abstractmethod
    def changes(self, label: str, kind: str) -> pd.DataFrame:
        """Per device (kind "device") or per task name (kind "task"): the change against the
        baseline (``_changes``)."""

    @abc.abstractmethod
    def failure_rate(self, label: str) -> dict | None:
        """``failures.rate_of`` over the label's captures."""

    def measured(self, group: Group) -> str:
        """What the group measured, for the "nothing to compare" error ("" to say nothing)."""
        return ""


class SampleFigures(Figures):
    """Figures from every complete run's values (``build_group``'s tables), numpy on them."""

    def __init__(self, groups: dict[str, Group], baseline: str, level: float):
        self.groups, self.baseline, self.level = groups, baseline, level

    def names(self):
        out = set()
        for g in self.groups.values():
            out.update(("metric", c) for c in g.values.columns)
            out.update(("phase", c) for c in g.phases.columns)
        return out

    def summary(self, label, kind, name):
        s = _series(self.groups[label], kind, name)
        return None if s is None else stats.summarize(s.to_numpy(), self.level)

    def difference(self, label, kind, name, lower_is_better):
        a = _series(self.groups[self.baseline], kind, name)
        b = _series(self.groups[label], kind, name)
        return compare_samples(a.to_numpy(), b.to_numpy(), lower_is_better, self.level)

    def reason(self, group, name):
        return group_reason(group, name)

    def composition_absent(self, group):
        return next((r for r in map(composition.absent_reason, group.frames) if r), None)

    def phase_clock(self, group, name):
        for f in group.frames:
            methods = f.phases.loc[f.phases["phase"] == name, "method"].dropna()
            if methods.str.endswith(CLOCK_JUMP).any():
                return "jump"
            if methods.str.endswith(CLOCK_BACK).any():
                return "back"
        return None

    def changes(self, label, kind):
        base, cand = self.groups[self.baseline], self.groups[label]
        if kind == "device":
            return _changes(base.devices, cand.devices, ["device"], label, self.baseline, self.level)
        return _changes(base.tasks, cand.tasks, ["stage", "comm"], label, self.baseline, self.level)

    def failure_rate(self, label):
        return rate_of(self.groups[label].frames)

    def measured(self, group):
        return _measured_list(group)


def compare(groups: dict[str, list[CaptureFrames]], level: float = LEVEL) -> Comparison:
    """Compare every label against the first. Raises SnapprofError for input that cannot be compared."""
    labels = list(groups)
    n_captures = sum(len(v) for v in groups.values())
    if n_captures < 2:
        raise SnapprofError(f"compare needs at least two captures (got {n_captures})")
    if len(labels) < 2:
        raise SnapprofError(f"all {n_captures} captures have the label {labels[0]!r}: nothing to "
                            "compare against; name them with --label")
    built = {lab: build_group(lab, fl) for lab, fl in groups.items()}
    return assemble(labels, built, SampleFigures(built, labels[0], level), level,
                    list(getattr(groups, "notes", [])))


def assemble(labels: list[str], groups: dict[str, Group], figures: Figures, level: float,
             label_notes: list[str]) -> Comparison:
    """The Comparison of built groups (the first label the baseline), the figures from
    ``figures``: every rule of a comparison is here, whatever holds the runs."""
    empty = [g for g in groups.values() if g.n_runs == 0]
    if len(empty) == len(groups):
        raise SnapprofError("no label has a complete run: nothing to compare (" + "; ".join(
            f"{g.label}: {_runs_left_out(g)}" for g in empty) + ")")
    # a label whose every run failed is compared on its failure rate; its figures are absent
    empty_notes = [f"{g.label} ({', '.join(g.sources)}) has no complete run ({_runs_left_out(g)}): "
                   "none of its figures can be compared, only its failure rate" for g in empty]
    baseline = labels[0]
    base = groups[baseline]
    # a figure whose every value was refused is still named, with the count and why
    order = display_order(figures.names().union(*(g.refused for g in groups.values())))

    summary_rows = []
    for kind, name in order:
        for lab in labels:
            s = figures.summary(lab, kind, name)
            if s is None:
                continue
            summary_rows.append({"kind": kind, "name": name, "label": lab,
                                 **{c: s[c] for c in SUMMARY_COLUMNS[3:10]},
                                 "unit": _unit([groups[lab]], kind, name),
                                 "method": groups[lab].methods.get((kind, name), "")})

    diff_rows, nc_rows = [], []
    for lab in labels[1:]:
        cand = groups[lab]
        common = 0
        for kind, name in order:
            if not (base.n_runs and cand.n_runs):
                break  # a label with no complete run: one note says so, not one row a figure
            sa, sb = figures.summary(baseline, kind, name), figures.summary(lab, kind, name)
            title = _title(kind, name)
            if sa is None and sb is None:
                if kind == "phase" or (kind, name) in base.refused or (kind, name) in cand.refused:
                    # seen in both, timed in neither (e.g. a clock jump inside)
                    why = [f"{g.label}: {figures.missing_reason(g, kind, name)}" for g in (base, cand)]
                    nc_rows.append({"kind": kind, "name": name, "title": title, "label": lab,
                                    "baseline": baseline,
                                    "reason": "not measured in either (" + "; ".join(why) + ")"})
                continue
            if sa is None or sb is None:
                missing, (there, s) = (base, (cand, sb)) if sa is None else (cand, (base, sa))
                nc_rows.append({"kind": kind, "name": name, "title": title, "label": lab,
                                "baseline": baseline,
                                "reason": f"not measured in {missing.label}: "
                                          f"{figures.missing_reason(missing, kind, name)}",
                                "measured_in": there.label, "median": float(s["median"]),
                                "n": int(s["n"]), "unit": _unit([there], kind, name)})
                continue
            ua, ub = _unit([base], kind, name), _unit([cand], kind, name)
            if ua != ub:
                nc_rows.append({"kind": kind, "name": name, "title": title, "label": lab,
                                "baseline": baseline,
                                "reason": f"units differ: {ua} in {baseline}, {ub} in {lab}"})
                continue
            common += 1
            lib = True if kind == "phase" else registry.get(name).lower_is_better
            notes = []
            ma, mb = base.methods.get((kind, name), ""), cand.methods.get((kind, name), "")
            if ma != mb:
                notes.append(f"measured differently: {ma or '?'} in {baseline}, {mb or '?'} in {lab}")
            for g in (base, cand):
                if (kind, name) in g.refused:
                    notes.append(f"{g.label}: {g.refused[(kind, name)]} {NEGATIVE}")
            row = figures.difference(lab, kind, name, lib)
            res = max(resolution_ms(ma), resolution_ms(mb)) if ua == "ms" else 0.0
            if res:  # never a verdict finer than the worse side's resolution
                notes.append(f"resolution ± {res:g} ms ({RESOLUTION_NOTE})")
                if row["verdict"].split(" ")[0] in ("better", "worse", "changed") and _finer_than(row, res):
                    row["verdict"] = NO_VERDICT_RESOLUTION
            if row["median_base"] == 0:
                notes.append("baseline median is 0: no % change")
            diff_rows.append({"kind": kind, "name": name, "title": title, "label": lab,
                              "baseline": baseline, "unit": ua, "lower_is_better": lib,
                              **row, "note": "; ".join(notes)})
        for name in sorted(base.nm_names | cand.nm_names):
            if not (base.n_runs and cand.n_runs):
                break
            if figures.summary(baseline, "metric", name) is None and figures.summary(lab, "metric", name) is None:
                why = [f"{g.label}: {figures.reason(g, name)}" for g in (base, cand)]
                nc_rows.append({"kind": "metric", "name": name, "title": _title("metric", name),
                                "label": lab, "baseline": baseline,
                                "reason": "not measured in either (" + "; ".join(why) + ")"})
        if common == 0 and base.n_runs and cand.n_runs:
            detail = [f"{g.label}: {figures.measured(g)}" for g in (base, cand) if figures.measured(g)]
            raise SnapprofError(f"no metric or phase measured in both {baseline} and {lab}: "
                                "nothing to compare" + (f" ({'; '.join(detail)})" if detail else ""))

    dev_rows = [figures.changes(lab, "device") for lab in labels[1:]]
    task_rows = [figures.changes(lab, "task") for lab in labels[1:]]
    setup_notes = []
    for lab in labels[1:]:
        for key in SETUP_KEYS:
            a, b = base.meta.get(key), groups[lab].meta.get(key)
            if a is not None and b is not None and a != b and not _close(key, a, b):
                setup_notes.append(f"{lab} was recorded with {key}={b!r}, {baseline} with {a!r}: "
                                   "a difference may come from the setup, not the kernel")
        a, b = base.compressor, groups[lab].compressor
        if a and b and a.split()[0] != b.split()[0]:
            setup_notes.append(f"{lab} wrote its image with {b}, {baseline} with {a}: image "
                               "write/read figures and the compression ratio depend on it")
    return Comparison(
        labels=labels, baseline=baseline, groups=groups, level=level, setup_notes=setup_notes,
        userspace=userspace_check(groups, labels),
        failure_rates={lab: figures.failure_rate(lab) for lab in labels},
        label_notes=list(label_notes) + empty_notes,
        summary=pd.DataFrame(summary_rows, columns=SUMMARY_COLUMNS),
        diffs=pd.DataFrame(diff_rows, columns=DIFF_COLUMNS),
        not_comparable=pd.DataFrame(nc_rows, columns=NC_COLUMNS),
        devices=pd.concat(dev_rows, ignore_index=True),
        tasks=pd.concat(task_rows, ignore_index=True),
    )


def userspace_of(meta: dict) -> dict[str, str]:
    """{what: value} of the userspace a capture's meta names (suite, libc, Python, bcc)."""
    return {what: str(meta[key]) for key, what in USERSPACE_KEYS if meta.get(key)}


def userspace_check(groups: dict[str, Group], labels: list[str]) -> dict:
    """Is the kernel the only variable between the labels?

    ``status``: "same" (every label's captures name the same suite, libc, Python and bcc),
    "differs" (some differ: any change may come from the userspace as well as the kernel) or
    "unknown" (a label's captures do not say all of it). ``sentence`` says it in one line;
    ``labels`` has each label's userspace; ``differs`` the parts that differ. Captures pooled
    under one label that differ among themselves count as differing."""
    per = {}
    mixed = set()
    for lab in labels:
        seen = [userspace_of(f.meta) for f in groups[lab].frames] or [userspace_of(groups[lab].meta)]
        per[lab] = seen[0]
        for other in seen[1:]:
            mixed |= {k for k in set(seen[0]) | set(other) if seen[0].get(k) != other.get(k)}
    whats = [what for _, what in USERSPACE_KEYS]
    differs = [w for w in whats if w in mixed or len({per[lab].get(w) for lab in labels
                                                      if per[lab].get(w) is not None}) > 1]
    unknown = [w for w in whats if w not in differs and any(w not in per[lab] for lab in labels)]
    base = labels[0]

    def desc(lab, keys):
        return ", ".join(f"{k} {per[lab][k]}" for k in keys if k in per[lab]) or "not recorded"

    if differs:
        parts = "; ".join(f"{lab}: {desc(lab, differs)}" for lab in labels)
        sentence = (f"kernel and userspace differ ({', '.join(differs)}: {parts}): a change below may come "
                    "from the userspace as well as the kernel; for the kernel alone, record every kernel on "
                    "one userspace (snapprof lab compare --distro SUITE --kernel A --kernel B)")
        status = "differs"
    elif unknown:
        sentence = (f"the captures do not all say their {', '.join(unknown)}: whether the kernel is the only "
                    f"variable is not known (same {desc(base, [w for w in whats if w not in unknown])})")
        status = "unknown"
    else:
        sentence = f"one userspace ({desc(base, whats)}): the kernel is the only variable recorded"
        status = "same"
    return {"status": status, "sentence": sentence, "differs": differs, "unknown": unknown, "labels": per}


def _measured_list(g: Group) -> str:
    cols = [c for c in g.values.columns if g.values[c].notna().any()]
    cols += [c for c in g.phases.columns if g.phases[c].notna().any()]
    return ", ".join(cols[:8]) + (" …" if len(cols) > 8 else "") if cols else "nothing measured"


# --------------------------------------------------------------------------- thresholds (--fail-on)

_THRESHOLD = re.compile(
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>[<>])\s*(?P<value>[+-]?(\d+(\.\d*)?|\.\d+))"
    r"\s*(?P<pct>%)?\s*$")


@dataclass(frozen=True)
class Threshold:
    """``NAME>+5%``: fail when the change is above +5 % of the baseline median, with confidence.

    ``>`` trips when the whole interval of the difference (label - baseline) lies above the
    value, ``<`` when it lies below. Without ``%`` the value is in the metric's own unit.
    NAME is a metric (``image_pages``) or a phase (``freeze_user``: its duration in ms).
    """

    expr: str
    name: str
    op: str
    value: float
    percent: bool

    def crossed(self, row: dict) -> bool | None:
        """True/False for a diffs row, None when it cannot be judged (no interval)."""
        lo, hi = (row["ci_low_pct"], row["ci_high_pct"]) if self.percent else (row["ci_low"], row["ci_high"])
        if math.isnan(lo) or math.isnan(hi):
            return None
        return lo > self.value if self.op == ">" else hi < self.value


def parse_threshold(expr: str) -> Threshold:
    m = _THRESHOLD.match(expr)
    if not m:
        raise SnapprofError(f"--fail-on {expr!r}: expected NAME>VALUE or NAME<VALUE, VALUE a number "
                            "with an optional %, e.g. 'image_pages>+5%' or 'copy_window_ms>+50'")
    return Threshold(expr=expr.strip(), name=m["name"], op=m["op"], value=float(m["value"]),
                     percent=bool(m["pct"]))


#: ``--fail-on 'failure_rate>0'``: judged on each label's own failure rate (a level, not a
#: change against the baseline): crossed when its whole exact 95 % interval lies above VALUE
#: (a fraction, or % with %), i.e. for >0 when any cycle failed.
FAILURE_RATE = "failure_rate"


def _check_failure_rate(cmp: "Comparison", th: "Threshold") -> list["ThresholdResult"]:
    out = []
    for lab in cmp.labels[1:]:
        r = cmp.failure_rates.get(lab)
        if r is None:
            out.append(ThresholdResult(th, lab, "failure", "not evaluated", "no runs"))
            continue
        scale = 100.0 if th.percent else 1.0
        lo, hi = r["ci_low"] * scale, r["ci_high"] * scale
        crossed = lo > th.value if th.op == ">" else hi < th.value
        unit = "%" if th.percent else ""
        detail = (f"{r['failed']} of {r['runs']} cycles failed; {r['method']} "
                  f"{lo:.3g}..{hi:.3g}{unit} ({'entirely' if crossed else 'not entirely'} "
                  f"{'above' if th.op == '>' else 'below'} {th.value:g}{unit})")
        out.append(ThresholdResult(th, lab, "failure", "crossed" if crossed else "not crossed", detail))
    return out


@dataclass
class ThresholdResult:
    threshold: Threshold
    label: str
    kind: str
    status: str      # "crossed", "not crossed", "not evaluated"
    detail: str


def check_thresholds(cmp: Comparison, thresholds: list[Threshold]) -> list[ThresholdResult]:
    """Evaluate each threshold for every label against the baseline."""
    known = set(registry.REGISTRY) | set(PHASE_ORDER) | set(cmp.summary["name"])
    out = []
    for th in thresholds:
        if th.name == FAILURE_RATE:
            out += _check_failure_rate(cmp, th)
            continue
        if th.name not in known:
            raise SnapprofError(f"--fail-on {th.expr!r}: unknown metric or phase {th.name!r}")
        kind = "phase" if th.name in PHASE_ORDER and th.name not in registry.REGISTRY else "metric"
        for lab in cmp.labels[1:]:
            row = cmp.row(kind, th.name, lab)
            if row is None:
                nc = cmp.not_comparable
                hit = nc[(nc["name"] == th.name) & (nc["label"] == lab)]
                why = hit.iloc[0]["reason"] if not hit.empty else "not measured in either capture"
                out.append(ThresholdResult(th, lab, kind, "not evaluated", why))
                continue
            if th.percent and math.isnan(row["delta_pct"]):
                out.append(ThresholdResult(th, lab, kind, "not evaluated",
                                           "baseline median is 0: no % change"))
                continue
            crossed = th.crossed(row)
            if crossed is None:
                out.append(ThresholdResult(th, lab, kind, "not evaluated", row["verdict"]))
                continue
            unit = "%" if th.percent else f" {row['unit']}"
            lo, hi = ((row["ci_low_pct"], row["ci_high_pct"]) if th.percent
                      else (row["ci_low"], row["ci_high"]))
            detail = (f"{int(cmp.level * 100)} % interval of the change {lo:+.4g}..{hi:+.4g}{unit} "
                      f"({'entirely' if crossed else 'not entirely'} "
                      f"{'above' if th.op == '>' else 'below'} {th.value:+g}{unit})")
            out.append(ThresholdResult(th, lab, kind, "crossed" if crossed else "not crossed", detail))
    return out
