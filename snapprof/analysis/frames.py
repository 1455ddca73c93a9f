"""A capture as pandas data frames: the one entry point of the analysis side.

``load_capture(path)`` is the only function here that touches a path; it reads through
``snapprof.capture.CaptureReader`` (which refuses non-captures and newer versions) and
returns a ``CaptureFrames``. Reporters and ``compare`` take frames, never paths.

Absent measurements stay absent: a metric a run did not measure has no row in
``metrics`` and is NaN in ``wide()``; its reason, when the recorder knew it, is in
``not_measured``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from snapprof.analysis.derived import add_derived
from snapprof.analysis.phases import PHASE_COLUMNS, PHASE_ORDER, derive_phases
from snapprof.capture import COLUMNS, CaptureReader, table_sql

PROBE_COLUMNS = ["name", "area", "target", "attached", "reason"]
RUN_COLUMNS = ["run_id", "trigger", "status", "error", "started_ns", "ended_ns",
               "started_wall", "ringbuf_drops"]


@dataclass
class CaptureFrames:
    """Everything in one capture, as data frames (one row per stored row unless noted).

    meta          dict of capture-wide facts (kernel_release, machine, trigger, ...)
    probes        name, area, target, attached (bool), reason
    runs          run_id, trigger, status (complete/failed/incomplete), error, started_ns,
                  ended_ns, started_wall, ringbuf_drops
    metrics       long form: run_id, name, value, unit, method, source
    not_measured  run_id, name, reason
    phases        run_id, phase, start_ns, end_ns, duration_ms, method — derived from the
                  events (see snapprof.analysis.phases); ``copy`` takes its duration from
                  the copy_window_ms metric (clocks stop during the copy)
    tasks         run_id, pid, tgid, comm, kthread, stage, freeze_latency_ns, frozen,
                  + freeze_latency_ms
    devices       run_id, device, driver, parent, event, stage, start_ns, duration_ns,
                  error, pid, + duration_ms
    kmsg          run_id, seq, ts_us, level, text
    events        run_id, ts_ns, cpu, pid, comm, kind, name, value, detail
    culprits      run_id, kind, stage, pid, tgid, comm, cmdline, state, wchan, stack,
                  stack_source, note, probe_stack: the tasks that made a run fail (empty
                  for a capture of schema version 1); snapprof.analysis.failures explains them
    processes     run_id, pid, tgid, comm, cmdline, rss_kb, anon_kb, shmem_kb, file_kb,
                  swap_kb, source: the largest memory users just before each cycle (empty
                  before schema version 3)
    """

    meta: dict[str, str]
    probes: pd.DataFrame
    runs: pd.DataFrame
    metrics: pd.DataFrame
    not_measured: pd.DataFrame
    phases: pd.DataFrame
    tasks: pd.DataFrame
    devices: pd.DataFrame
    kmsg: pd.DataFrame
    events: pd.DataFrame
    culprits: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(COLUMNS["culprits"])))
    processes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(COLUMNS["processes"])))
    source: str | None = field(default=None)  # file name of the capture, for titles only
    #: PM callback time per run and device, read summed (``read_device_totals``) by a loader
    #: that left the per-callback ``devices`` rows out; None: computed from ``devices``
    summed_devices: pd.DataFrame | None = field(default=None, repr=False)
    #: tables a loader left out (empty frames here): ``load_captures(..., for_compare=True)``
    #: reads only what ``snapprof compare`` uses
    omitted: tuple[str, ...] = ()
    #: what the reader left out or recovered, counted, one line each (CaptureReader.warnings,
    #: then ``check_phases``); empty for a clean capture
    warnings: list[str] = field(default_factory=list)

    def wide(self) -> pd.DataFrame:
        """Index run_id (every run), one float column per metric name; NaN where absent."""
        index = pd.Index(self.runs["run_id"].astype("int64"), name="run_id")
        if self.metrics.empty:
            return pd.DataFrame(index=index, dtype="float64")
        table = self.metrics.pivot_table(index="run_id", columns="name", values="value",
                                         aggfunc="first")
        table.columns.name = None
        return table.reindex(index).astype("float64")

    def metric_info(self) -> pd.DataFrame:
        """Per metric name: unit and the method(s) it was measured with, ", "-joined."""
        if self.metrics.empty:
            return pd.DataFrame(columns=["unit", "method", "source"]).rename_axis("name")
        g = self.metrics.groupby("name")
        return pd.DataFrame({
            "unit": g["unit"].first(),
            "method": g["method"].agg(lambda s: ", ".join(sorted(set(s)))),
            "source": g["source"].agg(lambda s: ", ".join(sorted(set(s.dropna())))),
        })

    def run_ids(self, status: str | None = None) -> list[int]:
        runs = self.runs if status is None else self.runs[self.runs["status"] == status]
        return [int(r) for r in runs["run_id"]]

    def device_totals(self) -> pd.DataFrame:
        """PM callback time per run and device name (see ``device_totals``)."""
        if self.summed_devices is not None:
            return self.summed_devices
        return device_totals(self.devices)


def read_table(reader: CaptureReader, table: str) -> pd.DataFrame:
    """One per-run table of an open capture (columns as in snapprof.capture.COLUMNS, the row
    order of CaptureReader.table), as stored: no type conversion (``build_frames`` does it)."""
    return pd.DataFrame.from_records(reader.fetch(table_sql(table)), columns=list(COLUMNS[table]))


#: Columns of ``device_totals`` / ``read_device_totals``.
DEVICE_TOTAL_COLUMNS = ["run_id", "device", "driver", "duration_ns"]


def device_totals(devices: pd.DataFrame) -> pd.DataFrame:
    """Per run and device name (sorted by both): the driver of its first callback that named
    one, and ``duration_ns``, its callbacks' durations summed (exact integer ns, as floats;
    NaN when none of them was timed). Device names are not unique across buses: callbacks
    of devices sharing a name are summed together."""
    if devices.empty:
        return _device_totals_frame([])
    g = devices.groupby(["run_id", "device"])
    out = pd.DataFrame({"driver": g["driver"].first(),
                        "duration_ns": g["duration_ns"].sum(min_count=1)}).reset_index()
    return _typed_totals(out)


# MIN(...) over the rows that name a driver makes the bare ``driver`` column come from the
# first of them in recording order (SQLite's documented bare-column rule for min/max).
# TOTAL, not SUM: a float sum cannot overflow (the reader bounds each duration by 2**53 ns,
# so the sums of a real capture stay exact); NULL when no callback was timed.
_DEVICE_TOTALS_SQL = """
SELECT run_id, device, driver,
       CASE WHEN COUNT(duration_ns) THEN TOTAL(duration_ns) END AS duration_ns,
       MIN(CASE WHEN driver IS NOT NULL THEN rowid END)
FROM devices GROUP BY run_id, device ORDER BY run_id, device
"""


def read_device_totals(reader: CaptureReader) -> pd.DataFrame:
    """``device_totals`` of the capture's devices table, summed by SQLite: the same frame
    without pulling every callback row into pandas."""
    rows = [r[:4] for r in reader.fetch(_DEVICE_TOTALS_SQL)]
    return _device_totals_frame(rows)


def _device_totals_frame(rows) -> pd.DataFrame:
    return _typed_totals(pd.DataFrame.from_records(rows, columns=DEVICE_TOTAL_COLUMNS))


def _typed_totals(out: pd.DataFrame) -> pd.DataFrame:
    out = out[DEVICE_TOTAL_COLUMNS].reset_index(drop=True)
    out["run_id"] = out["run_id"].astype("int64")
    out["duration_ns"] = pd.to_numeric(out["duration_ns"]).astype("float64")
    return out


def load_capture(path: str | os.PathLike) -> CaptureFrames:
    """Read a capture into frames. Raises SnapprofError (one line) for bad input."""
    with CaptureReader(path) as reader:
        meta = reader.meta()
        probes = pd.DataFrame(reader.probes(), columns=PROBE_COLUMNS)
        runs = pd.DataFrame(reader.runs(), columns=RUN_COLUMNS)
        tables = {name: read_table(reader, name) for name in COLUMNS}
        warnings = reader.warnings
    return build_frames(meta, probes, runs, tables, source=os.path.basename(os.fspath(path)),
                        warnings=warnings)


def build_frames(meta: dict, probes: pd.DataFrame, runs: pd.DataFrame,
                 tables: dict[str, pd.DataFrame], source: str | None = None,
                 derive: bool = True, warnings: list[str] = ()) -> CaptureFrames:
    """Frames from already-read tables (column names as in snapprof.capture.COLUMNS).

    ``derive=False`` leaves ``phases`` empty and adds no derived figures
    (``snapprof.analysis.derived``), for a caller that derives them itself
    (``compare.load_captures`` derives the phases of many captures in one call)."""
    probes = probes.copy()
    probes["attached"] = probes["attached"].astype(bool)
    runs = runs.copy()
    runs["run_id"] = runs["run_id"].astype("int64")
    for col in ("started_ns", "ended_ns", "ringbuf_drops"):
        runs[col] = pd.to_numeric(runs[col], errors="coerce").astype("float64")

    metrics = tables["metrics"].copy()
    metrics["value"] = metrics["value"].astype("float64")
    events = tables["events"].copy()
    events["ts_ns"] = events["ts_ns"].astype("int64")
    tasks = tables["tasks"].copy()
    tasks["freeze_latency_ns"] = pd.to_numeric(tasks["freeze_latency_ns"]).astype("float64")
    tasks["freeze_latency_ms"] = tasks["freeze_latency_ns"] / 1e6
    devices = tables["devices"].copy()
    for col in ("start_ns", "duration_ns", "error"):
        devices[col] = pd.to_numeric(devices[col]).astype("float64")
    devices["duration_ms"] = devices["duration_ns"] / 1e6
    phases = derive_phases(events, metrics) if derive else pd.DataFrame(columns=PHASE_COLUMNS)
    frames = CaptureFrames(
        meta=dict(meta), probes=probes, runs=runs, metrics=metrics,
        not_measured=tables["not_measured"].copy(), phases=phases, tasks=tasks,
        devices=devices, kmsg=tables["kmsg"].copy(), events=events,
        culprits=tables.get("culprits", pd.DataFrame(columns=list(COLUMNS["culprits"]))).copy(),
        processes=tables.get("processes", pd.DataFrame(columns=list(COLUMNS["processes"]))).copy(),
        source=source,
        warnings=list(warnings))
    if derive:
        check_phases(frames)
        add_derived(frames)
    return frames


def check_phases(frames: CaptureFrames) -> None:
    """Phases whose end comes before their beginning (time running backwards within a span
    of the capture's events) keep their start and lose their end and duration (absent,
    never negative), counted in ``frames.warnings``."""
    ph = frames.phases
    if ph.empty:
        return
    back = (ph["duration_ms"] < 0) | (ph["end_ns"] < ph["start_ns"])
    if back.any():
        frames.phases = ph.assign(
            end_ns=ph["end_ns"].mask(back), duration_ms=ph["duration_ms"].mask(back))
        frames.warnings.append(f"{int(back.sum())} phases ending before they begin "
                               "(their end and duration left out)")


def phase_durations(frames: CaptureFrames) -> pd.DataFrame:
    """Index run_id (every run), one column per phase present in the capture (cycle order),
    duration in ms; NaN where a run lacks the phase or its end."""
    index = pd.Index(frames.runs["run_id"].astype("int64"), name="run_id")
    ph = frames.phases
    if ph.empty:
        return pd.DataFrame(index=index, dtype="float64")
    table = ph.pivot_table(index="run_id", columns="phase", values="duration_ms",
                           aggfunc="first", dropna=False)
    cols = [p for p in PHASE_ORDER if p in table.columns]
    table = table.reindex(index=index, columns=cols).astype("float64")
    table.columns.name = None
    return table.replace([np.inf, -np.inf], np.nan)
