"""What is in the image: the memory composition of each run beside the kernel's own counts.

Input is frames (``CaptureFrames``), output plain data (dicts, lists, floats, None) and, for
tests and scripts, one data frame per run (``composition_runs``). Nothing here reads a path.

The recorder reads /proc/meminfo just before each cycle (``mem_<kind>_kb``) and just after
it, after the thaw (``mem_<kind>_after_kb``); the kinds (``snapprof.metrics.COMPOSITION_KINDS``)
partition memory in use. What they do not explain is

    unattributed = MemTotal - MemFree - sum of the kinds measured

computed here per run and shown as "unattributed": it is never spread over the kinds. It
holds pages the kernel and drivers take straight from the page allocator, unevictable file
pages, free pages in the per-CPU lists, and any kind the run did not measure (named in
``missing_kinds``); what was reserved at boot is outside MemTotal altogether. It is
negative when counters overlap (kernel stacks are vmalloc'd with CONFIG_VMAP_STACK and
counted in both KernelStack and VmallocUsed; a mapped page in the swap cache is in AnonPages
and SwapCached): then it is shown negative, with a note, never clamped.

kB become pages with the capture's ``page_size`` (meta); an older capture has none: on
x86_64 its pages are 4 KiB and ``page_size`` says it is assumed; elsewhere page figures are
absent (None) and say why.

Statistics are medians over the complete runs, each figure over the runs that have it.
A capture without the composition (every capture before schema version 3) gets
``present: False`` and a one-line ``reason``; never zeros.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from snapprof import metrics as registry
from snapprof.analysis.frames import CaptureFrames
from snapprof.analysis.summary import not_measured_reason

KINDS = tuple(k for k, _keys, _label in registry.COMPOSITION_KINDS)
KIND_LABELS = {k: label for k, _keys, label in registry.COMPOSITION_KINDS}
KIND_KEYS = {k: keys for k, keys, _label in registry.COMPOSITION_KINDS}
SUBSET, SUBSET_KEYS, SUBSET_LABEL = registry.COMPOSITION_SUBSET
#: Page size assumed for an x86_64 capture that does not say its own (meta ``page_size``).
X86_64_PAGE = 4096
#: The kernel's exact counts shown beside the composition (metric names), in cycle order.
KERNEL_COUNTS = ("saveable_pages", "preallocated_pages", "saveable_after_pages",
                 "copy_needed_pages", "copy_pages", "zero_pages", "meta_pages", "image_pages")
SHRINK_COUNTS = ("shrink_requested_pages", "shrink_reclaimed_pages")
#: Top processes shown.
TOP_PROCESSES = 15
UNATTRIBUTED = "unattributed"
UNATTRIBUTED_LABEL = "Unattributed (MemTotal - MemFree - the kinds)"
NEGATIVE_NOTE = ("negative: the kinds add up to more than MemTotal - MemFree, so some pages are "
                 "counted in two kinds (kernel stacks are vmalloc'd and also in VmallocUsed; "
                 "mapped swap-cache pages are in AnonPages and SwapCached); shown as measured, "
                 "not clamped")
NO_COMPOSITION = ("this capture holds no memory composition (no mem_<kind>_kb figures): it was "
                  "recorded by a snapprof that did not read /proc/meminfo by kind (capture "
                  "schema before version 3)")
NO_PROCESSES = ("this capture holds no per-process memory (no processes table rows): it was "
                "recorded by a snapprof that did not read smaps_rollup (capture schema before "
                "version 3)")


def metric_name(kind: str, after: bool = False) -> str:
    """``mem_<kind>_kb`` (before the cycle) or ``mem_<kind>_after_kb`` (after it)."""
    return f"mem_{kind}{'_after' if after else ''}_kb"


#: Every metric name of the composition (kinds, subset, free after, scan time).
COMPOSITION_METRICS = tuple(
    [metric_name(k, a) for k in (*KINDS, SUBSET) for a in (False, True)]
    + ["mem_free_after_kb", "composition_scan_ms"])


# --------------------------------------------------------------------------- facts


def page_size(frames: CaptureFrames) -> dict:
    """{"bytes": int | None, "how": str}: the capture's ``page_size``, else 4096 assumed on
    x86_64 (said so), else None with why."""
    raw = frames.meta.get("page_size")
    try:
        value = int(str(raw).strip()) if raw is not None else None
    except ValueError:
        value = None
    if value and value > 0 and value & (value - 1) == 0:
        return {"bytes": value, "how": "the capture's page_size"}
    if frames.meta.get("machine") == "x86_64":
        return {"bytes": X86_64_PAGE, "how": "assumed: x86_64 pages are 4 KiB (the capture does "
                                             "not say its page size)"}
    return {"bytes": None, "how": f"page size unknown (no page_size in the capture, machine "
                                  f"{frames.meta.get('machine') or 'not recorded'}): page "
                                  "figures not shown"}


def has_composition(frames: CaptureFrames) -> bool:
    """True when some run measured a kind of memory before the cycle."""
    names = set(frames.metrics["name"]) if len(frames.metrics) else set()
    return any(metric_name(k) in names for k in KINDS)


def absent_reason(frames: CaptureFrames) -> str | None:
    """Why the capture has no composition (one line), or None when it has one. The
    recorder's own reasons when it left some (e.g. /proc/meminfo unreadable)."""
    if has_composition(frames):
        return None
    nm = frames.not_measured
    ours = nm[nm["name"].isin([metric_name(k) for k in KINDS])] if len(nm) else nm
    if len(ours):
        return "memory composition not measured: " + "; ".join(
            dict.fromkeys(ours["reason"].astype(str)))
    return NO_COMPOSITION


def _median(values) -> float | None:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(np.median(arr)) if arr.size else None


def _minmax(values) -> tuple[float | None, float | None]:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return (float(arr.min()), float(arr.max())) if arr.size else (None, None)


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# --------------------------------------------------------------------------- per run


def composition_runs(frames: CaptureFrames) -> pd.DataFrame:
    """One row per run (index run_id, every run), NaN where not measured:

    status; total_kb, free_kb, free_after_kb; ``<kind>_kb`` and ``<kind>_after_kb`` for each
    kind and the dirty subset; ``change_<kind>_kb`` (after - before); attributed_kb (sum of
    the kinds measured before), unattributed_kb (total - free - attributed; negative when
    counters overlap), the same ``_after``; in_use_kb (total - free); missing_kinds (the
    kinds this run did not measure, ", "-joined, "" when none); shrank_kb and grew_kb (the
    kinds' decreases and increases, summed, both >= 0); and the kernel's counts (pages)
    of KERNEL_COUNTS and SHRINK_COUNTS as stored. A run without MemTotal, MemFree or any
    kind has NaN unattributed (nothing to reconcile), never 0.
    """
    wide = frames.wide()
    col = lambda n: wide[n] if n in wide.columns else pd.Series(np.nan, index=wide.index)  # noqa: E731
    status = frames.runs.set_index("run_id")["status"]
    out = pd.DataFrame(index=wide.index)
    out["status"] = status.reindex(wide.index).to_numpy()
    out["total_kb"] = col("mem_total_kb")
    out["free_kb"] = col("mem_free_kb")
    out["free_after_kb"] = col("mem_free_after_kb")
    for kind in (*KINDS, SUBSET):
        out[f"{kind}_kb"] = col(metric_name(kind))
        out[f"{kind}_after_kb"] = col(metric_name(kind, True))
        out[f"change_{kind}_kb"] = out[f"{kind}_after_kb"] - out[f"{kind}_kb"]
    for when in ("", "_after"):
        parts = out[[f"{k}{when}_kb" for k in KINDS]]
        any_kind = parts.notna().any(axis=1)
        attributed = parts.sum(axis=1, min_count=1)
        out[f"attributed{when}_kb"] = attributed
        free = out[f"free{when}_kb"]
        out[f"unattributed{when}_kb"] = (out["total_kb"] - free - attributed).where(any_kind)
    out["in_use_kb"] = out["total_kb"] - out["free_kb"]
    before = out[[f"{k}_kb" for k in KINDS]]
    has_any = before.notna().any(axis=1)
    out["missing_kinds"] = [", ".join(k for k in KINDS if math.isnan(row[f"{k}_kb"])) if ok else ""
                            for (_, row), ok in zip(before.iterrows(), has_any)]
    changes = out[[f"change_{k}_kb" for k in KINDS]]
    out["shrank_kb"] = (-changes.clip(upper=0)).sum(axis=1, min_count=1)
    out["grew_kb"] = changes.clip(lower=0).sum(axis=1, min_count=1)
    kernel = pd.DataFrame({name: col(name) for name in (*KERNEL_COUNTS, *SHRINK_COUNTS)},
                          index=out.index)
    return pd.concat([out, kernel], axis=1).copy()


def reconcile(frames: CaptureFrames) -> pd.DataFrame:
    """``composition_runs`` of the runs that have a composition, in pages too: every ``*_kb``
    column also as ``*_pages`` (kB x 1024 / page size; absent when the page size is not
    known). The one-liner for a test on a real capture:
    ``reconcile(load_capture(path))["unattributed_kb"]``."""
    runs = composition_runs(frames)
    runs = runs[runs["attributed_kb"].notna()]
    size = page_size(frames)["bytes"]
    kb = [c for c in runs.columns if c.endswith("_kb")]
    pages = pd.DataFrame({c[:-3] + "_pages": (runs[c] * 1024 / size if size else np.nan)
                          for c in kb}, index=runs.index)
    return pd.concat([runs, pages], axis=1)


# --------------------------------------------------------------------------- summary


def _pages(kb, size) -> float | None:
    return None if kb is None or not size else kb * 1024 / size


def _kernel_rows(frames: CaptureFrames, runs: pd.DataFrame, complete: list[int]) -> list[dict]:
    rows = []
    for name in KERNEL_COUNTS:
        m = registry.get(name)
        vals = runs.loc[complete, name] if complete else pd.Series(dtype=float)
        med = _median(vals)
        lo, hi = _minmax(vals)
        rows.append({"name": name, "label": m.label, "pages": med, "min": lo, "max": hi,
                     "n": int(vals.notna().sum()),
                     "reason": None if med is not None else not_measured_reason(
                         frames, name, complete or None)})
    return rows


def _reclaim(frames: CaptureFrames, runs: pd.DataFrame, complete: list[int], size) -> dict:
    """What the cycle took, by kind (after - before), against shrink_all_memory's counts."""
    sub = runs.loc[complete]
    shrank = _median(sub["shrank_kb"])
    grew = _median(sub["grew_kb"])
    req = _median(sub["shrink_requested_pages"])
    got = _median(sub["shrink_reclaimed_pages"])
    out = {"shrank_kb": shrank, "grew_kb": grew, "shrank_pages": _pages(shrank, size),
           "grew_pages": _pages(grew, size),
           "free_change_kb": _median(sub["free_after_kb"] - sub["free_kb"]),
           "shrink_requested_pages": req, "shrink_reclaimed_pages": got,
           "shrink_reason": None, "after_measured": bool(shrank is not None)}
    if got is None:
        out["shrink_reason"] = not_measured_reason(frames, "shrink_reclaimed_pages",
                                                   complete or None)
    if shrank is None:
        out["sentence"] = ("The composition after the cycle was not measured: what the cycle "
                           "took, by kind, is not known.")
    else:
        took = (f"the kinds that shrank lost {shrank / 1024:,.1f} MiB in all"
                + (f" ({_pages(shrank, size):,.0f} pages)" if size else "")
                + f", those that grew gained {grew / 1024:,.1f} MiB")
        kernel = (f"shrink_all_memory was asked for {req:,.0f} pages and reclaimed {got:,.0f}"
                  if got is not None and req is not None else
                  f"shrink_all_memory reclaimed {got:,.0f} pages" if got is not None else
                  f"shrink_all_memory's counts are not measured ({out['shrink_reason']})")
        out["sentence"] = (f"After - before the cycle (medians over complete runs): {took}; "
                           f"{kernel}. Preallocation's own allocations also reclaim through "
                           "the page allocator, and the system runs on between the two reads, "
                           "so the two need not match.")
    return out


def composition_summary(frames: CaptureFrames) -> dict:
    """The composition of the complete runs, medians, as the report shows it.

    ``present`` False: ``reason`` says why (one line) and nothing else is filled in.
    Otherwise: ``page_size`` ({bytes, how}); ``n`` (complete runs with a composition);
    ``table``: one row per kind, then unattributed, free and MemTotal, then the dirty subset
    (``partition`` False): {key, label, before_kb, after_kb, change_kb, before_pages,
    after_pages, change_pages, share (of MemTotal, %), n, note}; ``unattributed_negative``
    and ``note``; ``missing_kinds``; ``in_use_kb``/``in_use_pages``; ``kernel``: the
    kernel's counts (median pages, min, max, n, reason when absent); ``reclaim``: what the
    cycle took by kind against shrink_all_memory's counts, with its ``sentence``;
    ``scan_ms``: the recorder's scan time (median, max, n).
    """
    reason = absent_reason(frames)
    if reason:
        return {"present": False, "reason": reason}
    runs = composition_runs(frames)
    have = runs["attributed_kb"].notna()
    complete = [r for r in frames.run_ids("complete") if r in runs.index and have.get(r, False)]
    if not complete:
        return {"present": False, "reason": "no complete run has a memory composition (runs "
                "with one: " + ", ".join(map(str, runs.index[have])) + ")"}
    size = page_size(frames)
    ps = size["bytes"]
    sub = runs.loc[complete]
    total = _median(sub["total_kb"])
    rows = []

    def row(key, label, before, after, partition=True, note=None):
        b, a = _median(sub[before]), (_median(sub[after]) if after else None)
        ch = _median(sub[after] - sub[before]) if after else None
        rows.append({"key": key, "label": label, "before_kb": b, "after_kb": a, "change_kb": ch,
                     "before_pages": _pages(b, ps), "after_pages": _pages(a, ps),
                     "change_pages": _pages(ch, ps),
                     "share": (b / total * 100 if b is not None and total else None),
                     "n": int(sub[before].notna().sum()), "partition": partition, "note": note})

    for kind in KINDS:
        row(kind, KIND_LABELS[kind], f"{kind}_kb", f"{kind}_after_kb",
            note=None if sub[f"{kind}_kb"].notna().any() else "not measured in any complete run")
    unatt = _median(sub["unattributed_kb"])
    negative = unatt is not None and unatt < 0
    missing = sorted({k for s in sub["missing_kinds"] for k in s.split(", ") if k},
                     key=KINDS.index)
    note = NEGATIVE_NOTE if negative else None
    if missing:
        note = ((note + "; ") if note else "") + "holds the kinds not measured: " + ", ".join(missing)
    row(UNATTRIBUTED, UNATTRIBUTED_LABEL, "unattributed_kb", "unattributed_after_kb", note=note)
    row("free", "Free (MemFree)", "free_kb", "free_after_kb")
    row("total", "MemTotal", "total_kb", None)
    row(SUBSET, f"{SUBSET_LABEL} (part of the file cache above)", f"{SUBSET}_kb",
        f"{SUBSET}_after_kb", partition=False)
    in_use = _median(sub["in_use_kb"])
    return {
        "present": True, "reason": None, "page_size": size, "n": len(complete),
        "runs": complete, "table": rows, "unattributed_kb": unatt,
        "unattributed_pages": _pages(unatt, ps), "unattributed_negative": negative,
        "missing_kinds": missing, "in_use_kb": in_use, "in_use_pages": _pages(in_use, ps),
        "kernel": _kernel_rows(frames, runs, complete),
        "reclaim": _reclaim(frames, runs, complete, ps),
        "scan_ms": _scan(frames, complete),
    }


def _scan(frames: CaptureFrames, complete: list[int]) -> dict:
    wide = frames.wide()
    if "composition_scan_ms" not in wide.columns:
        return {"median": None, "max": None, "n": 0,
                "reason": not_measured_reason(frames, "composition_scan_ms", complete or None)}
    vals = wide.loc[complete, "composition_scan_ms"]
    return {"median": _median(vals), "max": _minmax(vals)[1], "n": int(vals.notna().sum()),
            "reason": None}


# --------------------------------------------------------------------------- processes


def top_processes(frames: CaptureFrames, top: int = TOP_PROCESSES) -> dict:
    """The largest memory users before the cycle, **per command** (comm and command line):
    in each complete run the processes of one command are summed (a pid changes between
    boots and a command may run as several processes; the command is what compares across
    runs and captures), then the median over the runs where the command is in the
    recorder's top list — a run where it is not has no figure for it, not a 0.

    {"rows": [{comm, cmdline, processes (median count a run), runs (of n), anon_kb,
    shmem_kb, anon_shmem_kb, rss_kb, file_kb, swap_kb (medians), source}], "n": complete
    runs with rows, "by": what a row is, "reason": why there are none (or None)}.
    Sorted by anon + shmem, largest first.
    """
    p = frames.processes
    complete = frames.run_ids("complete")
    if p is None or p.empty:
        return {"rows": [], "n": 0, "by": "command", "reason": NO_PROCESSES}
    p = p[p["run_id"].isin(complete)]
    if p.empty:
        return {"rows": [], "n": 0, "by": "command",
                "reason": "no complete run has per-process memory"}
    num = ["rss_kb", "anon_kb", "shmem_kb", "file_kb", "swap_kb"]
    p = p.assign(**{c: pd.to_numeric(p[c], errors="coerce") for c in num},
                 comm=p["comm"].fillna("").astype(str), cmdline=p["cmdline"].fillna("").astype(str),
                 source=p["source"].fillna("").astype(str))
    p = p.assign(anon_shmem_kb=p[["anon_kb", "shmem_kb"]].sum(axis=1, min_count=1))
    keys = ["comm", "cmdline"]
    per_run = p.groupby([*keys, "run_id"], sort=False).agg(
        processes=("pid", "count"),
        **{c: (c, lambda s: s.sum(min_count=1)) for c in [*num, "anon_shmem_kb"]},
        source=("source", lambda s: ", ".join(sorted(set(x for x in s if x)))))
    per_run = per_run.reset_index()
    runs_with = int(per_run["run_id"].nunique())
    agg = per_run.groupby(keys, sort=False).agg(
        runs=("run_id", "nunique"), processes=("processes", "median"),
        **{c: (c, "median") for c in [*num, "anon_shmem_kb"]},
        source=("source", lambda s: ", ".join(sorted({x for v in s for x in v.split(", ") if x}))))
    agg = agg.reset_index().sort_values("anon_shmem_kb", ascending=False, na_position="last")
    rows = [{k: (_num(v) if k in (*num, "anon_shmem_kb", "processes") else v)
             for k, v in r.items()} for r in agg.head(top).to_dict("records")]
    for r in rows:
        r["runs"] = int(r["runs"])
    return {"rows": rows, "n": runs_with, "by": "command", "reason": None,
            "more": max(0, len(agg) - top)}


# --------------------------------------------------------------------------- image_size sweep


def image_size_sweep(frames: CaptureFrames | list[CaptureFrames]) -> dict:
    """Image size against ``/sys/power/image_size``: per distinct setting
    (``image_size_setting_bytes``) of the complete runs of one capture, or of several pooled
    (e.g. the lab's captures at image_size 0, 100M and the default):

    {"rows": [{setting_bytes, setting_pct (of MemTotal, or None), n, image_pages (median),
    image_min, image_max, cycle_ms (median), cycle_min, cycle_max, create_image_ms (median)}]
    ascending by setting, "spec": the recorder's ``image_size_sweep`` meta (or None),
    "left_out": complete runs without a setting, "reason": why there is no sweep (fewer than
    2 settings), else None}.
    """
    frames_list = frames if isinstance(frames, (list, tuple)) else [frames]
    parts = []
    for f in frames_list:
        wide = f.wide().reindex(f.run_ids("complete"))
        cols = ["image_size_setting_bytes", "image_pages", "cycle_ms", "create_image_ms",
                "mem_total_kb"]
        parts.append(pd.DataFrame({c: wide[c] if c in wide.columns else np.nan for c in cols},
                                  index=wide.index))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    spec = next((f.meta.get("image_size_sweep") for f in frames_list
                 if f.meta.get("image_size_sweep")), None)
    if table.empty:
        return {"rows": [], "spec": spec, "left_out": 0, "reason": "no complete run"}
    left_out = int(table["image_size_setting_bytes"].isna().sum())
    table = table[table["image_size_setting_bytes"].notna()]
    rows = []
    for setting, g in table.groupby("image_size_setting_bytes", sort=True):
        total = _median(g["mem_total_kb"])
        ilo, ihi = _minmax(g["image_pages"])
        clo, chi = _minmax(g["cycle_ms"])
        rows.append({"setting_bytes": float(setting),
                     "setting_pct": float(setting) / (total * 1024) * 100 if total else None,
                     "n": int(len(g)), "image_pages": _median(g["image_pages"]),
                     "image_min": ilo, "image_max": ihi, "cycle_ms": _median(g["cycle_ms"]),
                     "cycle_min": clo, "cycle_max": chi,
                     "create_image_ms": _median(g["create_image_ms"])})
    reason = None
    if len(rows) < 2:
        reason = ("one image_size setting in the complete runs" if rows else
                  "no complete run says its image_size setting") + (
            ": `snapprof record --image-size-sweep 0,25%,50%,default` records several")
    return {"rows": rows, "spec": spec, "left_out": left_out, "reason": reason}


# --------------------------------------------------------------------------- all of it


def composition(frames: CaptureFrames) -> dict:
    """The report's "what is in the image" section as plain data: ``summary``
    (composition_summary), ``processes`` (top_processes), ``sweep`` (image_size_sweep)."""
    return {"summary": composition_summary(frames), "processes": top_processes(frames),
            "sweep": image_size_sweep(frames)}
