"""A capture as Chrome trace-event JSON (the format the Perfetto UI opens).

One process per run (pid = run_id, named "run N (status)") with thread tracks:

- ``phases``: one complete event ("X") per phase of snapprof.analysis.phases; ``dur`` is the
  phase's ``duration_ms``. The copy phase's duration is the copy_window_ms metric (clocks
  stop during the copy) and its args say so. A phase whose clock span contains the injected
  sleep time (syscore_resume) is drawn ending at its recorded end, so it follows the copy.
- ``devices``: one "X" event per device PM callback ("device driver stage"; args event,
  error). Asynchronous callbacks that overlap without nesting go to extra lanes
  ("devices async N"), because a track's slices must nest.
- ``freezer``: one "X" event per freezer pass (try_to_freeze_tasks) and one event per task
  the freezer acted on. The capture keeps each task's freeze latency but not the time it
  entered the refrigerator, so a task is an instant event at the end of its freezer pass
  (when it was frozen at the latest) with its latency in args; a latency that was not
  measured is absent from args.
- counters ("C") named "pages" at the run's start: saveable/preallocated/copy/zero/image
  pages, each only when the run measured it.

Timestamps are µs relative to the capture's first event (``metadata.time_base_ns`` is that
event's CLOCK_BOOTTIME). Nothing is escaped by hand: the caller serialises with json.dumps.
"""

from __future__ import annotations

import math

import pandas as pd

from snapprof.analysis.frames import CaptureFrames

PAGE_COUNTERS = ("saveable_pages", "preallocated_pages", "copy_pages", "zero_pages",
                 "image_pages")
TID_PHASES, TID_FREEZER, TID_DEVICES = 1, 2, 3
COPY_NOTE = ("duration is the copy_window_ms metric: every clock stands still during the "
             "atomic copy, so it is not a timestamp difference")
SHIFTED_NOTE = ("drawn ending at its recorded end: its clock span includes the sleep time "
                "injected at resume, which its duration leaves out")
TASK_NOTE = ("placed at the end of its freezer pass: the capture keeps the freeze latency, "
             "not the time the task entered the refrigerator")


def _num(value) -> float | None:
    """A finite float, or None for NULL/NaN."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _clean(args: dict) -> dict:
    """Drop absent values (never written as 0) and make numbers JSON-native."""
    out = {}
    for key, value in args.items():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        out[key] = value
    return out


def _text(value) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) \
        or pd.isna(value) else str(value)


def time_base_ns(frames: CaptureFrames) -> int | None:
    """CLOCK_BOOTTIME of the capture's first event (events, phases, devices, run starts)."""
    candidates = [frames.events["ts_ns"], frames.phases["start_ns"],
                  frames.devices["start_ns"], frames.runs["started_ns"]]
    lows = [pd.to_numeric(s, errors="coerce").min() for s in candidates if len(s)]
    lows = [v for v in lows if _num(v) is not None]
    return int(min(lows)) if lows else None


def _meta_event(pid: int, tid: int | None, name: str, args: dict) -> dict:
    ev = {"ph": "M", "pid": pid, "name": name, "args": args}
    if tid is not None:
        ev["tid"] = tid
    return ev


def _phase_events(pid: int, phases: pd.DataFrame, us) -> list[dict]:
    out = []
    for row in phases.itertuples(index=False):
        start, end, dur_ms = _num(row.start_ns), _num(row.end_ns), _num(row.duration_ms)
        if start is None:
            continue
        args = _clean({"method": _text(row.method)})
        if dur_ms is None:
            args["duration"] = "not measured"
            out.append({"ph": "i", "s": "t", "name": row.phase, "cat": "phase", "pid": pid,
                        "tid": TID_PHASES, "ts": us(start), "args": args})
            continue
        dur_ns = dur_ms * 1e6
        ts = start
        if row.phase == "copy":
            args["note"] = COPY_NOTE
        elif end is not None and (end - start) - dur_ns > 1000:
            ts = end - dur_ns
            args["note"] = SHIFTED_NOTE
        out.append({"ph": "X", "name": row.phase, "cat": "phase", "pid": pid,
                    "tid": TID_PHASES, "ts": us(ts), "dur": dur_ms * 1000.0, "args": args})
    return out


def _lanes(spans: list[tuple[float, float]]) -> list[int]:
    """Per span (in the given order, sorted by start), the first lane where it nests."""
    stacks: list[list[float]] = []
    lanes = []
    for start, end in spans:
        for i, stack in enumerate(stacks):
            while stack and stack[-1] <= start:
                stack.pop()
            if not stack or end <= stack[-1]:
                stack.append(end)
                lanes.append(i)
                break
        else:
            stacks.append([end])
            lanes.append(len(stacks) - 1)
    return lanes


def _device_events(pid: int, devices: pd.DataFrame, us) -> tuple[list[dict], int]:
    """X (or instant, without a duration) events; returns them and the number of lanes."""
    d = devices[devices["start_ns"].notna()].sort_values("start_ns", kind="stable")
    rows = list(d.itertuples(index=False))
    spans = [(r.start_ns, r.start_ns + (_num(r.duration_ns) or 0.0)) for r in rows]
    lanes = _lanes(spans)
    out = []
    for row, lane in zip(rows, lanes):
        name = " ".join(p for p in (_text(row.device), _text(row.driver), _text(row.stage)) if p)
        args = _clean({"event": _text(row.event), "error": _num(row.error),
                       "parent": _text(row.parent), "pid": _num(row.pid)})
        ev = {"name": name, "cat": "device", "pid": pid, "tid": TID_DEVICES + lane,
              "ts": us(row.start_ns), "args": args}
        dur = _num(row.duration_ns)
        if dur is None:
            ev.update(ph="i", s="t")
        else:
            ev.update(ph="X", dur=dur / 1000.0)
        out.append(ev)
    return out, max(lanes, default=0) + 1


def _freezer_events(pid: int, run_id: int, frames: CaptureFrames, phases: pd.DataFrame,
                    us) -> list[dict]:
    out = []
    ev = frames.events[(frames.events["run_id"] == run_id)
                       & (frames.events["name"] == "try_to_freeze_tasks")]
    pass_end: dict[str, float] = {}
    open_begin: dict[str, tuple[float, str]] = {}
    for row in ev.itertuples(index=False):
        detail = _text(row.detail) or ""
        fields = dict(p.split("=", 1) for p in detail.split() if "=" in p)
        stage = fields.get("stage", "")
        if row.kind == "begin":
            open_begin[stage] = (row.ts_ns, detail)
        elif row.kind == "end" and stage in open_begin:
            start, _ = open_begin.pop(stage)
            pass_end[stage] = row.ts_ns
            args = _clean({"stage": stage, "result": _num(row.value),
                           "passes": _num(fields.get("passes")),
                           "swept": _num(fields.get("swept"))})
            out.append({"ph": "X", "name": f"freezer pass ({stage})", "cat": "freezer",
                        "pid": pid, "tid": TID_FREEZER, "ts": us(start),
                        "dur": (row.ts_ns - start) / 1000.0, "args": args})
    # without a recorded pass, the end of the freeze phase of that stage
    for stage, phase in (("user", "freeze_user"), ("kernel", "freeze_kernel")):
        if stage not in pass_end:
            end = phases.loc[phases["phase"] == phase, "end_ns"].dropna()
            if len(end):
                pass_end[stage] = float(end.iloc[0])
    tasks = frames.tasks[frames.tasks["run_id"] == run_id]
    for row in tasks.itertuples(index=False):
        at = pass_end.get(row.stage)
        if at is None:
            continue
        args = _clean({"pid": _num(row.pid), "tgid": _num(row.tgid), "stage": row.stage,
                       "kthread": _num(row.kthread), "frozen": _num(row.frozen),
                       "freeze_latency_ms": _num(row.freeze_latency_ms)})
        if "freeze_latency_ms" not in args:
            args["freeze_latency"] = "not measured"
        args["note"] = TASK_NOTE
        out.append({"ph": "i", "s": "t", "name": f"{row.comm} ({row.pid})", "cat": "task",
                    "pid": pid, "tid": TID_FREEZER, "ts": us(at), "args": args})
    return out


def _run_start(run, phases: pd.DataFrame, frames: CaptureFrames) -> float | None:
    start = _num(run.started_ns)
    if start is not None:
        return start
    ts = frames.events.loc[frames.events["run_id"] == run.run_id, "ts_ns"]
    return float(ts.min()) if len(ts) else _num(phases["start_ns"].min())


def build_trace(frames: CaptureFrames) -> dict:
    """The trace as a JSON-ready dict: {"traceEvents", "displayTimeUnit", "metadata"}."""
    first = time_base_ns(frames)
    base = first or 0  # no timestamp at all: nothing is placed on the time axis

    def us(ns) -> float:
        return (float(ns) - base) / 1000.0

    wide = frames.wide()
    events: list[dict] = []
    for run in frames.runs.itertuples(index=False):
        rid = int(run.run_id)
        phases = frames.phases[frames.phases["run_id"] == rid]
        events.append(_meta_event(rid, None, "process_name", {"name": f"run {rid} ({run.status})"}))
        events.append(_meta_event(rid, None, "process_sort_index", {"sort_index": rid}))
        devs, lanes = _device_events(rid, frames.devices[frames.devices["run_id"] == rid], us)
        threads = [(TID_PHASES, "phases"), (TID_FREEZER, "freezer"), (TID_DEVICES, "devices")]
        threads += [(TID_DEVICES + i, f"devices async {i}") for i in range(1, lanes)]
        for tid, name in threads:
            events.append(_meta_event(rid, tid, "thread_name", {"name": name}))
            events.append(_meta_event(rid, tid, "thread_sort_index", {"sort_index": tid}))
        events += _phase_events(rid, phases, us)
        events += _freezer_events(rid, rid, frames, phases, us)
        events += devs
        start = _run_start(run, phases, frames)
        pages = {}
        if rid in wide.index:
            pages = _clean({k: _num(wide.at[rid, k]) for k in PAGE_COUNTERS if k in wide.columns})
        if pages and start is not None:
            events.append({"ph": "C", "name": "pages", "pid": rid, "ts": us(start),
                           "args": pages})
    metadata = {k: str(v) for k, v in frames.meta.items()}
    if frames.warnings:
        metadata["capture_warnings"] = list(frames.warnings)
    metadata["source"] = frames.source or ""
    if first is None:  # never a made-up 0: the capture holds no timestamp to start from
        metadata["time_base"] = "none: the capture holds no timestamp"
    else:
        metadata.update({"time_base_ns": first,
                         "time_base": "CLOCK_BOOTTIME of the capture's first event; ts in µs"})
    return {"traceEvents": events, "displayTimeUnit": "ms", "metadata": metadata}


def render_trace(trace: dict) -> str:
    """The trace as strict JSON text (no NaN/Infinity; control characters escaped)."""
    from snapprof.report.json import strict_dumps

    return strict_dumps(trace)
