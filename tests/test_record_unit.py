"""The record loop's pure parts: trigger parsing, merging figures, not-measured reasons,
run status, /sys/power restore, the none-trigger's cycle detection, the snapshot
trigger's failure path. No kernel needed (the lab tests run the real thing)."""

import os

import pytest

from snapprof.capture import CaptureReader, CaptureWriter
from snapprof.errors import SnapprofError
from snapprof.record import triggers as trg
from snapprof.record.derive import CycleData
from snapprof.record.recorder import build_run, merge_metrics, not_measured_rows

# A 6.12 /dev/snapshot cycle's own log lines (from a trixie lab guest).
RECORDS = [
    (900, 51_000_000, 6, "PM: Syncing filesystems ... done."),
    (901, 51_010_000, 6, "Freezing user space processes"),
    (902, 51_012_000, 6, "Freezing user space processes completed (elapsed 0.002 seconds)"),
    (903, 51_012_100, 6, "OOM killer disabled."),
    (904, 57_000_000, 6, "PM: hibernation: Allocated 82956 pages for snapshot"),
    (905, 57_000_100, 6, "PM: hibernation: Allocated 331824 kbytes in 6.63 seconds (50.04 MB/s)"),
    (906, 57_010_000, 6, "Freezing remaining freezable tasks"),
    (907, 57_012_000, 6, "Freezing remaining freezable tasks completed (elapsed 0.002 seconds)"),
    (908, 57_500_000, 6, "PM: hibernation: Creating image:"),
    (909, 57_500_000, 6, "PM: hibernation: Need to copy 74769 pages"),
    (910, 57_500_000, 6, "PM: hibernation: Image created (71074 pages copied, 3695 zero pages)"),
    (911, 59_000_000, 6, "Restarting kernel threads ... done."),
    (912, 59_100_000, 6, "OOM killer enabled."),
    (913, 59_100_100, 6, "Restarting tasks ... done."),
]


def probe_data(**over):
    d = CycleData(
        events=[(10, 0, 1, "snapprof", "begin", "freeze_processes", None, None),
                (20, 0, 1, "snapprof", "end", "freeze_processes", 0, None)],
        metrics=[("freeze_user_ms", 2.4, "ms", "probe", "freeze_processes"),
                 ("copy_pages", 71074.0, "pages", "probe", "swsusp_save:&nr_copy_pages"),
                 ("copy_window_ms", 1160.0, "ms", "sleep-time", "tk_debug_account_sleep_time")],
        not_measured=[("shrink_requested_pages", "fast path: shrink_all_memory not called"),
                      ("write_ms", "no image written in this cycle"),
                      ("zero_pages", "probe zero_pages not attached: symbol absent")],
        drops=0, started=True, ended=True)
    for k, v in over.items():
        setattr(d, k, v)
    return d


def outcome(**over):
    o = trg.CycleOutcome(status="complete", started_ns=5, ended_ns=50, pm_test="none")
    o.metric("image_bytes", 306_503_680, "bytes", "device", "SNAPSHOT_GET_IMAGE_SIZE")
    o.metric("image_pages", 74_830, "pages", "device", "SNAPSHOT_GET_IMAGE_SIZE / page size")
    o.metric("create_image_ms", 6100.5, "ms", "recorder", "ioctl")
    for k, v in over.items():
        setattr(o, k, v)
    return o


def by_name(rows):
    return {r[0]: r for r in rows}


def test_parse_trigger():
    assert trg.parse_trigger("snapshot") == ("snapshot", None)
    assert trg.parse_trigger("pm-test:freezer") == ("pm-test", "freezer")
    assert trg.parse_trigger("pm_test=core") == ("pm-test", "core")
    assert trg.parse_trigger("none") == ("none", None)
    for bad in ("pm-test", "pm-test:none", "pm-test:bogus", "suspend", "snapshot:x"):
        with pytest.raises(SnapprofError):
            trg.parse_trigger(bad)


def test_merge_keeps_first_per_name():
    rows = merge_metrics([("a", 1, "ms", "probe", "p")], [("a", 2, "ms", "kernel-log", "k"),
                                                          ("b", 3, "ms", "kernel-log", "k")],
                         [("b", None, "ms", "device", "d"), ("c", 0, "pages", "device", "d")])
    assert rows == [("a", 1.0, "ms", "probe", "p"), ("b", 3.0, "ms", "kernel-log", "k"),
                    ("c", 0.0, "pages", "device", "d")]


def test_build_run_merges_in_order():
    before = [("mem_free_kb", 1_700_000.0, "kB", "sysfs", "/proc/meminfo MemFree")]
    run = build_run("snapshot", outcome(), probe_data(), RECORDS, before, clock_stable=False)
    m = by_name(run.metrics)
    assert len(m) == len(run.metrics)  # one row per name
    # the probe's figure wins over the kernel log's; gaps are filled from the log
    assert m["freeze_user_ms"][1:4] == (2.4, "ms", "probe")
    assert m["copy_pages"][3] == "probe"
    assert m["freeze_kernel_ms"][1:4] == (2.0, "ms", "kernel-log")
    assert m["preallocated_pages"][1:4] == (82956.0, "pages", "kernel-log")
    assert m["copy_needed_pages"][1] == 74769
    assert m["zero_pages"][1:4] == (3695.0, "pages", "kernel-log")
    assert m["image_bytes"][3] == "device" and m["image_pages"][1] == 74830
    assert m["create_image_ms"][3] == "recorder"
    assert m["mem_free_kb"][3] == "sysfs"
    assert m["copy_window_ms"][3] == "sleep-time"
    nm = dict(run.not_measured)
    assert "zero_pages" not in nm  # measured from the log: not also "not measured"
    assert nm["shrink_requested_pages"] == "fast path: shrink_all_memory not called"
    assert not set(nm) & set(m)
    assert run.status == "complete" and run.error is None
    assert run.kmsg == RECORDS and run.ringbuf_drops == 0
    assert (run.started_ns, run.ended_ns) == (5, 50)


def test_pm_test_marks_copy_not_reached():
    o = trg.CycleOutcome(status="complete", started_ns=1, ended_ns=2, pm_test="freezer")
    data = probe_data(metrics=[("freeze_user_ms", 2.0, "ms", "probe", "freeze_processes"),
                               ("prealloc_ms", 5000.0, "ms", "probe", "x")],
                      not_measured=[("copy_pages", "not reached in this cycle (no atomic copy)"),
                                    ("zero_pages", "probe zero_pages not attached: absent")])
    records = [r for r in RECORDS if "image" not in r[3].lower() and "copy" not in r[3]]
    run = build_run("pm-test:freezer", o, data, records, [])
    nm = dict(run.not_measured)
    for name in ("copy_pages", "image_pages", "image_bytes", "copy_window_ms", "device_suspend_ms"):
        assert nm[name] == "not reached: pm_test=freezer", name
    assert nm["zero_pages"].startswith("probe zero_pages not attached")  # the real reason stays
    assert {"freeze_user_ms", "prealloc_ms", "preallocated_pages"} <= set(by_name(run.metrics))


def test_failed_cycle_takes_kernel_error():
    o = trg.CycleOutcome(status="failed", error="SNAPSHOT_CREATE_IMAGE failed: Cannot allocate "
                         "memory (ENOMEM)", started_ns=1, ended_ns=2, pm_test="none")
    recs = RECORDS[:4] + [(950, 57_000_000, 3, "PM: hibernation: Image allocation is 1200 pages short")]
    run = build_run("snapshot", o, None, recs, [], probe_reason="recorded without probes (--no-probes)")
    assert run.status == "failed"
    assert "ENOMEM" in run.error and "Image allocation is 1200 pages short" in run.error
    nm = dict(run.not_measured)
    assert nm["image_bytes"] == "no image (CREATE_IMAGE did not complete)"
    assert nm["prealloc_ms"] == "recorded without probes (--no-probes)"
    assert "freeze_user_ms" not in nm  # from the log


def test_complete_cycle_with_kernel_error_is_failed():
    recs = RECORDS + [(960, 59_200_000, 3, "PM: Device 0000:00:03.0 failed to freeze: error -16")]
    run = build_run("pm-test:devices", outcome(pm_test="devices"), None, recs, [])
    assert run.status == "failed" and "failed to freeze" in run.error


def test_run_times_from_probe_events_when_trigger_has_none():
    run = build_run("none", outcome(started_ns=None, ended_ns=None), probe_data(), RECORDS, [])
    assert (run.started_ns, run.ended_ns) == (10, 20)


def test_build_run_roundtrips_through_capture(tmp_path):
    path = tmp_path / "c.snap"
    with CaptureWriter(path) as w:
        w.add_run(build_run("snapshot", outcome(), probe_data(), RECORDS, []))
    with CaptureReader(path) as r:
        runs = r.runs()
        assert [x["status"] for x in runs] == ["complete"]
        assert len(r.table("kmsg")) == len(RECORDS)
        assert {x["name"] for x in r.table("metrics")} >= {"image_bytes", "copy_pages"}


def power_tree(tmp_path, pm_test="[none] core processors platform devices freezer",
               image_size="824778752"):
    p = tmp_path / "sys" / "power"
    p.mkdir(parents=True)
    (p / "pm_test").write_text(pm_test + "\n")
    (p / "image_size").write_text(image_size + "\n")
    return str(tmp_path)


def test_power_settings_restore(tmp_path):
    root = power_tree(tmp_path)
    with pytest.raises(RuntimeError):
        with trg.PowerSettings(root) as s:
            s.set("image_size", "0")
            s.set("pm_test", "freezer")
            assert trg.read_power("image_size", root) == "0"
            assert trg.read_power("pm_test", root) == "freezer"
            raise RuntimeError("boom")
    assert trg.read_power("image_size", root) == "824778752"
    assert trg.read_power("pm_test", root) == "none"  # the selected level, not the whole list


def test_power_settings_missing_file(tmp_path):
    root = power_tree(tmp_path)
    with pytest.raises(SnapprofError, match="cannot read /sys/power/nope"):
        trg.PowerSettings(root).set("nope", "1")


class FakeReader:
    def __init__(self, batches):
        self.batches = list(batches)

    def read_new(self):
        return self.batches.pop(0) if self.batches else []


def test_wait_trigger_finds_cycle():
    noise = [(1, 1, 6, "usb 1-1: new device")]
    reader = FakeReader([noise, RECORDS[:3], RECORDS[3:], [(999, 60_000_000, 6, "later line")]])
    out = trg.WaitTrigger(reader, poll_s=0.001, settle_s=0.01).run(trg.Interrupts())
    assert out.status == "complete" and out.error is None
    assert out.records[0] == RECORDS[0]  # noise before the start is not the cycle's
    assert RECORDS[-1] in out.records


def test_wait_trigger_ends_a_cycle_whose_thaw_line_was_split_or_lost():
    """Seen in the lab (6.12 resuming under systemd): "Restarting tasks ... " and its "done."
    in two records, another CPU's line between them. The cycle still ends; so does one whose
    thaw line was lost, at "hibernation exit"."""
    split = [(913, 59_100_100, 6, "Restarting tasks ... "), (914, 59_100_200, 6, "ata2: found unknown device (class 0)"),
             (915, 59_100_300, 6, "done."), (916, 59_100_400, 6, "PM: hibernation: hibernation exit")]
    for tail in (split, split[3:]):
        reader = FakeReader([RECORDS[:12], tail])
        out = trg.WaitTrigger(reader, poll_s=0.001, settle_s=60).run(trg.Interrupts())
        assert out.status == "complete" and out.records[-1] == split[3]  # not 60 s later: exit seen


def test_wait_trigger_interrupted_while_idle():
    intr = trg.Interrupts()
    intr.received = 2
    assert trg.WaitTrigger(FakeReader([]), poll_s=0.001).run(intr) is None


def test_wait_trigger_cycle_already_running():
    reader = FakeReader([RECORDS[5:]])
    out = trg.WaitTrigger(reader, poll_s=0.001, settle_s=0.01).run(trg.Interrupts())
    assert out.status == "incomplete" and "before the recorder" in out.error


def test_snapshot_trigger_failure_closes_device(tmp_path):
    fake = tmp_path / "snapshot"
    fake.write_bytes(b"")
    t = trg.SnapshotTrigger(deadline_s=5, device=str(fake))
    before = set(os.listdir("/proc/self/fd"))
    out = t.run(trg.Interrupts())
    t.close()
    assert out.status == "failed"
    assert out.error.startswith("SNAPSHOT_FREEZE failed:") and "ENOTTY" in out.error
    assert set(os.listdir("/proc/self/fd")) <= before | {"3"}  # nothing left open
    out2 = trg.SnapshotTrigger(device=str(tmp_path / "absent")).run(trg.Interrupts())
    assert out2.status == "failed" and "cannot open" in out2.error


def test_deadline_is_disarmed():
    import signal
    with trg.Deadline(30):
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_sysfs_trigger_sets_and_restores_pm_test(tmp_path):
    root = power_tree(tmp_path)
    state = tmp_path / "sys" / "power" / "state"
    state.write_text("freeze mem disk\n")
    out = trg.SysfsTrigger("freezer", root).run(trg.Interrupts())
    assert out.status == "complete" and out.pm_test == "freezer"
    assert state.read_text() == "disk"  # what was written to /sys/power/state
    assert trg.read_power("pm_test", root) == "none"
    assert by_name(out.metrics)["cycle_ms"][3] == "recorder"


def test_sysfs_trigger_failure_still_restores(tmp_path):
    root = power_tree(tmp_path, pm_test="none core processors platform devices [freezer]")
    out = trg.SysfsTrigger("core", root).run(trg.Interrupts())  # no state file: write fails
    assert out.status == "failed" and "writing 'disk' to /sys/power/state" in out.error
    assert trg.read_power("pm_test", root) == "freezer"  # the user's own setting is back


def test_hibernate_run_explains_what_the_restore_rolled_back():
    o = trg.CycleOutcome(status="complete", started_ns=1, ended_ns=2, pm_test="none")
    data = probe_data(not_measured=[("write_ms", "no image written in this cycle")])
    recs = [r for r in RECORDS if "Image created" not in r[3]]  # a restored log has no such line
    run = build_run("hibernate", o, data, recs, [])
    nm = dict(run.not_measured)
    assert nm["write_ms"].startswith("after the atomic copy: rolled back by the restore")
    assert nm["read_ms"].startswith("after the atomic copy")
    assert run.status == "complete"


def test_not_measured_rows_never_list_measured_names():
    rows = not_measured_rows({"a"}, [("a", "x"), ("b", "y"), ("b", "z")], "core", {"c": "w", "a": "v"})
    d = dict(rows)
    assert "a" not in d and d["b"] == "y" and d["c"] == "w"
    assert d["copy_pages"] == "not reached: pm_test=core"
    assert "device_suspend_ms" not in d  # the core level does suspend devices


def test_hibernate_trigger_without_pm_test_file(tmp_path):
    """A kernel without CONFIG_PM_DEBUG has no pm_test: a real hibernation needs none."""
    p = tmp_path / "sys" / "power"
    p.mkdir(parents=True)
    (p / "state").write_text("freeze mem disk\n")
    out = trg.SysfsTrigger(None, str(tmp_path)).run(trg.Interrupts())
    assert out.status == "complete", out.error
    assert (p / "state").read_text() == "disk" and not (p / "pm_test").exists()


def test_probe_areas_keep_return_probes_off_the_atomic_copy_of_a_real_hibernation():
    from snapprof.record.recorder import probe_areas

    assert probe_areas("snapshot", None) == (None, False)  # /dev/snapshot: everything
    assert probe_areas("pm-test", ["copy"]) == (["copy"], False)
    # a real hibernation: every area, without the return probes pending across the copy
    assert probe_areas("hibernate", None) == (None, True)
    assert probe_areas("hibernate", ["freezer", "copy"]) == (["freezer", "copy"], True)
    assert probe_areas("none", None) == (None, True)  # the cycle may be a real hibernation
    assert probe_areas("none", ["copy"]) == (["copy"], False)  # asked for explicitly


@pytest.mark.parametrize("trigger", ["snapshot", "hibernate", "none"])
def test_every_registry_figure_is_measured_or_explained(trigger):
    from snapprof import metrics as registry
    run = build_run(trigger, outcome(), probe_data(), RECORDS, [])
    measured = {r[0] for r in run.metrics}
    nm = dict(run.not_measured)
    assert not measured & set(nm)
    for m in registry.REGISTRY.values():
        if m.name in registry.DERIVED:  # worked out by the analysis: the recorder says nothing
            assert m.name not in measured and m.name not in nm
        elif m.area != "system":
            assert m.name in measured or nm.get(m.name), m.name
    # RECORDS has no pm_debug_messages lines: the device-phase times say why they are absent
    assert "pm_debug_messages=1" in nm["dpm_freeze_ms"]
    assert nm["lab_offline_ms"].startswith("only in the lab")
    if trigger == "hibernate":
        assert nm["compress_threads"].startswith("after the atomic copy")
    else:
        assert nm["write_pages"].startswith(f"no image written or read: a {trigger} cycle")


def test_power_settings_left_by_a_killed_recorder_are_put_back(tmp_path):
    import subprocess
    import sys
    root = power_tree(tmp_path)
    # a recorder that sets image_size and dies without restoring it (SIGKILL)
    code = ("import os, signal, sys; from snapprof.record import triggers as trg; "
            f"s = trg.PowerSettings({root!r}); s.set('image_size', '0'); s.set('image_size', '1'); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    assert trg.read_power("image_size", root) == "1"
    notes = trg.PowerSettings.recover(root)
    assert trg.read_power("image_size", root) == "824778752"  # the original, not the first change
    assert len(notes) == 1 and "left changed by a recorder that died" in notes[0]
    assert trg.PowerSettings.recover(root) == []  # done once


def test_power_settings_of_a_live_recorder_are_left_alone_and_a_restore_clears_the_journal(tmp_path):
    import json
    import os
    root = power_tree(tmp_path)
    s = trg.PowerSettings(root)
    s.set("image_size", "0")
    assert json.loads(open(s.journal).read())["saved"] == [["image_size", "824778752"]]
    live = os.path.join(os.path.dirname(s.journal), "power-1.json")  # pid 1 is alive
    with open(live, "w") as f:
        json.dump({"pid": 1, "saved": [["image_size", "5"]]}, f)
    os.rename(s.journal, s.journal + ".keep")
    assert trg.PowerSettings.recover(root) == []  # pid 1 still runs: not touched
    assert trg.read_power("image_size", root) == "0"
    os.rename(s.journal + ".keep", s.journal)
    assert s.restore() == []
    assert trg.read_power("image_size", root) == "824778752"
    assert not os.path.exists(s.journal) and os.path.exists(live)
