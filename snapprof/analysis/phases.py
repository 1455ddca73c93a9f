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
method says so ("tracepoint, less sleep-time"). A run that reached the copy without a
``sleep_time`` event (its probe not attached) has the same jump, of unknown size, inside
the phase open across the copy's place: that phase's duration is NaN and its method says
why (CLOCK_JUMP). After a real hibernation the jump is the whole time the machine was away
(image write, power-off, the boot kernel's read, the restore): ``after_copy`` lays out what
the capture knows of it.

Some kernels also set the clock *back* during a span: on 7.2/7.3 the BPF clock kept running
through swsusp_save() and timekeeping_resume() then set it back (seen as syscore_resume at
-758 ms: its clock difference was less than the sleep time injected inside it). A phase
whose end is stamped before its begin, or whose clock difference is less than the sleep
time injected inside it, has no duration (NaN, never negative) and its method says why
(CLOCK_BACK).
"""

from __future__ import annotations

import math
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

#: systemd's part of a `systemctl hibernate` (the recorder's journal events, begin/end pairs on
#: CLOCK_BOOTTIME; snapprof.record.journal.TIMELINE): drawn on the timeline above the kernel's
#: phases, never counted as one.
SYSTEMD_SPANS: dict[str, str] = {
    "systemd:logind": "systemd: logind → hibernate unit",
    "systemd:sleep_pre": "systemd: unit start → sleep call",
    "systemd:slice_freeze": "systemd: user.slice freeze",
    "systemd:sleep": "systemd: sleep call",
    "systemd:slice_thaw": "systemd: user.slice thaw",
    "systemd:sleep_post": "systemd: return → unit end",
}
#: Span of the shrink step inside ``prealloc`` (drawn nested on the timeline, not a phase).
SHRINK_EVENT = "shrink_all_memory"
#: Instant event: the sleep time (ns, in ``value``) the kernel injected into CLOCK_BOOTTIME.
SLEEP_EVENT = "sleep_time"
LESS_SLEEP = ", less sleep-time"
#: Method suffix of a phase whose span holds the clocks' restart after the copy, by an amount
#: no sleep-time report gave: its duration is NaN.
CLOCK_JUMP = ", holds the clock jump after the copy (not measured)"
#: Method suffix of a phase whose span the clock was set back in (its end stamped before its
#: begin, or less clock time than the sleep injected inside it): its duration is NaN.
CLOCK_BACK = ", the clock was set back during the span (not measured)"


def _method(source: str) -> str:
    return "tracepoint" if source.startswith("pm:") else "probe"


def spans(events: pd.DataFrame, names, spread: bool = False,
          back: bool = False) -> pd.DataFrame:
    """Begin/end spans of the given event names per run: run_id, name, start_ns, end_ns.

    The span starts at the first ``begin``; it ends at the first ``end`` at or after it
    (or, with ``spread``, the last ``end`` of the run). end_ns is NaN when no end was
    recorded (a run that stopped half-way). ``back``: add a ``back`` column, True where the
    only ends recorded are stamped before the begin (the clock was set back in between).
    """
    ev = events[events["name"].isin(list(names)) & events["kind"].isin(["begin", "end"])]
    cols = ["run_id", "name", "start_ns", "end_ns"] + (["back"] if back else [])
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
    if back:
        ended = ends.groupby(["run_id", "name"], as_index=False).size()
        out = out.merge(ended, on=["run_id", "name"], how="left")
        out["back"] = out["end_ns"].isna() & out["size"].notna()
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
        s = spans(events, pdef.sources, pdef.spread, back=True)
        if s.empty:
            continue
        rank = {src: i for i, src in enumerate(pdef.sources)}
        s = s.assign(rank=s["name"].map(rank)).sort_values(["run_id", "rank"])
        s = s.drop_duplicates("run_id", keep="first")
        s["phase"] = pdef.name
        s["method"] = s["name"].map(_method)
        parts.append(s)
    frame = (pd.concat(parts, ignore_index=True) if parts
             else pd.DataFrame(columns=["run_id", "name", "start_ns", "end_ns", "back", "phase",
                                        "method"]))
    frame["duration_ms"] = (frame["end_ns"] - frame["start_ns"]) / 1e6
    frame = _less_sleep(frame, events)
    frame = _clock_back(frame)
    copy = _copy_phase(frame, events, metrics)
    frame = _unmeasured_jump(frame, copy, events)
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


def _clock_back(frame: pd.DataFrame) -> pd.DataFrame:
    """Phases the clock was set back in get no duration, and say so: an end stamped before
    the begin (``spans(..., back=True)``), or a clock difference less than the sleep time
    the kernel injected inside the span (``_less_sleep`` left it negative). A duration is
    never negative."""
    if frame.empty:
        return frame
    frame = frame.reset_index(drop=True)
    hit = frame["back"].eq(True) | (frame["duration_ms"] < 0)
    if hit.any():
        frame.loc[hit, "duration_ms"] = np.nan
        frame.loc[hit, "method"] = frame.loc[hit, "method"] + CLOCK_BACK
    return frame


def _unmeasured_jump(frame: pd.DataFrame, copy: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Runs that reached the copy with no sleep-time report: the phase open across the copy's
    place (it starts at or before it and ends after it: syscore_resume) holds the clocks'
    jump by an unknown amount. Its duration becomes NaN, its method says why."""
    if copy.empty or frame.empty:
        return frame
    at = copy[copy["start_ns"].notna() & ~copy["run_id"].isin(_sleeps(events)["run_id"])]
    if at.empty:
        return frame
    frame = frame.reset_index(drop=True)
    j = frame.reset_index().merge(at[["run_id", "start_ns"]].rename(columns={"start_ns": "copy_ns"}),
                                  on="run_id")
    hit = j.loc[(j["start_ns"] <= j["copy_ns"]) & (j["end_ns"] > j["copy_ns"]), "index"]
    if hit.empty:
        return frame
    frame.loc[hit, "duration_ms"] = np.nan
    frame.loc[hit, "method"] = frame.loc[hit, "method"] + CLOCK_JUMP
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


# --------------------------------------------------------------------------- after the copy

#: What follows the atomic copy in a real hibernation, in order, and the metric that times
#: each step (None: no clock in a capture times it). The writing kernel writes the image
#: and powers off; the machine is off; the boot kernel boots, reads the image and jumps
#: into it; the restored kernel carries on where the copy was taken.
AFTER_COPY_STEPS: tuple[tuple[str, str, str | None], ...] = (
    ("image_write", "Image write", "write_ms"),
    ("power_off", "Power-off", None),
    ("boot", "Boot", None),
    ("image_read", "Image read", "read_ms"),
    ("restore", "Restore", None),
)
#: The lab's figure for the powered-off gap (host clock, host overhead included).
OFFLINE_METRIC = "lab_offline_ms"


def after_copy(phases: pd.DataFrame, metrics: pd.DataFrame) -> dict:
    """What one real-hibernation run's capture knows of the time after the atomic copy.

    ``phases``/``metrics``: that run's rows. The restored kernel's CLOCK_BOOTTIME moves on
    by the whole time away, so the window from the copy's place (end of syscore_suspend) to
    where the clock runs again (the sleep-time report, else the end of the phase that holds
    the jump) is measured on it; nothing inside it is, except what the two kernels' own
    logs time (image write and read) and the lab's host clock around the powered-off gap.

    Returns ``start_ns``/``end_ns`` of the window (NaN when unknown), ``window_ms``,
    ``window_method``, ``steps`` (AFTER_COPY_STEPS as dicts: phase, label, duration_ms,
    method, source; duration None when not timed), ``offline`` (the lab_offline_ms row as
    a dict, or None) and ``rest_ms``: the window less the timed steps (None when either is
    unknown): the time no clock in the capture splits up.
    """
    copy = phases[phases["phase"] == "copy"]
    start = float(copy["start_ns"].iloc[0]) if len(copy) else math.nan
    end, method = math.nan, None
    if len(copy) and not math.isnan(start):
        c_end = float(copy["end_ns"].iloc[0])
        jump = phases[phases["method"].fillna("").str.endswith(CLOCK_JUMP)]
        if not math.isnan(c_end) and c_end > start:
            end, method = c_end, "sleep-time: the restored kernel's report of the time away"
        elif len(jump):
            end = float(jump["end_ns"].iloc[0])
            method = ("the restored kernel's CLOCK_BOOTTIME, which it moved on by the time away, "
                      f"to the end of {jump['phase'].iloc[0]}")
    window = (end - start) / 1e6 if not (math.isnan(start) or math.isnan(end)) else None
    by_name = {r["name"]: r for r in metrics.to_dict("records")}
    steps = []
    for phase, label, metric in AFTER_COPY_STEPS:
        row = by_name.get(metric) if metric else None
        steps.append({"phase": phase, "label": label,
                      "duration_ms": float(row["value"]) if row else None,
                      "method": row["method"] if row else None,
                      "source": row.get("source") if row else None})
    timed = [s["duration_ms"] for s in steps if s["duration_ms"] is not None]
    off = by_name.get(OFFLINE_METRIC)
    return {
        "start_ns": start, "end_ns": end, "window_ms": window, "window_method": method,
        "steps": steps,
        "offline": ({"duration_ms": float(off["value"]), "method": off["method"],
                     "source": off.get("source")} if off else None),
        "rest_ms": window - sum(timed) if window is not None else None,
    }
