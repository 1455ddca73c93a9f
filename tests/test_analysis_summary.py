"""Multi-run summaries and the kernel-log figures (synthetic unit-test captures)."""

import math

import pandas as pd
import pytest

from report_fixtures import write_capture
from snapprof.analysis.frames import load_capture
from snapprof.analysis.kmsg import kernel_figures
from snapprof.analysis.summary import NO_REASON, metric_summary, phase_summary


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return load_capture(write_capture(tmp_path_factory.mktemp("sum") / "fx.snap", n_complete=7))


def test_statistics_over_complete_runs_only(frames):
    s = metric_summary(frames)
    row = s.loc["freeze_user_ms"]
    # 7 complete runs at 28 ms × (1.0 … 1.6); the failed and incomplete runs' 28 ms stay out
    values = [28 * (1 + 0.1 * i) for i in range(7)]
    assert row["n"] == 7 and row["median"] == pytest.approx(sorted(values)[3])
    assert row["min"] == pytest.approx(28.0) and row["max"] == pytest.approx(values[-1])
    # n = 7 reaches a 95 % order-statistic interval: [x(1), x(7)]
    assert row["ci_low"] == pytest.approx(values[0]) and row["ci_high"] == pytest.approx(values[-1])
    assert row["method"] == "probe" and row["source"] == "freeze_task sweeps"


def test_not_measured_reasons(frames):
    s = metric_summary(frames)
    assert s.loc["zero_pages", "n"] == 0 and math.isnan(s.loc["zero_pages", "median"])
    assert s.loc["zero_pages", "reason"] == "kernel 6.1 does not skip zero pages"
    # measured, but only in the failed run: said so, not "not measured" without a word
    assert s.loc["freeze_failed_tasks", "reason"] == "measured only in runs that did not complete: 8"
    # no recorder reason and an attached probe in its area: no invented reason
    assert s.loc["freeze_user_passes", "reason"] == NO_REASON


def test_probe_reason_when_no_probe_of_the_area_attached(tmp_path):
    frames = load_capture(write_capture(tmp_path / "a.snap", n_complete=1))
    s = metric_summary(frames)
    assert s.loc["read_ms", "reason"] == (
        "probe save_image_lzo not attached: not in this kernel (renamed in 6.12)")


def test_phase_summary(frames):
    p = phase_summary(frames)
    assert list(p.index[:3]) == ["sync", "freeze_user", "prealloc"]
    assert p.loc["copy", "method"] == "sleep-time"
    assert p.loc["prealloc", "n"] == 7  # the incomplete run's open prealloc is not counted


def test_kernel_figures_6_1_and_6_12_lines():
    kmsg = pd.DataFrame({"run_id": [1, 1, 1, 2, 2, 2], "seq": range(6), "ts_us": 0, "level": 6,
                         "text": [
        "Freezing user space processes completed (elapsed 0.028 seconds)",
        "PM: hibernation: Image created (70000 pages copied)",
        "PM: hibernation: Wrote 126124 kbytes in 1.65 seconds (76.43 MB/s)",
        "PM: hibernation: Allocated 82956 pages for snapshot",
        "PM: hibernation: Allocated 331824 kbytes in 6.63 seconds (50.04 MB/s)",
        "PM: hibernation: Image created (71074 pages copied, 3695 zero pages)"]})
    f = kernel_figures(kmsg).set_index(["run_id", "name"])["value"]
    assert f[(1, "freeze_user_ms")] == pytest.approx(28.0)
    assert f[(1, "copy_pages")] == 70000 and (1, "zero_pages") not in f.index  # 6.1: no zero pages
    assert f[(1, "write_mbps")] == pytest.approx(76.43) and f[(1, "write_ms")] == pytest.approx(1650)
    assert f[(2, "preallocated_pages")] == 82956 and f[(2, "prealloc_ms")] == pytest.approx(6630)
    assert f[(2, "zero_pages")] == 3695
