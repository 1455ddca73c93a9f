"""`snapprof export` on real lab captures: the Perfetto trace and the CSV tables."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from snapprof.analysis.frames import load_capture
from snapprof.export.csv import TABLES
from snapprof.export.perfetto import PAGE_COUNTERS, build_trace

DATA = Path(__file__).parent / "data"
REAL = ["trixie-6.12-snapshot.snap", "bookworm-6.1-snapshot.snap"]
ROOT = Path(__file__).resolve().parent.parent


def snapprof(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "snapprof", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module", params=REAL)
def exported(request, tmp_path_factory):
    """(frames, trace dict, csv directory) from one CLI run per format."""
    src = DATA / request.param
    tmp = tmp_path_factory.mktemp("export")
    trace_path, csv_dir = tmp / "trace.json", tmp / "tables"
    for fmt, out in (("perfetto", trace_path), ("csv", csv_dir)):
        res = snapprof("export", src, "--format", fmt, "-o", out)
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
    trace = json.loads(trace_path.read_text(encoding="utf-8"))
    return load_capture(src), trace, csv_dir


def _events(trace, ph=None, cat=None, pid=None):
    return [e for e in trace["traceEvents"]
            if (ph is None or e["ph"] == ph) and (cat is None or e.get("cat") == cat)
            and (pid is None or e["pid"] == pid)]


def _thread_names(trace, pid):
    return {e["args"]["name"]: e["tid"] for e in _events(trace, "M", pid=pid)
            if e["name"] == "thread_name"}


def test_trace_shape(exported):
    frames, trace, _ = exported
    assert trace["displayTimeUnit"] == "ms"
    assert trace["metadata"]["kernel_release"] == frames.meta["kernel_release"]
    for run in frames.runs.itertuples():
        names = [e["args"]["name"] for e in _events(trace, "M", pid=run.run_id)
                 if e["name"] == "process_name"]
        assert names == [f"run {run.run_id} ({run.status})"]
        threads = _thread_names(trace, run.run_id)
        assert {"phases", "freezer", "devices"} <= set(threads)
        assert len(set(threads.values())) == len(threads)
    # relative to the capture's first event
    timed = [e["ts"] for e in trace["traceEvents"] if e["ph"] != "M"]
    assert min(timed) == pytest.approx(0.0, abs=1e-3)
    first = min(frames.events["ts_ns"].min(), frames.runs["started_ns"].min(),
                frames.devices["start_ns"].min(), frames.phases["start_ns"].min())
    assert trace["metadata"]["time_base_ns"] == int(first)


def test_every_phase_with_its_duration(exported):
    frames, trace, _ = exported
    assert len(frames.phases) > 0
    slices = {(e["pid"], e["name"]): e for e in _events(trace, "X", cat="phase")}
    assert len(slices) == len(frames.phases)
    for row in frames.phases.itertuples():
        ev = slices[(row.run_id, row.phase)]
        assert ev["tid"] == _thread_names(trace, row.run_id)["phases"]
        assert ev["dur"] == pytest.approx(row.duration_ms * 1000.0, rel=1e-12)
    wide = frames.wide()
    for rid in frames.run_ids():
        copy = slices[(rid, "copy")]
        assert copy["dur"] == pytest.approx(wide.at[rid, "copy_window_ms"] * 1000.0)
        assert "copy_window_ms" in copy["args"]["note"]
        # the phase after the copy does not start inside it
        after = slices[(rid, "syscore_resume")]
        assert after["ts"] >= copy["ts"] + copy["dur"] - 1.0


def test_devices_one_event_per_callback_and_tracks_nest(exported):
    frames, trace, _ = exported
    devs = _events(trace, cat="device")
    assert len(devs) == len(frames.devices) > 0
    for rid in frames.run_ids():
        assert len(_events(trace, cat="device", pid=rid)) == \
            (frames.devices["run_id"] == rid).sum()
    first = frames.devices.sort_values("start_ns").iloc[0]
    ev = min(devs, key=lambda e: (e["pid"], e["ts"]))
    assert ev["args"]["event"] == first["event"] and ev["args"]["error"] == first["error"]
    assert ev["name"].startswith(first["device"]) and ev["name"].endswith(first["stage"])
    # a track's slices must nest (async callbacks overlap: they go to extra lanes)
    tracks = {}
    for e in _events(trace, "X"):
        tracks.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in tracks.values():
        stack = []
        for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= start + 1e-3:
                stack.pop()
            assert not stack or end <= stack[-1] + 1e-3
            stack.append(end)


def test_freezer_tasks_and_counters(exported):
    frames, trace, _ = exported
    tasks = _events(trace, cat="task")
    assert len(tasks) == len(frames.tasks)
    measured = frames.tasks.dropna(subset=["freeze_latency_ms"])
    assert 0 < len(measured) < len(frames.tasks)
    got = sorted(e["args"]["freeze_latency_ms"] for e in tasks
                 if "freeze_latency_ms" in e["args"])
    assert got == pytest.approx(sorted(measured["freeze_latency_ms"]))
    assert sum(e["args"].get("freeze_latency") == "not measured" for e in tasks) == \
        len(frames.tasks) - len(measured)
    assert len(_events(trace, "X", cat="freezer")) == 2 * len(frames.runs)

    wide = frames.wide()
    counters = {e["pid"]: e["args"] for e in _events(trace, "C")}
    assert set(counters) == set(frames.run_ids())
    for rid, args in counters.items():
        expect = {k: wide.at[rid, k] for k in PAGE_COUNTERS
                  if k in wide.columns and pd.notna(wide.at[rid, k])}
        assert expect
        assert args == expect


def test_not_measured_metric_is_absent_never_zero():
    frames = load_capture(DATA / REAL[0])
    drop = (frames.metrics["run_id"] == 1) & (frames.metrics["name"] == "zero_pages")
    assert drop.sum() == 1
    trace = build_trace(dataclasses.replace(frames, metrics=frames.metrics[~drop]))
    counters = {e["pid"]: e["args"] for e in trace["traceEvents"] if e["ph"] == "C"}
    assert "zero_pages" not in counters[1] and "copy_pages" in counters[1]
    assert counters[2]["zero_pages"] > 0


def test_csv_one_file_per_table(exported):
    frames, _, csv_dir = exported
    assert sorted(p.name for p in csv_dir.iterdir()) == sorted(t + ".csv" for t in TABLES)
    for name in TABLES:
        table = pd.read_csv(csv_dir / f"{name}.csv", keep_default_na=False, dtype=str)
        want = len(frames.meta) if name == "meta" else len(getattr(frames, name))
        assert len(table) == want, name
    meta = pd.read_csv(csv_dir / "meta.csv", dtype=str, keep_default_na=False)
    assert dict(zip(meta["key"], meta["value"])) == frames.meta
    # a metric that was not measured has no row; NaN is an empty cell, never 0
    metrics = pd.read_csv(csv_dir / "metrics.csv")
    missing = pd.read_csv(csv_dir / "not_measured.csv")
    assert len(missing) > 0
    measured = set(zip(metrics["run_id"], metrics["name"]))
    assert not measured & set(zip(missing["run_id"], missing["name"]))
    tasks = pd.read_csv(csv_dir / "tasks.csv", dtype=str, keep_default_na=False)
    assert (tasks["freeze_latency_ns"] == "").sum() == frames.tasks["freeze_latency_ns"].isna().sum()
    assert "0" not in set(tasks.loc[tasks["freeze_latency_ns"] == "", "freeze_latency_ms"])
    runs = pd.read_csv(csv_dir / "runs.csv", dtype=str)
    assert list(runs["started_ns"]) == [str(int(v)) for v in frames.runs["started_ns"]]


def _one_line_error(res, pattern):
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert pattern in res.stderr, res.stderr


@pytest.mark.parametrize("fmt", ["perfetto", "csv"])
def test_bad_input(tmp_path, fmt):
    _one_line_error(snapprof("export", tmp_path / "nope.snap", "--format", fmt,
                             "-o", tmp_path / "out"), "no such file")
    text = tmp_path / "notes.snap"
    text.write_text("not a capture\n")
    _one_line_error(snapprof("export", text, "--format", fmt, "-o", tmp_path / "out"),
                    "not a snapprof capture")
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_force(tmp_path):
    src = DATA / REAL[0]
    out = tmp_path / "t.json"
    out.write_text("keep")
    _one_line_error(snapprof("export", src, "--format", "perfetto", "-o", out), "--force")
    assert out.read_text() == "keep"
    assert snapprof("export", src, "--format", "perfetto", "-o", out, "--force").returncode == 0
    assert json.loads(out.read_text())["traceEvents"]

    d = tmp_path / "tables"
    d.mkdir()
    (d / "runs.csv").write_text("keep")
    _one_line_error(snapprof("export", src, "--format", "csv", "-o", d), "--force")
    assert (d / "runs.csv").read_text() == "keep"
    assert snapprof("export", src, "--format", "csv", "-o", d, "--force").returncode == 0
    assert (d / "runs.csv").read_text().startswith("run_id,")


def test_default_paths(tmp_path):
    src = tmp_path / "cap.snap"
    src.write_bytes((DATA / REAL[1]).read_bytes())
    assert snapprof("export", src, "--format", "perfetto").returncode == 0
    assert snapprof("export", src, "--format", "csv").returncode == 0
    assert (tmp_path / "cap.json").is_file()
    assert (tmp_path / "cap-csv" / "events.csv").is_file()


@pytest.mark.parametrize("capture", sorted(p.name for p in DATA.glob("*.snap")))
def test_every_lab_capture_exports(capture, tmp_path):
    """Every real capture, the hibernation ones included (their copy phase has no method:
    it once put NaN in the trace and the export died), exports as strict JSON and as CSV."""
    from snapprof.cli import main

    src = DATA / capture
    assert main(["export", str(src), "--format", "perfetto", "-o", str(tmp_path / "t.json")]) == 0
    assert main(["export", str(src), "--format", "csv", "-o", str(tmp_path / "csv")]) == 0

    def strict(const):
        raise AssertionError(f"{const} in the trace")
    trace = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"), parse_constant=strict)
    frames = load_capture(src)
    copy = [e for e in trace["traceEvents"] if e.get("name") == "copy" and e.get("cat") == "phase"]
    assert len(copy) == frames.phases["phase"].eq("copy").sum()
    for e in copy:
        assert "method" not in e["args"] or isinstance(e["args"]["method"], str)
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == sorted(f"{t}.csv" for t in TABLES)
