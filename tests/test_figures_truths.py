"""Issue 16 §5, the smaller truths: a figure whose probe did not attach is absent with the
reason (never 0), the BPF overflow counters are drops with a reason, the kernel-log check of
"Need to copy N pages" finds its metric, the text report says what it does not know, and a
trace with no timestamp has no time base."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from snapprof.analysis.frames import load_capture
from snapprof.record.derive import RawDevcall, RawTask, derive
from snapprof.report.model import build_model
from snapprof.report.text import render_text
from test_probes_derive import MS, all_attached, metrics_of, snapshot_cycle

DATA = Path(__file__).parent / "data"


def _dev(ms, error=0):
    return RawDevcall(int(ms * MS), 900, error, 1, 100, "vda", "virtio_blk", "", "driver ")


def test_device_counts_are_absent_when_the_callback_probe_never_attached():
    status, own = all_attached()
    status["device_callbacks"] = (False, "power:device_pm_callback_start: tracepoint absent")
    # the suspend phases (pm_phases) were recorded; the callbacks could not be
    d = derive(snapshot_cycle().events, [], [], {}, status, own)
    m, nm = metrics_of(d), dict(d.not_measured)
    assert "device_callbacks" not in m and "device_errors" not in m
    assert nm["device_callbacks"] == ("probe device_callbacks not attached: "
                                      "power:device_pm_callback_start: tracepoint absent")
    assert nm["device_errors"].startswith("probe device_callbacks not attached")
    assert "device_suspend_ms" in m  # its own probe did attach


def test_freezer_task_counts_are_absent_when_their_hooks_never_attached():
    status, own = all_attached()
    # try_to_freeze_tasks fired (it is attached for another measurement), the wake-up hooks did not
    status["freezer_wakeups"] = (False, "kprobe on wake_up_state: attach failed")
    status["freeze_latency"] = (False, "kprobe on wake_up_state: attach failed")
    status["freezer_sweeps"] = (False, "usleep_range_state: not a kernel symbol")
    d = derive(snapshot_cycle().events, [], [], {}, status, own)
    m, nm = metrics_of(d), dict(d.not_measured)
    for name in ("freeze_user_woken", "freeze_kernel_woken", "freeze_failed_tasks"):
        assert name not in m, name
        assert nm[name] == "probe freezer_wakeups not attached: kprobe on wake_up_state: attach failed"
    assert nm["freeze_user_passes"] == ("probe freezer_sweeps not attached: usleep_range_state: "
                                        "not a kernel symbol")
    assert "freeze_user_ms" in m and "freeze_user_tasks" in m  # their own hooks attached


def test_light_freezer_probes_leave_out_the_counts_of_tasks_frozen_in_place():
    """--freezer-probes light (the default): no hook on freeze_task(), so the tasks frozen in
    place are not seen and freeze_*_tasks is absent with that reason, never the smaller count
    of the tasks seen; the tasks signalled (freeze_*_woken) and the refusals are kept."""
    from snapprof.record.resolve import PER_THREAD_OFF

    status, own = all_attached()
    status["freezer_sweep"] = (False, PER_THREAD_OFF)
    tasks = [RawTask(178, 178, "sh", 1, 0, 0, int(9.5 * MS), int(9.9 * MS), 1, 1)]
    d = derive(snapshot_cycle().events, [], tasks, {}, status, own)
    m, nm = metrics_of(d), dict(d.not_measured)
    for name in ("freeze_user_tasks", "freeze_kernel_tasks"):
        assert name not in m
        assert nm[name] == f"probe freezer_sweep not attached: {PER_THREAD_OFF}"
    assert m["freeze_user_woken"][1] == 1 and m["freeze_failed_tasks"][1] == 0
    assert m["freeze_user_passes"][1] == 3


def test_a_full_tasks_map_is_counted_as_drops_and_its_counts_left_out():
    status, own = all_attached()
    tasks = [RawTask(178, 178, "sh", 1, 0, 0, int(9.5 * MS), int(9.9 * MS), 1, 1)]
    d = derive(snapshot_cycle().events, [], tasks, {"event_drops": 0, "devcall_drops": 0,
                                                   "tasks_full": 5, "dev_unpaired": 0},
               status, own)
    m, nm = metrics_of(d), dict(d.not_measured)
    assert d.drops == 5
    for name in ("freeze_user_tasks", "freeze_kernel_tasks", "freeze_failed_tasks"):
        assert name not in m
        assert nm[name].startswith("5 tasks the freezer acted on not stored: the tasks map was full")
    assert m["freeze_user_passes"][1] == 3  # not from the map: kept
    assert len(d.tasks) == 1  # what was stored is still there
    assert d.drop_notes == [nm["freeze_user_tasks"]]


def test_unpaired_device_callbacks_are_drops_with_a_reason():
    status, own = all_attached()
    counters = {"event_drops": 0, "devcall_drops": 1, "tasks_full": 0, "dev_unpaired": 2}
    d = derive(snapshot_cycle().events, [_dev(80), _dev(90, -5)], [], counters, status, own)
    m, nm = metrics_of(d), dict(d.not_measured)
    assert d.drops == 3
    assert "device_callbacks" not in m and "device_errors" not in m
    assert "2 device callbacks lost: a callback's end named another device" in nm["device_callbacks"]
    assert "1 device callbacks lost: the device-callback ring buffer" in nm["device_callbacks"]
    assert len(d.devices) == 2  # the callbacks recorded are kept as rows
    # the same cycle without losses counts them
    clean = derive(snapshot_cycle().events, [_dev(80), _dev(90, -5)], [],
                   dict.fromkeys(counters, 0), status, own)
    assert metrics_of(clean)["device_callbacks"][1] == 2 and clean.drops == 0
    assert metrics_of(clean)["device_errors"][1] == 1 and clean.drop_notes == []


def test_kernel_log_check_of_pages_to_copy_finds_its_metric():
    frames = load_capture(DATA / "trixie-6.12-snapshot.snap")
    checks = [c for c in build_model(frames)["kernel_log"]["checks"]
              if c["name"] == "copy_needed_pages"]
    assert checks and all(c["has_metric"] for c in checks)
    assert checks[0]["label"].startswith("Pages to copy")
    logged = frames.metrics[frames.metrics["name"] == "copy_needed_pages"]
    for c in checks:  # the figure the recorder stored from the same line, beside it
        assert c["measured"] == c["kernel"] == float(
            logged.loc[logged["run_id"] == c["run_id"], "value"].iloc[0])


def test_text_report_says_not_recorded_for_missing_settings():
    frames = load_capture(DATA / "trixie-6.12-snapshot.snap")
    for key in ("pm_test", "power_disk"):
        frames.meta.pop(key, None)
    text = render_text(build_model(frames))
    line = next(ln for ln in text.splitlines() if "pm_test / disk" in ln)
    assert "None" not in line and "not recorded / not recorded" in line


def test_perfetto_trace_without_any_timestamp_has_no_time_base():
    from snapprof.export.perfetto import build_trace, time_base_ns

    frames = load_capture(DATA / "trixie-6.12-snapshot.snap")
    frames.events = frames.events.iloc[0:0]
    frames.phases = frames.phases.iloc[0:0]
    frames.devices = frames.devices.iloc[0:0]
    frames.runs = frames.runs.assign(started_ns=float("nan"))
    meta = build_trace(frames)["metadata"]
    assert "time_base_ns" not in meta
    assert meta["time_base"].startswith("none")
    # with timestamps it is the first one (a run start, here)
    real = load_capture(DATA / "trixie-6.12-snapshot.snap")
    first = int(min(pd.to_numeric(real.events["ts_ns"]).min(), real.runs["started_ns"].min()))
    assert build_trace(real)["metadata"]["time_base_ns"] == time_base_ns(real) == first
