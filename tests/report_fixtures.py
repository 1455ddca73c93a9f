"""UNIT-TEST FIXTURES ONLY: small synthetic captures written with CaptureWriter.

The figures below are invented to exercise code paths the real captures do not have (a
failed run, a run that stopped half-way); they are not measurements and never appear in
the product or its documentation. Real captures from the lab live in tests/data/*.snap;
``copy_with_hostile_names`` derives a capture from one of them with hostile names.
"""

from __future__ import annotations

from snapprof.capture import CaptureWriter, Run

MS = 1_000_000
HOSTILE = "<script>alert(1)</script>"

# (event name, begin ms, end ms) on the BOOTTIME clock, relative to the run start
SPANS = [
    ("ksys_sync_helper", 1, 11),
    ("freeze_processes", 12, 40),
    ("hibernate_preallocate_memory", 45, 4045),
    ("shrink_all_memory", 100, 900),
    ("freeze_kernel_threads", 4050, 4055),
    ("pm:dpm_prepare", 4060, 4062),
    ("pm:dpm_suspend", 4062, 4090),
    ("pm:dpm_suspend_late", 4090, 4091),
    ("pm:dpm_suspend_noirq", 4091, 4095),
    ("pm:syscore_suspend", 4110, 4111),
    # clocks stand still here: the copy's length comes from copy_window_ms
    ("pm:syscore_resume", 4111, 4112),
    ("pm:dpm_resume_noirq", 4130, 4135),
    ("pm:dpm_resume_early", 4135, 4136),
    ("pm:dpm_resume", 4136, 4180),
    ("pm:dpm_complete", 4180, 4182),
    ("thaw_processes", 4500, 4530),
]
CPU_SPANS = [("pm:CPU_OFF", 4096, 4100), ("pm:CPU_OFF", 4100, 4108),
             ("pm:CPU_ON", 4113, 4120), ("pm:CPU_ON", 4120, 4128)]


def _events(base_ns: int, spans, scale: float = 1.0, copy: bool = True):
    out = []
    for name, b, e in spans:
        out.append((base_ns + int(b * MS * scale), 0, 1, "snapprof", "begin", name, None, None))
        if e is not None:
            out.append((base_ns + int(e * MS * scale), 0, 1, "snapprof", "end", name, 0, None))
    if copy:
        out.append((base_ns + int(4111 * MS * scale), 0, 1, "swapper", "begin",
                    "pm:machine_suspend", 4, None))
    return sorted(out)


def complete_run(i: int, scale: float = 1.0, hostile: bool = False) -> Run:
    base = (i + 1) * 100_000 * MS
    run = Run(trigger="snapshot", status="complete", started_ns=base,
              ended_ns=base + int(4600 * MS * scale), started_wall=f"2026-01-01T00:0{i}:00Z",
              ringbuf_drops=0)
    run.events = _events(base, SPANS + CPU_SPANS, scale)
    run.metric("sync_ms", 10 * scale, "ms", "probe", "ksys_sync_helper")
    run.metric("freeze_user_ms", 28 * scale, "ms", "probe", "freeze_task sweeps")
    run.metric("freeze_kernel_ms", 5 * scale, "ms", "probe", "freeze_kernel_threads")
    run.metric("prealloc_ms", 4000 * scale, "ms", "probe", "hibernate_preallocate_memory")
    run.metric("shrink_ms", 800 * scale, "ms", "probe", "shrink_all_memory")
    run.metric("saveable_pages", 200_000, "pages", "probe", "count_data_pages")
    run.metric("preallocated_pages", 80_000, "pages", "kernel-log", None)
    run.metric("shrink_requested_pages", 120_000, "pages", "probe", "shrink_all_memory")
    run.metric("shrink_reclaimed_pages", 110_000 + i, "pages", "probe", "shrink_all_memory")
    run.metric("copy_pages", 70_000 + i, "pages", "kernel-log", None)
    run.metric("image_pages", 70_140 + i, "pages", "device", "SNAPSHOT_GET_IMAGE_SIZE")
    run.metric("image_bytes", (70_140 + i) * 4096, "bytes", "device", "SNAPSHOT_GET_IMAGE_SIZE")
    run.metric("copy_window_ms", 300 * scale, "ms", "sleep-time", "tk_debug_account_sleep_time")
    run.metric("device_suspend_ms", 35 * scale, "ms", "tracepoint", None)
    run.metric("device_resume_ms", 52 * scale, "ms", "tracepoint", None)
    run.metric("thaw_ms", 30 * scale, "ms", "probe", "thaw_processes")
    run.metric("cycle_ms", 4600 * scale, "ms", "recorder", None)
    run.metric("mem_total_kb", 2_000_000, "kB", "sysfs", "/proc/meminfo")
    run.missing("zero_pages", "kernel 6.1 does not skip zero pages")
    run.missing("write_mbps", "snapshot-and-continue: the image is not written")
    run.tasks = [
        (100, 100, "systemd-journal", 0, "user", int(2 * MS * scale), 1),
        (101, 101, "sshd", 0, "user", int(0.5 * MS * scale), 1),
        (102, 102, HOSTILE if hostile else "cron", 0, "user", None, 1),
        (50, 50, "kworker/u4:1", 1, "kernel", int(1 * MS * scale), 1),
    ]
    run.devices = [
        ("0000:00:02.0", "virtio-pci", "pci0000:00", "freeze", "suspend", base + 4070 * MS,
         int(12 * MS * scale), 0, 7),
        (HOSTILE if hostile else "serial8250", "serial8250", None, "freeze", "suspend",
         base + 4071 * MS, int(3 * MS * scale), 0, 7),
        ("0000:00:02.0", "virtio-pci", "pci0000:00", "thaw", "resume", base + 4140 * MS,
         int(30 * MS * scale), 0, 7),
    ]
    run.kmsg = [
        (10, 0, 6, "Freezing user space processes"),
        (11, 0, 6, "Freezing user space processes completed (elapsed 0.028 seconds)"),
        (12, 0, 6, "PM: hibernation: Allocated 80000 pages for snapshot"),
        (13, 0, 6, "PM: hibernation: Allocated 320000 kbytes in 4.00 seconds (80.00 MB/s)"),
        (14, 0, 6, "Freezing remaining freezable tasks completed (elapsed 0.005 seconds)"),
        (15, 0, 6, f"PM: hibernation: Image created ({70_000 + i} pages copied)"),
    ]
    return run


def failed_run() -> Run:
    base = 900_000 * MS
    run = Run(trigger="snapshot", status="failed", started_ns=base, ended_ns=base + 50 * MS,
              error="freeze_processes returned -16 (EBUSY)")
    run.events = _events(base, [("ksys_sync_helper", 1, 11), ("freeze_processes", 12, 40)], copy=False)
    run.metric("freeze_user_ms", 28, "ms", "probe", "freeze_task sweeps")
    run.metric("freeze_failed_tasks", 1, "count", "probe", "freeze_task")
    run.tasks = [(300, 300, "stuck-fuse", 0, "user", None, 0)]
    return run


def incomplete_run() -> Run:
    base = 950_000 * MS
    run = Run(trigger="snapshot", status="incomplete", started_ns=base,
              error="recorder stopped: guest powered off")
    spans = [("ksys_sync_helper", 1, 11), ("freeze_processes", 12, 40),
             ("hibernate_preallocate_memory", 45, None)]
    run.events = _events(base, spans, copy=False)
    run.metric("freeze_user_ms", 28, "ms", "probe", "freeze_task sweeps")
    return run


META = {
    "kernel_release": "6.1.0-test-amd64", "kernel_version": "#1 SMP test", "distro": "test",
    "machine": "x86_64", "hostname": "fixture", "mem_total_kb": 2_000_000, "trigger": "snapshot",
    "snapprof_version": "0.1.0", "recorded_at": "2026-01-01T00:00:00Z", "pm_test": "none",
    "power_disk": "platform",
}
PROBES = [
    ("freeze_processes", "freezer", "freeze_processes", True, None),
    ("shrink_all_memory", "shrink", "shrink_all_memory", True, None),
    ("save_image_lzo", "io", "save_image_lzo", False, "not in this kernel (renamed in 6.12)"),
]


def write_capture(path, n_complete: int = 3, failed: bool = True, incomplete: bool = True,
                  hostile: bool = False, meta: dict | None = None):
    """A synthetic capture at path: n_complete complete runs (+ a failed and an incomplete one)."""
    with CaptureWriter(path) as w:
        w.set_meta({**META, **(meta or {})})
        w.set_probes(PROBES)
        for i in range(n_complete):
            w.add_run(complete_run(i, scale=1.0 + 0.1 * i, hostile=hostile))
        if failed:
            w.add_run(failed_run())
        if incomplete:
            w.add_run(incomplete_run())
    return path


def copy_with_hostile_names(source, dest, name: str = HOSTILE, meta: dict | None = None):
    """A copy of a real capture whose slowest task and slowest suspend callback of run 1 are
    renamed to ``name`` (default HOSTILE), its meta updated with ``meta``; every figure stays
    the recorded one."""
    from snapprof.capture import COLUMNS, CaptureReader

    with CaptureReader(source) as r:
        meta_of_source, probes, runs = r.meta(), r.probes(), r.runs()
        tables = {t: r.table(t) for t in COLUMNS}
    tasks = [t for t in tables["tasks"] if t["run_id"] == 1 and t["freeze_latency_ns"]]
    devs = [d for d in tables["devices"] if d["run_id"] == 1 and d["stage"] == "suspend"]
    max(tasks, key=lambda t: t["freeze_latency_ns"])["comm"] = name
    max(devs, key=lambda d: d["duration_ns"])["device"] = name
    with CaptureWriter(dest) as w:
        w.set_meta({**meta_of_source, **(meta or {})})
        w.set_probes([(p["name"], p["area"], p["target"], p["attached"], p["reason"])
                      for p in probes])
        for src in runs:
            run = Run(**{k: src[k] for k in ("trigger", "status", "error", "started_ns",
                                             "ended_ns", "started_wall", "ringbuf_drops")})
            for t, cols in COLUMNS.items():
                setattr(run, t, [tuple(row[c] for c in cols[1:]) for row in tables[t]
                                 if row["run_id"] == src["run_id"]])
            w.add_run(run)
    return dest
