"""Resolving the probe catalogue against fake kernels (no bcc, no root needed)."""

from __future__ import annotations

import pytest

from probes_fakes import fake_kernel
from snapprof.errors import SnapprofError
from snapprof.record.probeset import ProbeSet
from snapprof.record.resolve import KernelView


def probeset(tmp_path, version="6.1", euid=0, bcc=True, areas=None, freezer_probes="sweep", **kw):
    root = fake_kernel(tmp_path, version, **kw)
    return ProbeSet(areas=areas, view=KernelView(root=str(root), euid=euid, bcc=bcc),
                    freezer_probes=freezer_probes)


def by_name(ps):
    return {r.measurement.name: r for r in ps.resolutions}


def test_61_uses_lzo_and_has_no_zero_pages(tmp_path):
    ps = probeset(tmp_path, "6.1")
    res = by_name(ps)
    assert res["save_image_compressed"].available
    assert res["save_image_compressed"].target == "save_image_lzo"
    assert not res["zero_pages"].available
    assert "nr_zero_pages: not in kernel 6.1.0-50-amd64 (only 6.6 and later)" in res["zero_pages"].reason
    assert res["image_counters"].available
    # every other measurement resolves on a complete 6.1 tree
    missing = {n for n, r in res.items() if not r.available}
    assert missing == {"zero_pages"}


def test_612_uses_compressed_image_and_reads_zero_pages(tmp_path):
    ps = probeset(tmp_path, "6.12")
    res = by_name(ps)
    assert res["save_image_compressed"].target == "save_compressed_image"
    assert res["load_image_compressed"].target == "load_compressed_image"
    assert res["zero_pages"].available
    flags = ps.cflags()
    addr = [f for f in flags if f.startswith("-DADDR_nr_zero_pages=")]
    assert len(addr) == 1 and addr[0].endswith("ULL")
    assert "-DHAVE_TP_power__suspend_resume" in flags
    assert "-DHAVE_TP_power__device_pm_callback_end" in flags


def test_addresses_come_from_kallsyms(tmp_path):
    ps = probeset(tmp_path, "6.1")
    syms = ps.view.kallsyms()
    want = syms["nr_copy_pages"][0][0]
    assert f"-DADDR_nr_copy_pages={want:#x}ULL" in ps.cflags()
    assert "some_mod_fn" not in syms  # module symbols are not vmlinux symbols


def test_inlined_function_is_reported_with_reason(tmp_path):
    ps = probeset(tmp_path, "6.12", drop=("count_data_pages",))
    r = by_name(ps)["saveable"]
    assert not r.available
    assert r.reason == "count_data_pages: no symbol in this kernel (inlined or absent)"
    # the measurements sharing the other probes are unaffected
    assert by_name(ps)["prealloc"].available


def test_compiler_clone_only(tmp_path):
    ps = probeset(tmp_path, "6.1", drop=("shrink_all_memory",),
                  extra_syms=[("shrink_all_memory.part.0", "t")])
    r = by_name(ps)["shrink"]
    assert "only compiler clones in this kernel (shrink_all_memory.part.0)" in r.reason


def test_ambiguous_name_is_rejected(tmp_path):
    ps = probeset(tmp_path, "6.1", duplicate=("freeze_task",))
    r = by_name(ps)["freezer_sweep"]
    assert not r.available
    assert "freeze_task: ambiguous name (2 symbols)" in r.reason


def test_blacklisted_function(tmp_path):
    ps = probeset(tmp_path, "6.1", blacklist=("swsusp_show_speed",))
    assert "swsusp_show_speed: in the kprobe blacklist" in by_name(ps)["show_speed"].reason


def test_notrace_function_is_still_usable_with_a_note(tmp_path):
    ps = probeset(tmp_path, "6.1", notrace=("tk_debug_account_sleep_time",))
    r = by_name(ps)["copy_window"]
    assert r.available
    assert r.notes == ["tk_debug_account_sleep_time is not ftrace-traceable (notrace): int3 kprobe"]


def test_missing_tracepoint(tmp_path):
    ps = probeset(tmp_path, "6.1", tracepoints=["power/suspend_resume"])
    r = by_name(ps)["device_callbacks"]
    assert not r.available
    assert r.reason == ("tracepoint power:device_pm_callback_start absent in this kernel; "
                        "tracepoint power:device_pm_callback_end absent in this kernel")
    assert "-DHAVE_TP_power__device_pm_callback_start" not in ps.cflags()
    assert by_name(ps)["pm_phases"].available


def test_no_tracefs_falls_back_to_kallsyms(tmp_path):
    ps = probeset(tmp_path, "6.1", tracefs=False)
    res = by_name(ps)
    assert res["freeze_user"].available  # found in /proc/kallsyms
    assert "tracefs not mounted" in res["pm_phases"].reason


def test_not_root_blocks_attach_and_hides_addresses(tmp_path):
    ps = probeset(tmp_path, "6.1", euid=1000, hidden_addrs=True)
    res = by_name(ps)
    assert "address hidden" in res["image_counters"].reason
    assert res["freeze_user"].available  # names are visible without root
    rows = {r[0]: r for r in ps.status()}
    assert rows["freeze_user"][3] is False
    assert rows["freeze_user"][4] == "not root (effective uid 1000)"
    with pytest.raises(SnapprofError, match="not root"):
        ps.attach()


def test_bcc_missing(tmp_path):
    ps = probeset(tmp_path, "6.12", bcc=False)
    assert ps.view.blockers() == ["bcc missing (install python3-bpfcc)"]
    with pytest.raises(SnapprofError, match="bcc missing"):
        ps.attach()


def test_lockdown_confidentiality_blocks_but_integrity_does_not(tmp_path):
    ps = probeset(tmp_path / "c", "6.1", lockdown="confidentiality")
    assert any("lockdown (confidentiality)" in b for b in ps.view.blockers())
    ps = probeset(tmp_path / "i", "6.1", lockdown="integrity")
    assert ps.view.lockdown() == "integrity"
    assert ps.view.blockers() == []


def test_kernel_without_kprobes_or_hibernation(tmp_path):
    drop = [f for f in ("swsusp_save", "hibernate", "hibernate_preallocate_memory")]
    ps = probeset(tmp_path, "6.1", tracefs=False, kprobe_pmu=False, drop=drop)
    assert ps.view.blockers()[0].startswith("kernel without kprobes")
    r = by_name(ps)["prealloc"]
    assert r.reason == "kernel built without hibernation (CONFIG_HIBERNATION off: no swsusp_save)"


def test_areas_select_and_keep_cycle_boundaries(tmp_path):
    ps = probeset(tmp_path, "6.1", areas=["copy"])
    names = [r.measurement.name for r in ps.resolutions]
    assert "freeze_user" in names and "thaw" in names  # always attached
    assert "image_counters" in names and "device_callbacks" not in names
    assert "copy_pages" in ps.metric_names() and "device_callbacks" not in ps.metric_names()
    with pytest.raises(SnapprofError, match="unknown area bogus"):
        probeset(tmp_path / "x", "6.1", areas=["bogus"])


def test_hooks_follow_handler_naming(tmp_path):
    ps = probeset(tmp_path, "6.1")
    res = by_name(ps)
    assert ps.hooks(res["freeze_latency"]) == [
        ("kprobe", "try_to_freeze_tasks", "enter__try_to_freeze_tasks", 0),
        ("kretprobe", "try_to_freeze_tasks", "leave__try_to_freeze_tasks", 0),
        ("kprobe", "signal_wake_up_state", "enter__signal_wake_up_state", 0),
        ("kprobe", "wake_up_state", "enter__wake_up_state", 0),
        ("kprobe", "__refrigerator", "enter____refrigerator", 0),
    ]
    assert ps.hooks(res["freezer_sweep"]) == [
        ("kprobe", "try_to_freeze_tasks", "enter__try_to_freeze_tasks", 0),
        ("kretprobe", "try_to_freeze_tasks", "leave__try_to_freeze_tasks", 0),
        ("kprobe", "freeze_task", "enter__freeze_task", 0),
        ("kretprobe", "freeze_task", "leave__freeze_task", 0),
    ]
    assert ps.hooks(res["device_callbacks"]) == [
        ("tracepoint", "power:device_pm_callback_start", "tp__power__device_pm_callback_start", 0),
        ("tracepoint", "power:device_pm_callback_end", "tp__power__device_pm_callback_end", 0),
    ]
    assert ps.hooks(res["copy_window"]) == [
        ("kprobe", "tk_debug_account_sleep_time", "enter__tk_debug_account_sleep_time", 0)]


def test_collect_before_attach_is_an_error(tmp_path):
    ps = probeset(tmp_path, "6.1")
    with pytest.raises(SnapprofError, match="not attached"):
        ps.collect()


def test_only_the_catalogues_symbols_are_kept(tmp_path):
    # the recorder's memory is in the image: kallsyms is streamed and narrowed, not kept whole
    ps = probeset(tmp_path, "6.1", extra_syms=(("unrelated_fn", "t"), ("freeze_task.isra.0", "t")))
    with open(ps.view.path("/proc/kallsyms")) as f:
        all_names = {ln.split()[2] for ln in f if len(ln.split()) == 3}
    kept = set(ps.view.kallsyms())
    assert "unrelated_fn" in all_names and "unrelated_fn" not in kept
    assert "freeze_task.isra.0" in kept  # clones stay: they explain "inlined" reasons
    assert {"freeze_task", "swsusp_save", "nr_copy_pages"} <= kept
    assert "unrelated_fn" not in (ps.view.traceable() or {})
    assert len(kept) < len(all_names)


def test_sync_probe_prefers_pm_sleep_fs_sync_where_the_kernel_has_it(tmp_path):
    # 6.19+ (seen on 7.3.4): the PM path syncs through pm_sleep_fs_sync, and ksys_sync_helper,
    # still in the kernel, is not called: attached first, it saw nothing (sync_ms came from the log)
    assert by_name(probeset(tmp_path / "a", "6.12"))["sync"].target == "ksys_sync_helper"
    res = by_name(probeset(tmp_path / "b", "6.12", extra_syms=[("pm_sleep_fs_sync", "T")]))
    assert res["sync"].target == "pm_sleep_fs_sync"
