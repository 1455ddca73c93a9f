"""Fake kernel trees for the probe resolution tests: /proc/kallsyms, tracefs, lockdown ...

fake_kernel(tmp_path, "6.1") writes what a Debian 6.1 guest shows (from the symbol
tables in docs/hibernation-symbols.txt); keyword arguments change one fact at a time.
"""

from __future__ import annotations

from pathlib import Path

# Hibernation functions present as symbols in both Debian 6.1 and 6.12 builds.
COMMON_FUNCS = [
    "ksys_sync_helper", "freeze_processes", "try_to_freeze_tasks", "freeze_task",
    "__refrigerator", "_printk", "freeze_workqueues_begin", "signal_wake_up_state",
    "wake_up_state", "usleep_range_state", "ktime_get_with_offset", "freeze_kernel_threads", "thaw_processes", "thaw_kernel_threads",
    "hibernate_preallocate_memory", "count_data_pages", "preallocate_image_memory",
    "shrink_all_memory", "swsusp_show_speed", "swsusp_save", "snapshot_get_image_size",
    "tk_debug_account_sleep_time", "hibernate", "hibernation_snapshot", "snapshot_ioctl",
    "swsusp_write", "save_image", "swsusp_read", "load_image", "state_store",
]
VERSION_FUNCS = {
    "6.1": ["save_image_lzo", "load_image_lzo"],
    "6.12": ["save_compressed_image", "load_compressed_image"],
}
RELEASES = {"6.1": "6.1.0-50-amd64", "6.12": "6.12.117+deb13-amd64"}
TRACEPOINTS = ["power/suspend_resume", "power/device_pm_callback_start",
               "power/device_pm_callback_end"]


def fake_kernel(root: Path, version: str = "6.1", *, drop=(), extra_syms=(), hidden_addrs=False,
                tracefs=True, tracepoints=None, lockdown="none", kprobe_pmu=True,
                blacklist=(), duplicate=(), notrace=()) -> Path:
    """Write a fake kernel tree under root and return root."""
    root = Path(root)
    funcs = [f for f in COMMON_FUNCS + VERSION_FUNCS[version] if f not in drop]
    statics = ["nr_copy_pages", "nr_meta_pages"] + (["nr_zero_pages"] if version != "6.1" else [])
    statics = [s for s in statics if s not in drop]
    lines = ["ffffffff81000000 T _stext"]
    addr = 0xFFFFFFFF81100000
    for f in funcs + list(duplicate):
        lines.append(f"{0 if hidden_addrs else addr:016x} t {f}")
        addr += 0x100
    for name, typ in extra_syms:
        lines.append(f"{0 if hidden_addrs else addr:016x} {typ} {name}")
        addr += 0x100
    for s in statics:
        lines.append(f"{0 if hidden_addrs else addr:016x} b {s}")
        addr += 0x10
    lines.append(f"{0 if hidden_addrs else addr:016x} t some_mod_fn\t[virtio_blk]")
    _write(root / "proc/kallsyms", "\n".join(lines) + "\n")
    _write(root / "proc/sys/kernel/osrelease", RELEASES[version] + "\n")
    if tracefs:
        t = root / "sys/kernel/tracing"
        traceable = [f for f in funcs if f not in notrace] + list(duplicate)
        _write(t / "available_filter_functions", "\n".join(traceable) + "\nsome_mod_fn [virtio_blk]\n")
        _write(t / "kprobe_events", "")
        for tp in (TRACEPOINTS if tracepoints is None else tracepoints):
            _write(t / "events" / tp / "format", "name: x\n")
        (t / "events").mkdir(parents=True, exist_ok=True)
    if lockdown is not None:
        marked = " ".join(f"[{w}]" if w == lockdown else w
                          for w in ("none", "integrity", "confidentiality"))
        _write(root / "sys/kernel/security/lockdown", marked + "\n")
    devs = root / "sys/bus/event_source/devices"
    devs.mkdir(parents=True, exist_ok=True)
    (devs / "tracepoint").mkdir(exist_ok=True)
    if kprobe_pmu:
        (devs / "kprobe").mkdir(exist_ok=True)
    if blacklist:
        _write(root / "sys/kernel/debug/kprobes/blacklist",
               "".join(f"0xffffffff81000000-0xffffffff81000010\t{b}\n" for b in blacklist))
    return root


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
