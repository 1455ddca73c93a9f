"""The per-run figures snapprof knows: name, unit, area and meaning.

The recorder writes metrics under these names; analysis, report and compare read them.
Standard library only. A figure that was not measured has no row (never 0).

``method`` values stored with each metric say how it was measured:
    probe        kprobe/kretprobe timing or arguments/return values (bcc)
    tracepoint   a kernel tracepoint (power:suspend_resume, device_pm_callback_*)
    kernel-log   parsed from the kernel's own log line (/dev/kmsg or serial console)
    printk-time  difference of two kernel log timestamps
    sleep-time   the kernel's own sleep-time report (tk_debug_account_sleep_time)
    device       returned by /dev/snapshot (SNAPSHOT_GET_IMAGE_SIZE, bytes read)
    sysfs        read from /sys or /proc before the cycle
    recorder     the recorder's own clock around a system call
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("probe", "tracepoint", "kernel-log", "printk-time", "sleep-time", "bpf-clock", "device",
           "sysfs", "recorder")


#: Kinds of memory in use that partition it, from /proc/meminfo: (kind, meminfo keys summed,
#: label). With MemFree they add up to at most MemTotal; the rest is "unattributed": pages
#: handed out that no counter names (drivers' alloc_pages, pages off the LRU lists, ...).
#: Memory reserved at boot (kernel text and data, the page map) is outside MemTotal.
COMPOSITION_KINDS = (
    ("anon", ("AnonPages",), "Anonymous memory (process heaps, stacks)"),
    ("shmem", ("Shmem",), "Shared memory and tmpfs (shmem)"),
    ("file_active", ("Active(file)",), "File cache, active"),
    ("file_inactive", ("Inactive(file)",), "File cache, inactive"),
    ("swapcache", ("SwapCached",), "Swap cache"),
    ("slab_reclaimable", ("SReclaimable",), "Slab, reclaimable"),
    ("slab_unreclaimable", ("SUnreclaim",), "Slab, unreclaimable"),
    ("kernel_stack", ("KernelStack",), "Kernel stacks"),
    ("page_tables", ("PageTables", "SecPageTables"), "Page tables"),
    ("vmalloc", ("VmallocUsed",), "vmalloc"),
    ("percpu", ("Percpu",), "Per-CPU allocations"),
    ("hugetlb", ("Hugetlb",), "HugeTLB pages"),
    # not in meminfo: free pages the per-CPU lists hold (MemFree counts only the buddy
    # allocator's), summed from /proc/zoneinfo's pagesets ("count:")
    ("pcp_free", (), "Free pages on per-CPU lists"),
)
#: part of the file cache above, shown apart (not a kind of its own in the partition)
COMPOSITION_SUBSET = ("file_dirty", ("Dirty",), "File cache, dirty")


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str  # ms, pages, bytes, kB, count, MB/s, ratio, errno
    area: str  # freezer, shrink, copy, devices, io, resume, phases, system, cycle
    label: str
    lower_is_better: bool | None = True  # None: neither (a setting, a count of things)
    #: a setting or a fact of the machine (RAM, free memory before the cycle, the
    #: /sys/power knobs, (de)compression threads: a parameter or the CPU count), not
    #: behaviour measured in the cycle: compare lists a difference as a setting that
    #: differs (the comparison is less controlled), never as a kernel finding
    setting: bool = False


_ALL = [
    # freezer
    Metric("sync_ms", "ms", "freezer", "Filesystem sync"),
    # freeze_*_ms: the freezing itself, as the kernel's "(elapsed N seconds)" times it
    # (try_to_freeze_tasks' sweeps); freeze_*_call_ms: the whole call around it
    Metric("freeze_user_ms", "ms", "freezer", "Freeze user space (the kernel's elapsed)"),
    Metric("freeze_user_call_ms", "ms", "freezer", "freeze_processes(), whole call"),
    Metric("freeze_user_passes", "count", "freezer", "User-space freezer passes"),
    Metric("freeze_user_tasks", "count", "freezer", "User tasks that had to freeze", None),
    # *_woken: those the freezer had to signal (freeze_task() returned true), not counting
    # the tasks it froze in place; light probes see these, only the sweep hooks see all
    Metric("freeze_user_woken", "count", "freezer", "User tasks the freezer had to signal", None),
    Metric("freeze_kernel_ms", "ms", "freezer", "Freeze kernel threads (the kernel's elapsed)"),
    Metric("freeze_kernel_call_ms", "ms", "freezer", "freeze_kernel_threads(), whole call"),
    Metric("freeze_kernel_passes", "count", "freezer", "Kernel-thread freezer passes"),
    Metric("freeze_kernel_tasks", "count", "freezer", "Kernel threads that had to freeze", None),
    Metric("freeze_kernel_woken", "count", "freezer", "Kernel threads the freezer had to wake", None),
    Metric("freeze_failed_tasks", "count", "freezer", "Tasks that failed to freeze"),
    Metric("thaw_kernel_ms", "ms", "freezer", "Thaw kernel threads"),
    Metric("thaw_ms", "ms", "freezer", "Thaw processes"),
    # page shrinking / preallocation
    Metric("mem_total_kb", "kB", "system", "Memory total", None, setting=True),
    Metric("mem_free_kb", "kB", "system", "Memory free before the cycle", None, setting=True),
    Metric("mem_available_kb", "kB", "system", "Memory available before the cycle (MemAvailable)", None,
           setting=True),
    Metric("swap_free_kb", "kB", "system", "Swap free before the cycle", None, setting=True),
    Metric("image_size_setting_bytes", "bytes", "system", "/sys/power/image_size", None, setting=True),
    Metric("reserved_size_setting_bytes", "bytes", "system", "/sys/power/reserved_size", None, setting=True),
    Metric("freeze_timeout_setting_ms", "ms", "system", "/sys/power/pm_freeze_timeout", None, setting=True),
    # memory composition (area "memory"): /proc/meminfo just before the cycle (mem_<kind>_kb)
    # and just after it (mem_<kind>_after_kb); COMPOSITION names the kinds that partition
    # memory in use (with mem_free_kb: the rest of mem_total_kb is unattributed)
    *[Metric(f"mem_{kind}{when}_kb", "kB", "memory", f"{label}{what}", None)
      for kind, _keys, label in (*COMPOSITION_KINDS, COMPOSITION_SUBSET)
      for when, what in (("", " before the cycle"), ("_after", " after the cycle"))],
    Metric("mem_free_after_kb", "kB", "memory", "Memory free after the cycle", None),
    Metric("composition_scan_ms", "ms", "memory",
           "Memory composition read before the cycle (recorder: /proc/meminfo, smaps_rollup)"),
    Metric("prealloc_ms", "ms", "shrink", "Preallocate image memory"),
    Metric("prealloc_result", "errno", "shrink", "Preallocation result (0 = ok)", None),
    Metric("saveable_pages", "pages", "shrink", "Saveable pages before shrinking"),
    Metric("saveable_after_pages", "pages", "shrink", "Saveable pages after preallocation"),
    Metric("prealloc_requested_pages", "pages", "shrink", "Pages requested from the allocator", None),
    Metric("prealloc_got_pages", "pages", "shrink", "Pages the allocator gave", None),
    Metric("preallocated_pages", "pages", "shrink", "Pages allocated for the snapshot", None),
    Metric("prealloc_kernel_ms", "ms", "shrink", "Preallocation time as the kernel logs it"),
    Metric("prealloc_kbytes", "kB", "shrink", "Memory preallocated for the image", None),
    Metric("prealloc_mbps", "MB/s", "shrink", "Preallocation rate as the kernel logs it", False),
    Metric("shrink_requested_pages", "pages", "shrink", "shrink_all_memory: pages requested", None),
    Metric("shrink_reclaimed_pages", "pages", "shrink", "shrink_all_memory: pages reclaimed", None),
    Metric("shrink_ms", "ms", "shrink", "shrink_all_memory time"),
    # atomic copy
    Metric("copy_pages", "pages", "copy", "Pages copied into the image"),
    Metric("zero_pages", "pages", "copy", "Zero pages (not stored)", None),
    Metric("meta_pages", "pages", "copy", "Image metadata pages"),
    Metric("image_pages", "pages", "copy", "Image pages (data + metadata + header)"),
    Metric("image_bytes", "bytes", "copy", "Image size"),
    Metric("copy_window_ms", "ms", "copy", "Atomic copy window"),
    Metric("copy_needed_pages", "pages", "copy", "Pages to copy, counted before the copy (incl. zero pages)"),
    Metric("timekeeping_suspended_ms", "ms", "copy", "Timekeeping suspended (kernel log)"),
    Metric("create_image_ms", "ms", "cycle", "CREATE_IMAGE ioctl (whole hibernation_snapshot)"),
    Metric("freeze_ioctl_ms", "ms", "cycle", "FREEZE ioctl (sync + freeze user space)"),
    Metric("image_read_bytes", "bytes", "copy", "Image bytes read from /dev/snapshot", None),
    # devices and phases
    Metric("device_suspend_ms", "ms", "devices", "Device suspend (prepare..noirq)"),
    Metric("device_resume_ms", "ms", "devices", "Device resume (noirq..complete)"),
    Metric("device_callbacks", "count", "devices", "Device PM callbacks", None),
    Metric("device_errors", "count", "devices", "Device PM callbacks that failed"),
    Metric("dpm_freeze_ms", "ms", "devices", "Devices freeze (kernel log)"),
    Metric("dpm_late_freeze_ms", "ms", "devices", "Devices late freeze (kernel log)"),
    Metric("dpm_noirq_freeze_ms", "ms", "devices", "Devices noirq freeze (kernel log)"),
    Metric("dpm_noirq_thaw_ms", "ms", "devices", "Devices noirq thaw (kernel log)"),
    Metric("dpm_early_thaw_ms", "ms", "devices", "Devices early thaw (kernel log)"),
    Metric("dpm_thaw_ms", "ms", "devices", "Devices thaw (kernel log)"),
    # image I/O
    Metric("write_ms", "ms", "io", "Image write"),
    Metric("write_kbytes", "kB", "io", "Image bytes written"),
    Metric("write_mbps", "MB/s", "io", "Image write throughput", False),
    Metric("read_ms", "ms", "io", "Image read"),
    Metric("read_kbytes", "kB", "io", "Image bytes read"),
    Metric("read_mbps", "MB/s", "io", "Image read throughput", False),
    Metric("write_pages", "pages", "io", "Image pages to write (kernel log)", None),
    Metric("write_compressed_kbytes", "kB", "io", "Image size after compression"),
    Metric("compression_ratio", "ratio", "io",
           "Compression ratio (compressed size / image size)"),
    Metric("compress_threads", "count", "io", "Compression threads", None, setting=True),
    Metric("read_pages", "pages", "io", "Image pages to load (kernel log)", None),
    Metric("decompress_threads", "count", "io", "Decompression threads", None, setting=True),
    # resume after a real hibernation (derived by snapprof.analysis.derived)
    Metric("resume_ms", "ms", "resume",
           "Resume in the restored kernel (to thaw end)"),
    # whole cycle
    Metric("cycle_ms", "ms", "cycle", "Whole cycle"),
    Metric("lab_offline_ms", "ms", "cycle",
           "Lab: powered off between the boots (host wall clock, incl. host overhead)", None),
    # systemd's part of a `systemctl hibernate` (area "systemd"): from the journal, read by the
    # recorder waiting for cycles (--trigger none) and by the lab's systemd cycle
    # (snapprof.record.journal.SPANS says what each spans and on which clock)
    Metric("systemd_logind_ms", "ms", "systemd", "logind's go-ahead -> systemd-hibernate.service"),
    Metric("systemd_sleep_pre_ms", "ms", "systemd",
           "systemd-hibernate.service -> systemd-sleep's sleep operation"),
    Metric("user_slice_frozen_ms", "ms", "systemd",
           "systemd-hibernate.service -> user.slice frozen (cgroup freezer)"),
    Metric("user_slice_freeze_failed_ms", "ms", "systemd",
           "systemd-hibernate.service -> \"Failed to freeze unit 'user.slice'\" (a freeze systemd gave up on)"),
    Metric("user_slice_freeze_ms", "ms", "systemd", "user.slice cgroup freeze (PID 1, debug log)"),
    Metric("systemd_sleep_call_ms", "ms", "systemd",
           "systemd-sleep's sleep call (CLOCK_MONOTONIC: the kernel's part before the copy and after)"),
    Metric("user_slice_thawed_ms", "ms", "systemd", "Return from sleep -> user.slice thawed"),
    Metric("user_slice_thaw_ms", "ms", "systemd", "user.slice cgroup thaw (PID 1, debug log)"),
    Metric("systemd_sleep_post_ms", "ms", "systemd",
           "Return from sleep -> systemd-hibernate.service finished"),
    Metric("systemd_hibernate_unit_ms", "ms", "systemd", "systemd-hibernate.service, whole"),
    Metric("systemd_sleep_wall_ms", "ms", "systemd",
           "systemd-sleep's sleep operation on the wall clock (RTC, 1 s): what the user waited"),
]

#: systemd's part: read from the journal (snapprof.record.journal)
SYSTEMD_JOURNAL = tuple(m.name for m in _ALL if m.area == "systemd")

REGISTRY: dict[str, Metric] = {m.name: m for m in _ALL}

# Figures the analysis works out from recorded ones (snapprof.analysis.derived): a capture
# never holds them, so the recorder gives them no "not measured" reason either.
DERIVED = ("compression_ratio", "resume_ms")


def get(name: str) -> Metric:
    """The registry entry for name; unknown names get a neutral entry (captures may be newer)."""
    return REGISTRY.get(name) or Metric(name, "", "other", name, None)
