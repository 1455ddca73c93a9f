"""Hibernation phases derived from a capture's events (pandas, vectorised over all runs).

A phase is a span between a ``begin`` and an ``end`` event of one kernel function
(method ``probe``) or one ``power:suspend_resume`` action (``pm:<action>``, method
``tracepoint``). When several sources can give a phase, the first one present in a run
wins (the order in ``PHASES``).

The atomic copy is special: every BPF clock stands still between ``syscore_suspend`` and
``syscore_resume``, so its *duration* is the ``copy_window_ms`` metric, with that metric's
method (sleep-time or printk-time); without the metric it is NaN. Its *position* starts at
the end of syscore_suspend (where the clocks froze) and ends where CLOCK_BOOTTIME resumed:
at the ``sleep_time`` instant event when there is one (timekeeping_resume, inside
syscore_resume, injects the sleep time into BOOTTIME there), else at the begin of
syscore_resume.

That injection also lands inside the span of whatever phase is open at that moment
(syscore_resume): the duration of a phase whose span contains a ``sleep_time`` event is its
clock difference less the injected sleep time (exact: it is the same number), and its
method says so ("tracepoint, less sleep-time").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PHASE_COLUMNS = ["run_id", "phase", "start_ns", "end_ns", "duration_ms", "method"]


@dataclass(frozen=True)
class PhaseDef:
    name: str
    label: str
    sources: tuple[str, ...]  # event names, first present wins
    spread: bool = False      # first begin .. last end (one begin/end pair per CPU)


PHASES: tuple[PhaseDef, ...] = (
    PhaseDef("sync", "Filesystem sync", ("ksys_sync_helper", "pm_sleep_fs_sync")),
    PhaseDef("freeze_user", "Freeze user space", ("freeze_processes",)),
    PhaseDef("prealloc", "Preallocate / shrink", ("hibernate_preallocate_memory",)),
    PhaseDef("freeze_kernel", "Freeze kernel threads", ("freeze_kernel_threads",)),
    PhaseDef("dpm_prepare", "Devices: prepare", ("pm:dpm_prepare",)),
    PhaseDef("dpm_suspend", "Devices: freeze", ("pm:dpm_suspend",)),
    PhaseDef("dpm_suspend_late", "Devices: freeze late", ("pm:dpm_suspend_late",)),
    PhaseDef("dpm_suspend_noirq", "Devices: freeze noirq", ("pm:dpm_suspend_noirq",)),
    PhaseDef("cpu_off", "CPUs off", ("pm:CPU_OFF",), spread=True),
    PhaseDef("syscore_suspend", "Syscore suspend", ("pm:syscore_suspend",)),
    PhaseDef("copy", "Atomic copy", ()),
    PhaseDef("syscore_resume", "Syscore resume", ("pm:syscore_resume",)),
    PhaseDef("cpu_on", "CPUs on", ("pm:CPU_ON",), spread=True),
    PhaseDef("dpm_resume_noirq", "Devices: resume noirq", ("pm:dpm_resume_noirq",)),
    PhaseDef("dpm_resume_early", "Devices: resume early", ("pm:dpm_resume_early",)),
    PhaseDef("dpm_resume", "Devices: resume", ("pm:dpm_resume",)),
    PhaseDef("dpm_complete", "Devices: complete", ("pm:dpm_complete",)),
    PhaseDef("image_write", "Image write", ("swsusp_write",)),
    PhaseDef("thaw", "Thaw", ("thaw_processes", "pm:thaw_processes")),
    PhaseDef("image_read", "Image read", ("swsusp_read",)),
    PhaseDef("restore", "Restore", ("hibernation_restore",)),
)

#: Phase names in cycle order.
PHASE_ORDER: tuple[str, ...] = tuple(p.name for p in PHASES)
PHASE_LABELS: dict[str, str] = {p.name: p.label for p in PHASES}

#: Span of the shrink step inside ``prealloc`` (drawn nested on the timeline, not a phase).
SHRINK_EVENT = "shrink_all_memory"
#: Instant event: the sleep time (ns, in ``value``) the kernel injected into CLOCK_BOOTTIME.
SLEEP_EVENT = "sleep_time"
LESS_SLEEP = ", less sleep-time"


def _method(source: str) -> str:
    return "tracepoint" if source.startswith("pm:") else "probe"


def spans(events: pd.DataFrame, names, spread: bool = False) -> pd.DataFrame:
    """Begin/end spans of the given event names per run: run_id, name, start_ns, end_ns.

    The span starts at the first ``begin``; it ends at the first ``end`` at or after it
    (or, with ``spread``, the last ``end`` of the run). end_ns is NaN when no end was
    recorded (a run that stopped half-way).
    """
    ev = events[events["name"].isin(list(names)) & events["kind"].isin(["begin", "end"])]
    cols = ["run_id", "name", "start_ns", "end_ns"]
    if ev.empty:
        return pd.DataFrame(columns=cols)
    begins = (ev[ev["kind"] == "begin"].groupby(["run_id", "name"], as_index=False)["ts_ns"].min()
              .rename(columns={"ts_ns": "start_ns"}))
    ends = ev[ev["kind"] == "end"][["run_id", "name", "ts_ns"]]
    joined = ends.merge(begins, on=["run_id", "name"], how="inner")
    joined = joined[joined["ts_ns"] >= joined["start_ns"]]
    agg = "max" if spread else "min"
    end = joined.groupby(["run_id", "name"], as_index=False)["ts_ns"].agg(agg).rename(
        columns={"ts_ns": "end_ns"})
    out = begins.merge(end, on=["run_id", "name"], how="left")
    out["start_ns"] = out["start_ns"].astype("float64")
    out["end_ns"] = out["end_ns"].astype("float64")
    return out[cols]


def derive_phases(events: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """The phases frame: run_id, phase, start_ns, end_ns, duration_ms, method.

    Rows are sorted by run and start time (canonical order breaks ties). A phase whose end
    was not recorded has end_ns and duration_ms NaN. Times are CLOCK_BOOTTIME ns as floats
    (NaN-able).
    """
    parts = []
    for pdef in PHASES:
        if not pdef.sources:
            continue
        s = spans(events, pdef.sources, pdef.spread)
        if s.empty:
            continue
        rank = {src: i for i, src in enumerate(pdef.sources)}
        s = s.assign(rank=s["name"].map(rank)).sort_values(["run_id", "rank"])
        s = s.drop_duplicates("run_id", keep="first")
        s["phase"] = pdef.name
        s["method"] = s["name"].map(_method)
        parts.append(s)
    frame = (pd.concat(parts, ignore_index=True) if parts
             else pd.DataFrame(columns=["run_id", "name", "start_ns", "end_ns", "phase", "method"]))
    frame["duration_ms"] = (frame["end_ns"] - frame["start_ns"]) / 1e6
    frame = _less_sleep(frame, events)
    copy = _copy_phase(frame, events, metrics)
    frame = pd.concat([frame, copy], ignore_index=True) if not copy.empty else frame
    frame["order"] = frame["phase"].map({n: i for i, n in enumerate(PHASE_ORDER)})
    frame = frame.sort_values(["run_id", "start_ns", "order"], na_position="last")
    out = frame[PHASE_COLUMNS].reset_index(drop=True)
    out["run_id"] = out["run_id"].astype("int64")
    for col in ("start_ns", "end_ns", "duration_ms"):
        out[col] = out[col].astype("float64")
    return out


def _sleeps(events: pd.DataFrame) -> pd.DataFrame:
    ev = events[(events["name"] == SLEEP_EVENT) & (events["kind"] == "instant")]
    return ev[["run_id", "ts_ns", "value"]].dropna()


def _less_sleep(frame: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Subtract the injected sleep time from the phases whose span contains its event."""
    sleeps = _sleeps(events)
    if sleeps.empty or frame.empty:
        return frame
    frame = frame.reset_index(drop=True)
    j = frame.reset_index().merge(sleeps, on="run_id")
    j = j[(j["ts_ns"] >= j["start_ns"]) & (j["ts_ns"] <= j["end_ns"])]
    if j.empty:
        return frame
    slept = j.groupby("index")["value"].sum()
    frame.loc[slept.index, "duration_ms"] -= slept.astype("float64") / 1e6
    frame.loc[slept.index, "method"] = frame.loc[slept.index, "method"] + LESS_SLEEP
    return frame


#: Events that show a run reached the atomic copy (pm_test=core stops before it).
COPY_EVENTS = ("pm:machine_suspend", "swsusp_save")


def _copy_phase(frame: pd.DataFrame, events: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Copy rows for runs that reached the copy (copy_window_ms measured, or a machine_suspend
    or swsusp_save event): placed between syscore_suspend and syscore_resume, length from
    the metric (NaN without it)."""
    cw = metrics[metrics["name"] == "copy_window_ms"][["run_id", "value", "method"]]
    reached = events.loc[events["name"].isin(COPY_EVENTS), "run_id"]
    sus = frame[frame["phase"] == "syscore_suspend"][["run_id", "end_ns"]].rename(
        columns={"end_ns": "start_ns"})
    res = frame[frame["phase"] == "syscore_resume"][["run_id", "start_ns"]].rename(
        columns={"start_ns": "end_ns"})
    runs = pd.concat([cw["run_id"], reached]).drop_duplicates()
    if runs.empty:
        return pd.DataFrame(columns=PHASE_COLUMNS)
    out = pd.DataFrame({"run_id": runs.values})
    out = out.merge(sus, on="run_id", how="left").merge(res, on="run_id", how="left")
    out = out.merge(cw, on="run_id", how="left").rename(columns={"value": "duration_ms"})
    resumed = _sleeps(events).groupby("run_id")["ts_ns"].min()
    has = out["run_id"].isin(resumed.index)
    out.loc[has, "end_ns"] = out.loc[has, "run_id"].map(resumed).astype("float64")
    out["phase"] = "copy"
    out["method"] = out["method"].where(out["method"].notna(), None)
    # A syscore_resume that begins before syscore_suspend ended would be a broken record.
    bad = out["end_ns"] < out["start_ns"]
    out.loc[bad, "end_ns"] = np.nan
    return out[PHASE_COLUMNS]
