"""From probe records to capture rows and metrics (snapprof/record/derive.py), no bcc."""

from __future__ import annotations

import ctypes as ct

from snapprof.record import catalogue
from snapprof.record.derive import RawDevcall, RawEvent, RawTask, derive
from snapprof.record.probeset import EventRecord, decode_event

B, E, I = 0, 1, 2
MS = 1_000_000


class Timeline:
    """Builds RawEvents; ts in ms from an arbitrary origin."""

    def __init__(self):
        self.events: list[RawEvent] = []

    def add(self, ms, kind, name, value=None, aux1=None, aux2=None, text="", pid=100):
        self.events.append(RawEvent(ts=int(ms * MS), cpu=0, pid=pid, tgid=pid, comm="snap",
                                    kind=kind, name=name, value=value, aux1=aux1, aux2=aux2,
                                    text=text))

    def span(self, b, e, name, begin_value=None, end_value=None, pid=100):
        self.add(b, B, name, begin_value, pid=pid)
        self.add(e, E, name, end_value, pid=pid)


def owners():
    cat = catalogue.load()
    out = {}
    for m in cat.measurements:
        for metric in m.metrics:
            out.setdefault(metric, []).append(m.name)
    return cat, out


def all_attached():
    cat, own = owners()
    return {m.name: (True, None) for m in cat.measurements}, own


def snapshot_cycle(shrink=True, freeze_fail=False) -> Timeline:
    t = Timeline()
    t.span(0, 7, "ksys_sync_helper", end_value=0)
    t.add(8, B, "freeze_processes")
    t.add(9, B, "try_to_freeze_tasks", 1)
    t.add(12, E, "try_to_freeze_tasks", -16 if freeze_fail else 0, aux1=3, aux2=66, text="u")
    t.add(12, I, "freeze_sweeps", int(2.5 * MS), aux1=int(9.2 * MS), aux2=int(11.7 * MS), text="u")
    t.add(13, E, "freeze_processes", -16 if freeze_fail else 0)
    if freeze_fail:
        t.span(14, 15, "thaw_processes")
        return t
    t.add(20, B, "hibernation_snapshot")
    t.add(21, B, "hibernate_preallocate_memory")
    t.add(22, B, "count_data_pages")
    t.add(30, E, "count_data_pages", 127125, aux1=1)
    if shrink:
        t.span(31, 40, "shrink_all_memory", 100000, 90000)
        t.add(41, B, "preallocate_image_memory", 400000, aux1=524000)
        t.add(50, E, "preallocate_image_memory", 390000)
        t.add(51, B, "preallocate_image_memory", 5000, aux1=524000)
        t.add(52, E, "preallocate_image_memory", 5000)
        t.add(53, B, "count_data_pages")
        t.add(60, E, "count_data_pages", 30000, aux1=2)
    else:
        t.add(41, B, "preallocate_image_memory", 127125, aux1=524000)
        t.add(50, E, "preallocate_image_memory", 127125)
    t.add(61, I, "swsusp_show_speed", 127125, aux1=3_745_572_420, text="Allocated")
    t.add(62, E, "hibernate_preallocate_memory", 0)
    t.add(63, B, "freeze_kernel_threads")
    t.add(64, B, "try_to_freeze_tasks", 0)
    t.add(66, E, "try_to_freeze_tasks", 0, aux1=2, aux2=66, text="k")
    t.add(66, I, "freeze_sweeps", int(1.5 * MS), aux1=int(64.2 * MS), aux2=int(65.7 * MS), text="k")
    t.add(67, E, "freeze_kernel_threads", 0)
    t.span(70, 75, "pm:dpm_prepare", 1, 1)
    t.span(76, 500, "pm:dpm_suspend", 1, 1)
    t.span(501, 503, "pm:dpm_suspend_late", 1, 1)
    t.span(504, 506, "pm:dpm_suspend_noirq", 1, 1)
    t.add(507, B, "pm:syscore_suspend", 0)
    # the atomic copy: clocks stand still, every stamp is 508
    for kind, name, v, a in ((B, "pm:machine_suspend", 4, None), (B, "swsusp_save", None, None),
                             (B, "count_data_pages", None, None), (E, "count_data_pages", 121517, 3),
                             (E, "swsusp_save", 0, None), (I, "nr_copy_pages", 121517, None),
                             (I, "nr_meta_pages", 238, None), (E, "pm:machine_suspend", 4, None)):
        t.add(508, kind, name, v, aux1=a)
    t.add(1673, I, "sleep_time", 1_165_686_170)
    t.span(1680, 1684, "pm:dpm_resume_noirq", 32, 32)
    t.span(1685, 1690, "pm:dpm_resume", 32, 32)
    t.span(1691, 1693, "pm:dpm_complete", 32, 32)
    t.add(1694, E, "hibernation_snapshot", 0)
    t.span(1700, 1701, "snapshot_get_image_size", None, 121756)
    t.span(1800, 1801, "thaw_kernel_threads")
    t.add(1802, B, "thaw_processes")
    t.span(1803, 1805, "pm:thaw_processes", 0, 0)
    t.add(1806, E, "thaw_processes")
    return t


def metrics_of(data):
    return {m[0]: m for m in data.metrics}


def test_slow_path_cycle_metrics():
    status, own = all_attached()
    t = snapshot_cycle(shrink=True)
    tasks = [RawTask(178, 178, "sh", 1, 0, 0, int(9.5 * MS), int(9.9 * MS), 1, 1),
             RawTask(1, 1, "init", 1, 0, 1, 0, 0, 0, 0),
             RawTask(44, 44, "kswapd0", 2, 1, 0, int(64.2 * MS), int(64.5 * MS), 1, 1)]
    d = derive(t.events, [], tasks, {"event_drops": 2, "devcall_drops": 1}, status, own)
    m = metrics_of(d)
    assert m["sync_ms"][1:4] == (7.0, "ms", "probe")
    assert m["freeze_user_call_ms"][1] == 5.0  # freeze_processes(), the whole call
    assert m["freeze_user_ms"][1] == 2.5 and m["freeze_kernel_ms"][1] == 1.5  # the sweeps
    assert m["freeze_user_passes"][1] == 3 and m["freeze_kernel_passes"][1] == 2
    assert m["freeze_user_tasks"][1] == 2 and m["freeze_kernel_tasks"][1] == 1
    assert m["freeze_failed_tasks"][1] == 0
    assert m["prealloc_ms"][1] == 41.0 and m["prealloc_result"][1] == 0
    assert m["saveable_pages"][1] == 127125 and m["saveable_after_pages"][1] == 30000
    assert m["prealloc_requested_pages"][1] == 405000 and m["prealloc_got_pages"][1] == 395000
    assert m["shrink_requested_pages"][1] == 100000 and m["shrink_reclaimed_pages"][1] == 90000
    assert m["shrink_ms"][1] == 9.0
    assert m["preallocated_pages"][1] == 127125
    assert m["copy_pages"][1] == 121517 and m["meta_pages"][1] == 238
    assert m["image_pages"][1] == 121517 + 238 + 1
    assert m["image_pages"][4] == "swsusp_save:&nr_copy_pages+&nr_meta_pages+1"
    # the copy window is the kernel's sleep time, not a timestamp difference (508 - 508 = 0)
    assert m["copy_window_ms"][1:4] == (1165.68617, "ms", "sleep-time")
    assert m["device_suspend_ms"][1] == 5 + 424 + 2 + 2
    assert m["device_resume_ms"][1] == 4 + 5 + 2
    assert "zero_pages" not in m
    assert d.drops == 3 and d.started and d.ended
    nm = dict(d.not_measured)
    assert nm["zero_pages"] == "not seen in this cycle"
    assert nm["write_ms"] == "no image written in this cycle"
    assert set(nm) | set(m) == set(own)  # every metric is either measured or explained
    tasks_by_pid = {r[0]: r for r in d.tasks}
    assert tasks_by_pid[178] == (178, 178, "sh", 0, "user", 400000, 1)
    assert tasks_by_pid[1] == (1, 1, "init", 0, "user", None, 1)  # frozen in place
    assert tasks_by_pid[44][3:] == (1, "kernel", 300000, 1)


def test_fast_path_says_why_shrink_is_missing():
    status, own = all_attached()
    d = derive(snapshot_cycle(shrink=False).events, [], [], {}, status, own)
    m = metrics_of(d)
    nm = dict(d.not_measured)
    for name in ("shrink_requested_pages", "shrink_reclaimed_pages", "shrink_ms"):
        assert name not in m
        assert nm[name] == "fast path: shrink_all_memory not called"
    assert nm["saveable_after_pages"].startswith("fast path")
    assert m["prealloc_requested_pages"][1] == 127125
    assert d.drops is None  # counters unknown


def test_failed_freeze_marks_refusing_tasks_and_later_phases_not_reached():
    status, own = all_attached()
    tasks = [RawTask(300, 300, "stuck", 1, 0, 0, int(9.5 * MS), 0, 3, 3),  # true in the last sweep
             RawTask(301, 301, "late", 1, 0, 0, int(9.5 * MS), 0, 2, 2),  # stopped refusing before
             RawTask(302, 302, "ok", 1, 0, 0, int(9.5 * MS), int(9.6 * MS), 1, 1)]
    d = derive(snapshot_cycle(freeze_fail=True).events, [], tasks, {}, status, own)
    rows = {r[0]: r for r in d.tasks}
    assert rows[300][6] == 0 and rows[301][6] == 1 and rows[302][6] == 1
    m = metrics_of(d)
    assert m["freeze_failed_tasks"][1] == 1
    nm = dict(d.not_measured)
    assert "not reached" in nm["prealloc_ms"]
    assert "not reached" in nm["copy_pages"]
    assert "not reached" in nm["freeze_kernel_passes"]
    assert d.started and d.ended


def test_unattached_measurement_gives_its_reason():
    status, own = all_attached()
    status["zero_pages"] = (False, "nr_zero_pages: not in kernel 6.1.0-50-amd64 (only 6.6 and later)")
    status["copy_window"] = (False, "tk_debug_account_sleep_time: no symbol in this kernel (inlined or absent)")
    t = snapshot_cycle()
    t.events = [e for e in t.events if e.name != "sleep_time"]
    d = derive(t.events, [], [], {}, status, own)
    nm = dict(d.not_measured)
    assert nm["zero_pages"] == ("probe zero_pages not attached: nr_zero_pages: not in kernel "
                                "6.1.0-50-amd64 (only 6.6 and later)")
    assert nm["copy_window_ms"].startswith("probe copy_window not attached: tk_debug")


def test_image_pages_fall_back_to_snapshot_get_image_size():
    status, own = all_attached()
    t = snapshot_cycle()
    t.events = [e for e in t.events if e.name not in ("nr_copy_pages", "nr_meta_pages")]
    m = metrics_of(derive(t.events, [], [], {}, status, own))
    assert m["image_pages"][1] == 121756 and m["image_pages"][4] == "snapshot_get_image_size"
    assert "copy_pages" not in m


def test_devices_get_their_stage_from_the_pm_phase_around_them():
    status, own = all_attached()
    devs = [RawDevcall(int(80 * MS), 5000, 0, 1, 100, "0000:00:05.0", "virtio-pci", "pci0000:00", "bus "),
            RawDevcall(int(505 * MS), 700, 0, 1, 77, "serial8250", "serial8250", "none", "noirq driver "),
            RawDevcall(int(1686 * MS), 900, -5, 0x20, 100, "vda", "virtio_blk", "", "driver "),
            RawDevcall(int(3000 * MS), 900, 0, 0x20, 100, "late", "", "none", "noirq bus ")]
    d = derive(snapshot_cycle().events, devs, [], {}, status, own)
    rows = {r[0]: r for r in d.devices}
    assert rows["0000:00:05.0"] == ("0000:00:05.0", "virtio-pci", "pci0000:00", "freeze", "suspend",
                                    80 * MS, 5000, 0, 100)
    assert rows["serial8250"][2] is None and rows["serial8250"][4] == "suspend_noirq"
    assert rows["vda"][3:5] == ("thaw", "resume") and rows["vda"][7] == -5
    assert rows["late"][4] == "resume_noirq"  # outside any window: from pm_ops and the event
    m = metrics_of(d)
    assert m["device_callbacks"][1] == 4 and m["device_errors"][1] == 1


def test_event_rows_and_details():
    status, own = all_attached()
    t = snapshot_cycle()
    t.add(1, B, "snapshot_ioctl", 0x40043311)
    t.add(1.5, I, "swsusp_show_speed", 31531, aux1=2_090_000_000, text="Read")
    d = derive(t.events, [], [], {}, status, own)
    details = {(r[5], r[4]): r[7] for r in d.events}
    assert details[("snapshot_ioctl", "begin")] == "SNAPSHOT_CREATE_IMAGE"
    assert [r[7] for r in d.events if r[5] == "try_to_freeze_tasks" and r[4] == "end"] == [
        "stage=user passes=3 swept=66", "stage=kernel passes=2 swept=66"]
    # rows keep the ring's order (the order things happened), not the stamps' (which 7.1+
    # sets back after the copy): the Read event was added last here
    assert [r[7] for r in d.events if r[5] == "swsusp_show_speed"] == [
        "Allocated ns=3745572420", "Read ns=2090000000"]
    assert [r for r in d.events if r[5] == "count_data_pages" and r[4] == "end"][0][7] == \
        "prealloc#1 before shrinking"
    # equal stamps keep their ring order: swsusp_save begins before it ends
    copy = [(r[5], r[4]) for r in d.events if r[0] == 508 * MS]
    assert copy.index(("swsusp_save", "begin")) < copy.index(("swsusp_save", "end"))
    m = metrics_of(d)
    assert m["read_kbytes"][1] == 126124 and round(m["read_mbps"][1], 2) == 60.35
    assert round(m["read_ms"][1]) == 2090


def test_decode_event_record():
    rec = EventRecord(ts=5, value=-16, aux1=3, aux2=66, pid=7, tgid=7, cpu=1, kind=1,
                      has_value=1, has_aux=0, comm=b"python3", name=b"freeze_processes", str=b"")
    e = decode_event(rec)
    assert (e.name, e.kind, e.value, e.aux1, e.comm) == ("freeze_processes", 1, -16, None, "python3")
    assert ct.sizeof(EventRecord) == 128
    rec.has_value = 0
    assert decode_event(rec).value is None


def test_sleep_time_without_a_copy_is_not_a_copy_window():
    """pm_test=core stops the clocks for 5 s without any atomic copy."""
    status, own = all_attached()
    t = Timeline()
    t.span(0, 7, "ksys_sync_helper", end_value=0)
    t.span(8, 13, "freeze_processes", None, 0)
    t.span(20, 30, "pm:dpm_suspend", 1, 1)
    t.span(31, 32, "pm:syscore_suspend", 0, 0)
    t.add(5040, I, "sleep_time", 5_000_000_000)
    t.span(5041, 5050, "pm:dpm_resume", 0x40, 0x40)
    t.span(5100, 5101, "thaw_processes")
    d = derive(t.events, [], [], {}, status, own)
    assert "copy_window_ms" not in metrics_of(d)
    assert dict(d.not_measured)["copy_window_ms"].startswith("not reached in this cycle")


def test_resumed_image_has_no_copy_figures():
    """After a real resume the events stop inside swsusp_save; the sleep time is the power-off."""
    status, own = all_attached()
    t = snapshot_cycle()
    t.events = [e for e in t.events if not (e.ts == 508 * MS and (
        e.name in ("nr_copy_pages", "nr_meta_pages") or (e.name == "swsusp_save" and e.kind == E)))]
    d = derive(t.events, [], [], {}, status, own)
    m = metrics_of(d)
    assert "copy_window_ms" not in m and "copy_pages" not in m
    assert dict(d.not_measured)["copy_window_ms"].startswith("resumed from the image")


def test_phases_keep_ring_order_across_a_clock_set_back():
    # 7.3 under /dev/snapshot: the BPF clock runs through the copy and is set back when
    # timekeeping resumes, so syscore_resume is stamped after the dpm_resume_noirq that
    # follows it; the ring has them in the order they happened
    status, own = all_attached()
    events = list(snapshot_cycle().events)
    j = next(k for k, e in enumerate(events) if e.name == "pm:dpm_resume_noirq" and e.kind == 0)
    late = events[j].ts + 500 * MS  # half a second after the next phase began
    events[j:j] = [RawEvent(late, 0, 1, 1, "x", 0, "pm:syscore_resume", 0),
                   RawEvent(late + MS, 0, 1, 1, "x", 1, "pm:syscore_resume", 0)]
    rows = [r for r in derive(events, [], [], {}, status, own).events
            if r[5].startswith("pm:") and r[4] == "begin"]
    got = [r[5] for r in rows]
    assert got.index("pm:machine_suspend") < got.index("pm:syscore_resume") < got.index("pm:dpm_resume_noirq")


def test_copy_window_from_the_bpf_clock_where_it_runs_through_the_copy():
    # 7.1+ (7.3 in the lab): swsusp_save's entry and return carry different stamps, 1.127 s
    # apart; 6.1-6.12 stamp both alike and the sleep-time report gives the window
    status, own = all_attached()
    still = metrics_of(derive(snapshot_cycle().events, [], [], {}, status, own))
    assert still["copy_window_ms"][3] == "sleep-time"
    events = list(snapshot_cycle().events)
    k = next(i for i, e in enumerate(events) if e.name == "swsusp_save" and e.kind == 1)
    events[k] = RawEvent(events[k].ts + 1_127_441_662, *[getattr(events[k], f) for f in
                         ("cpu", "pid", "tgid", "comm", "kind", "name", "value", "aux1", "aux2", "text")])
    ran = metrics_of(derive(events, [], [], {}, status, own))
    assert ran["copy_window_ms"][1] == 1127.441662 and ran["copy_window_ms"][3] == "bpf-clock"
    assert "1 us" in ran["copy_window_ms"][4]


def test_devices_prepared_but_not_suspended_have_no_suspend_time():
    # 7.2+ under pm_test=freezer: dpm_prepare (before preallocation) and dpm_complete only
    status, own = all_attached()
    t = Timeline()
    t.span(0, 7, "ksys_sync_helper", end_value=0)
    t.span(10, 14, "pm:dpm_prepare", 1, 1)
    t.span(20, 24, "pm:dpm_complete", 16, 16)
    m = metrics_of(d := derive(t.events, [], [], {}, status, own))
    nm = dict(d.not_measured)
    assert "device_suspend_ms" not in m and nm["device_suspend_ms"].endswith("only prepared)")
    assert "device_resume_ms" not in m and nm["device_resume_ms"].endswith("only completed)")
