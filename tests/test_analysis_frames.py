"""Capture → frames on synthetic unit-test captures (tests/report_fixtures.py)."""

import math

import pandas as pd
import pytest

from report_fixtures import write_capture
from snapprof.analysis.frames import load_capture, phase_durations
from snapprof.analysis.phases import PHASE_ORDER
from snapprof.errors import SnapprofError


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return load_capture(write_capture(tmp_path_factory.mktemp("cap") / "fx.snap"))


def test_frames_columns(frames):
    assert list(frames.runs.columns[:3]) == ["run_id", "trigger", "status"]
    assert list(frames.phases.columns) == ["run_id", "phase", "start_ns", "end_ns",
                                           "duration_ms", "method"]
    assert list(frames.metrics.columns) == ["run_id", "name", "value", "unit", "method", "source"]
    assert list(frames.not_measured.columns) == ["run_id", "name", "reason"]
    assert frames.probes["attached"].dtype == bool


def test_wide_keeps_absent_as_nan(frames):
    wide = frames.wide()
    assert list(wide.index) == [1, 2, 3, 4, 5]
    assert wide.loc[1, "freeze_user_ms"] == 28.0
    # run 4 failed after freezing: it has no image, and that is NaN, not 0
    assert math.isnan(wide.loc[4, "image_bytes"])
    assert "zero_pages" not in wide.columns  # not measured anywhere: no column at all
    nm = frames.not_measured.set_index(["run_id", "name"])["reason"]
    assert nm[(1, "zero_pages")].startswith("kernel 6.1")


def test_phases_in_cycle_order_with_copy_from_metric(frames):
    run1 = frames.phases[frames.phases["run_id"] == 1]
    names = list(run1["phase"])
    assert names == [p for p in PHASE_ORDER if p in names]
    copy = run1.set_index("phase").loc["copy"]
    # clocks stand still: the position is the syscore gap, the length the sleep-time metric
    assert copy["duration_ms"] == 300.0 and copy["method"] == "sleep-time"
    assert copy["end_ns"] - copy["start_ns"] == 0
    cpu_off = run1.set_index("phase").loc["cpu_off"]
    assert cpu_off["duration_ms"] == pytest.approx(12.0)  # first begin .. last end of both CPUs
    assert run1.set_index("phase").loc["dpm_suspend", "method"] == "tracepoint"


def test_incomplete_run_phase_has_no_end(frames):
    run5 = frames.phases[frames.phases["run_id"] == 5].set_index("phase")
    assert math.isnan(run5.loc["prealloc", "end_ns"])
    assert math.isnan(run5.loc["prealloc", "duration_ms"])
    assert "copy" not in run5.index  # never reached the copy: no row
    durations = phase_durations(frames)
    assert math.isnan(durations.loc[5, "prealloc"])
    assert durations.loc[2, "prealloc"] == pytest.approx(4400.0)


def test_tasks_and_devices_in_ms(frames):
    t = frames.tasks
    assert t.loc[(t["run_id"] == 1) & (t["comm"] == "systemd-journal"), "freeze_latency_ms"].item() == 2.0
    assert t.loc[(t["run_id"] == 1) & (t["comm"] == "cron"), "freeze_latency_ms"].isna().item()
    d = frames.devices
    assert d["duration_ms"].max() == pytest.approx(36.0)


def test_empty_capture(tmp_path):
    frames = load_capture(write_capture(tmp_path / "e.snap", n_complete=0, failed=False,
                                        incomplete=False))
    assert frames.runs.empty and frames.phases.empty
    assert frames.wide().empty
    assert isinstance(phase_durations(frames), pd.DataFrame)


def test_not_a_capture(tmp_path):
    bad = tmp_path / "x.snap"
    bad.write_text("hello")
    with pytest.raises(SnapprofError, match="not a snapprof capture"):
        load_capture(bad)
