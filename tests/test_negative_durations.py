"""No negative duration is ever a figure (issue 16 §3).

Seen on 7.3 (trixie-backports 7.3.4 against 6.12.117): ``compare`` printed
``phase:syscore_resume  −758 ms (−193570 %)  better``. On that kernel the BPF clock kept
running through swsusp_save() and timekeeping_resume() set it back: syscore_resume's clock
difference was less than the sleep time injected inside it. Such a phase has no duration
and says the clock was set back; the capture reader and ``compare`` refuse any negative
duration, counted, with the reason, and never draw a verdict from one.

UNIT-TEST FIXTURES ONLY: the captures below are written with CaptureWriter to build the
clock jump; they are not measurements.
"""

from __future__ import annotations

import math

import pandas as pd

from snapprof.analysis.compare import NEGATIVE, compare, group_captures
from snapprof.analysis.frames import build_frames, load_capture
from snapprof.analysis.phases import CLOCK_BACK, derive_phases
from snapprof.capture import COLUMNS, CaptureWriter, Run

MS = 1_000_000
EVENT_COLUMNS = list(COLUMNS["events"])
METRIC_COLUMNS = list(COLUMNS["metrics"])


def _ev(rid, ms, kind, name, value=None):
    return (rid, int(ms * MS), 0, 1, "snapprof", kind, name, value, None)


def _copy_events(rid, base, jump):
    """One run around the copy. ``jump``: "less" — syscore_resume's clock difference (252 ms)
    is less than the 1 s of sleep injected inside it (the clock ran ~758 ms through the copy,
    then was set back); "before" — its end is stamped before its begin, no sleep report."""
    rows = [_ev(rid, base, "begin", "freeze_processes"), _ev(rid, base + 9, "end", "freeze_processes", 0),
            _ev(rid, base + 10, "begin", "pm:syscore_suspend", 0),
            _ev(rid, base + 11, "end", "pm:syscore_suspend", 0),
            _ev(rid, base + 11, "begin", "pm:machine_suspend", 4)]
    if jump == "less":
        rows += [_ev(rid, base + 780, "begin", "pm:syscore_resume", 0),
                 _ev(rid, base + 790, "instant", "sleep_time", 1_000 * MS),
                 _ev(rid, base + 1032, "end", "pm:syscore_resume", 0)]
    elif jump == "before":
        rows += [_ev(rid, base + 780, "begin", "pm:syscore_resume", 0),
                 _ev(rid, base + 14, "end", "pm:syscore_resume", 0)]
    else:  # a kernel whose clock stood still: 2 ms of syscore resume after 1 s of sleep
        rows += [_ev(rid, base + 12, "begin", "pm:syscore_resume", 0),
                 _ev(rid, base + 13, "instant", "sleep_time", 1_000 * MS),
                 _ev(rid, base + 1014, "end", "pm:syscore_resume", 0)]
    rows += [_ev(rid, base + 1100, "begin", "pm:dpm_resume", 16),
             _ev(rid, base + 1150, "end", "pm:dpm_resume", 16)]
    return rows


def _events(rows):
    ev = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    return ev.sort_values(["run_id", "ts_ns"], kind="stable").reset_index(drop=True)


def _metrics(rows=()):
    m = pd.DataFrame(list(rows), columns=METRIC_COLUMNS)
    m["value"] = m["value"].astype("float64")
    return m


def test_a_phase_the_clock_was_set_back_in_has_no_duration_and_says_why():
    events = _events(_copy_events(1, 0, "less") + _copy_events(2, 5000, "before")
                     + _copy_events(3, 9000, None))
    ph = derive_phases(events, _metrics()).set_index(["run_id", "phase"])
    less = ph.loc[(1, "syscore_resume")]
    assert math.isnan(less["duration_ms"])  # was 252 - 1000 = -748 ms
    assert less["method"].endswith(CLOCK_BACK) and "less sleep-time" in less["method"]
    before = ph.loc[(2, "syscore_resume")]
    assert math.isnan(before["duration_ms"]) and before["method"].endswith(CLOCK_BACK)
    assert before["start_ns"] == 5780 * MS  # still placed where it began
    fine = ph.loc[(3, "syscore_resume")]
    assert fine["duration_ms"] == 2.0 and not fine["method"].endswith(CLOCK_BACK)
    assert (ph["duration_ms"].dropna() >= 0).all()
    assert ph.loc[(1, "dpm_resume"), "duration_ms"] == 50.0  # phases after it are unaffected


def _capture(path, release, jump, syscore_ms=None, n=4):
    with CaptureWriter(path) as w:
        w.set_meta({"kernel_release": release, "machine": "x86_64", "trigger": "snapshot"})
        w.set_probes([("pm_phases", "phases", "power:suspend_resume", True, None)])
        for i in range(n):
            base = (i + 1) * 100_000
            run = Run(trigger="snapshot", status="complete", started_ns=base * MS,
                      ended_ns=(base + 1200) * MS)
            run.events = [r[1:] for r in _copy_events(i + 1, base, jump)]
            run.metric("freeze_user_ms", 5.0 + i, "ms", "probe", "freeze_task sweeps")
            run.metric("image_pages", 70_000 + i, "pages", "device")
            w.add_run(run)
    return path


def test_compare_never_gives_a_verdict_on_a_phase_the_clock_was_set_back_in(tmp_path):
    old = _capture(tmp_path / "612.snap", "6.12.117", None)
    new = _capture(tmp_path / "73.snap", "7.3.4", "less")
    c = compare(group_captures([load_capture(old), load_capture(new)]))
    assert c.row("phase", "syscore_resume", "7.3.4") is None  # no difference, no verdict
    nc = c.not_comparable.set_index(["kind", "name"])
    why = nc.loc[("phase", "syscore_resume"), "reason"]
    assert "not measured in 7.3.4" in why and "the clock was set back during its span" in why
    assert c.row("phase", "dpm_resume", "7.3.4") is not None  # the rest is compared
    assert not (c.diffs["median"] < 0).any() and not (c.summary["median"] < 0).any()


def _frames_with(values):
    """Frames built without the capture reader (which already drops negative figures): a
    caller's own tables, as compare may be given."""
    runs = pd.DataFrame({"run_id": [1, 2, 3, 4], "trigger": "snapshot", "status": "complete",
                         "error": None, "started_ns": [1.0, 2, 3, 4], "ended_ns": [5.0, 6, 7, 8],
                         "started_wall": None, "ringbuf_drops": 0})
    tables = {name: pd.DataFrame(columns=list(cols)) for name, cols in COLUMNS.items()}
    tables["metrics"] = _metrics([(rid, "freeze_user_ms", v, "ms", "probe", "x")
                                  for rid, v in zip(range(1, 5), values)]
                                 + [(rid, "image_pages", 70_000.0 + rid, "pages", "device", "x")
                                    for rid in range(1, 5)])
    tables["events"]["ts_ns"] = tables["events"]["ts_ns"].astype("int64")
    probes = pd.DataFrame(columns=["name", "area", "target", "attached", "reason"])
    return build_frames({"kernel_release": "k"}, probes, runs, tables)


def test_compare_refuses_negative_durations_counted_with_the_reason():
    base = _frames_with([5.0, 6.0, 5.5, 6.5])
    some = _frames_with([7.0, -758.0, 7.5, 8.0])
    c = compare(group_captures([base, some], ["base", "cand"]))
    row = c.row("metric", "freeze_user_ms", "cand")
    assert row["n"] == 3 and row["median"] == 7.5  # the negative one left out, not a figure
    assert f"cand: 1 {NEGATIVE}" in row["note"]
    assert c.groups["cand"].refused == {("metric", "freeze_user_ms"): 1}
    every = _frames_with([-1.0, -2.0, -3.0, -4.0])
    c = compare(group_captures([base, every], ["base", "cand"]))
    assert c.row("metric", "freeze_user_ms", "cand") is None  # never a verdict
    nc = c.not_comparable.set_index(["kind", "name"]).loc[("metric", "freeze_user_ms")]
    assert nc["reason"].startswith(f"not measured in cand: 4 {NEGATIVE}")


def test_the_capture_reader_refuses_a_stored_negative_duration(tmp_path):
    path = tmp_path / "neg.snap"
    with CaptureWriter(path) as w:
        w.set_meta({"kernel_release": "7.3.4"})
        run = Run(trigger="snapshot", status="complete", started_ns=MS, ended_ns=2 * MS)
        run.metric("freeze_user_ms", -758.0, "ms", "probe", "x")
        run.metric("prealloc_result", -12.0, "errno", "probe", "x")  # an errno may be negative
        w.add_run(run)
    f = load_capture(path)
    assert "freeze_user_ms" not in set(f.metrics["name"])
    assert set(f.metrics["name"]) == {"prealloc_result"}
    assert any("negative" in w for w in f.warnings)  # counted, never silent
