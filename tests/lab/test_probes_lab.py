"""The probes on real Debian kernels (bookworm 6.1, trixie 6.12), checked against the kernel's
own log lines. One guest boot per distro (tests/lab/probes_job.py): compile and attach
once, then three /dev/snapshot cycles:
  default        image_size default: the fast path (no shrink_all_memory)
  image_size=0   the slow path: shrink_all_memory and a second count_data_pages
  pm_test=freezer  stops after freezing kernel threads: no devices, no atomic copy
"""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.lab

from conftest import KERNEL_VERSIONS, LAB_DISTROS, lab_id
from snapprof.record.derive import KERNEL_READS_SOURCE

VERSIONS = KERNEL_VERSIONS


@pytest.fixture(scope="module", params=LAB_DISTROS, ids=lab_id)
def lab(request, lab_guest, tmp_path_factory):
    distro = request.param
    run = lab_guest(distro)
    # ~2 min on an idle host; TCG slows down a lot on a loaded one
    res = run(["python3", "tests/lab/probes_job.py"], timeout=1800)
    res.check()
    assert res.returncode == 0, res.output[-3000:]
    line = next(x for x in res.output.splitlines() if x.startswith("PROBES_JOB_JSON "))
    doc = json.loads(line.split(" ", 1)[1])
    doc["distro"] = distro
    doc["version"] = VERSIONS[distro]
    doc["boot_s"] = res.boot_s
    doc["vm_s"] = res.duration_s
    # kept for a look after a failure (the guest's JSON is otherwise only in memory)
    (tmp_path_factory.mktemp(f"probes-{lab_id(distro)}") / "probes.json").write_text(json.dumps(doc))
    return doc


def cycle(doc, label):
    return next(c for c in doc["cycles"] if c["label"] == label)


def metrics(c):
    return {m[0]: m for m in c["data"]["metrics"]}


def not_measured(c):
    return dict(c["data"]["not_measured"])


def kmsg(c, pattern):
    """The groups of the first kernel log line of the cycle matching pattern, else None."""
    for line in c["kmsg"]:
        m = re.search(pattern, line)
        if m:
            return m.groups()
    return None


def events(c, name, kind=None):
    return [e for e in c["data"]["events"] if e[5] == name and (kind is None or e[4] == kind)]


def span_ms(c, name):
    b = events(c, name, "begin")[0]
    e = [x for x in events(c, name, "end") if x[0] >= b[0]][0]
    return (e[0] - b[0]) / 1e6


def test_report_figures(lab):
    """Benchmark-style print of what the lab measured (no assertion on time)."""
    t = lab["timings"]
    print(f"\n{lab['distro']} {lab['release']}: boot {lab['boot_s']:.1f} s, VM {lab['vm_s']:.1f} s, "
          f"compile {t['compile_s']:.1f} s, attach {t['attach_s']:.2f} s ({t['hooks']:.0f} hooks)")
    for c in lab["cycles"]:
        m = {k: v[1] for k, v in metrics(c).items()}
        print(f"  {c['label']}: drops {c['data']['drops']}, events {len(c['data']['events'])}, "
              f"devices {len(c['data']['devices'])}, tasks {len(c['data']['tasks'])}")
        print("    " + ", ".join(f"{k}={v:g}" for k, v in sorted(m.items())))
        for line in c["kmsg"]:
            if re.search(r"Allocated|Need to copy|Image created|completed \(elapsed|Filesystems sync", line):
                print("    kernel: " + line)


def test_everything_attaches(lab):
    status = {s[0]: s for s in lab["status"]}
    missing = {n: s[4] for n, s in status.items() if not s[3]}
    # the light freezer probes (the default) leave the per-thread sweep hooks out, saying so
    assert missing.pop("freezer_sweep").startswith("per-thread sweep hooks off")
    if lab["version"] < (6, 6):
        assert set(missing) == {"zero_pages"}
        assert "only 6.6 and later" in missing["zero_pages"]
    else:
        assert missing == {}
    compressed = status["save_image_compressed"][2]
    assert compressed == ("save_image_lzo" if lab["version"] < (6, 9) else "save_compressed_image")
    assert lab["timings"]["compile_s"] > 0 and lab["timings"]["hooks"] >= 40


def test_task_struct_layout_comes_from_btf_and_is_the_headers(lab):
    # the probes read task_struct at the offsets of the kernel's BTF, and TASK_FROZEN and
    # PF_KTHREAD from its header's text, instead of compiling <linux/sched.h> each start:
    # a compile of that header with bcc agrees on every one (static assertions)
    assert lab["task_layout"].startswith("task_struct from the kernel's BTF"), lab["task_layout"]
    assert lab["task_layout_used"] == lab["task_layout"]  # what the probes were compiled with
    oracle = lab["layout_oracle"]
    assert oracle["ok"], oracle
    assert set(oracle["checked"]) == {"TASK_OFF_pid", "TASK_OFF_tgid", "TASK_OFF_flags",
                                      "TASK_OFF_comm", "TASK_OFF___state", "TASK_FROZEN",
                                      "PF_KTHREAD"}
    print(f"{lab['distro']}: probes compiled in {lab['timings']['compile_s']:.1f} s without "
          f"<linux/sched.h>; that header alone took {oracle['compile_s']:.1f} s")


def test_compiled_in_a_child_that_is_gone_and_closing_detaches(lab):
    # bcc ran in the loader child, which exited; the probes stay attached through the
    # descriptors it handed over, and closing them detaches every kprobe
    assert lab["bcc_imported"] is False
    assert lab["loader_alive"] is False
    assert lab["timings"]["loader_peak_rss_kb"] > 0
    assert lab["kprobes_attached"] >= 30
    assert lab["kprobes_after_close"] == []
    assert set(lab["sizes"]) == {"EVENTS_PAGES", "DEVCALLS_PAGES", "TASKS_MAX", "DEVSTART_MAX",
                                 "DEVNAMES_MAX"}


def test_nothing_dropped_and_state_resets(lab):
    for c in lab["cycles"]:
        assert c["data"]["drops"] == 0, c["label"]
        assert c["data"]["counters"] == {"event_drops": 0, "devcall_drops": 0, "tasks_full": 0,
                                         "dev_unpaired": 0}
        assert c["data"]["started"] and c["data"]["ended"]
    assert lab["second_collect"] == {"events": 0, "tasks": 0, "devices": 0, "metrics": 0,
                                     "started": False}


@pytest.mark.parametrize("label", ["default", "image_size=0"])
def test_image_figures_match_the_kernel_log(lab, label):
    c = cycle(lab, label)
    m = metrics(c)
    allocated = int(kmsg(c, r"Allocated (\d+) pages for snapshot")[0])
    assert m["preallocated_pages"][1] == allocated
    kb, sec, centi = kmsg(c, r"Allocated (\d+) kbytes in (\d+)\.(\d+) seconds")
    assert allocated * 4 == int(kb)
    # the kernel's own ns measure, printed truncated to centiseconds
    speed = [e for e in events(c, "swsusp_show_speed") if e[7].startswith("Allocated ")][0]
    ns = int(speed[7].split("ns=")[1])
    assert ns // 10_000_000 == int(sec) * 100 + int(centi)
    assert m["prealloc_ms"][1] >= ns / 1e6
    third = [e for e in events(c, "count_data_pages", "end") if e[7] == "swsusp_save pages to copy"]
    # the device's own image size: data pages + PFN list pages + the header page
    dev_pages = c["cycle"]["image_bytes"] // 4096
    if lab["version"] >= (6, 19):
        # swsusp_save() logs "Creating image", "Need to copy" and "Image created" with
        # pm_deferred_pr_dbg since 6.19: not under /dev/snapshot. enough_free_mem()'s
        # "Normal pages needed: N + 1024" has the same N (no highmem on x86-64).
        assert kmsg(c, r"Need to copy (\d+) pages") is None and kmsg(c, r"Image created") is None
        need = int(kmsg(c, r"Normal pages needed: (\d+) \+ \d+")[0])
        assert [e[6] for e in third] == [need]
        assert m["copy_pages"][1] == dev_pages - m["meta_pages"][1] - 1
        assert m["copy_pages"][1] + m["zero_pages"][1] == need
    else:
        need = int(kmsg(c, r"Need to copy (\d+) pages")[0])
        assert [e[6] for e in third] == [need]
        copied, zero = kmsg(c, r"Image created \((\d+) pages copied(?:, (\d+) zero pages)?\)")
        assert m["copy_pages"][1] == int(copied)
        if lab["version"] >= (6, 6):
            assert m["zero_pages"][1] == int(zero)
            assert int(copied) + int(zero) == need
        else:
            assert zero is None and "zero_pages" not in m
            assert int(copied) == need
    assert m["image_pages"][1] == m["copy_pages"][1] + m["meta_pages"][1] + 1
    assert m["image_pages"][1] * 4096 == c["cycle"]["image_bytes"] == c["cycle"]["read_bytes"]


def test_fast_and_slow_path(lab):
    fast, slow = cycle(lab, "default"), cycle(lab, "image_size=0")
    nm = not_measured(fast)
    for name in ("shrink_requested_pages", "shrink_reclaimed_pages", "shrink_ms"):
        assert name not in metrics(fast)
        assert nm[name] == "fast path: shrink_all_memory not called"
    m = metrics(slow)
    assert m["shrink_requested_pages"][1] > 0
    assert 0 <= m["shrink_reclaimed_pages"][1]
    assert 0 < m["shrink_ms"][1] < m["prealloc_ms"][1]
    # on the slow path the second count is what is left after preallocation: the kernel's "Allocated"
    assert m["saveable_after_pages"][1] == int(kmsg(slow, r"Allocated (\d+) pages for snapshot")[0])
    assert m["prealloc_got_pages"][1] <= m["prealloc_requested_pages"][1]
    assert m["saveable_pages"][1] >= m["saveable_after_pages"][1]


def test_freezer_matches_the_kernel_log(lab):
    for c in lab["cycles"]:
        m = metrics(c)
        for stage, pattern in (("user", r"Freezing user space processes completed \(elapsed (\d+)\.(\d+)"),
                               ("kernel", r"Freezing remaining freezable tasks completed \(elapsed (\d+)\.(\d+)")):
            s, ms = kmsg(c, pattern)
            kernel_ms = int(s) * 1000 + int(ms)  # truncated to the ms by the kernel
            ends = [e for e in events(c, "try_to_freeze_tasks", "end") if f"stage={stage}" in e[7]]
            begin = [e for e in events(c, "try_to_freeze_tasks", "begin") if e[0] < ends[0][0]][-1]
            probe_ms = (ends[0][0] - begin[0]) / 1e6
            assert kernel_ms <= probe_ms < kernel_ms + 1 + 50, (c["label"], stage)
            # the light freezer probes (the default) have no hook on freeze_task(): the threads
            # swept are not counted, and not shown as 0 (the failure job's sweep hooks count them)
            assert "swept=" not in ends[0][7], ends[0][7]
            assert m[f"freeze_{stage}_passes"][1] >= 1
            assert f"passes={int(m[f'freeze_{stage}_passes'][1])}" in ends[0][7]
            # the headline figure is the kernel's quantity: the freezer's sweeps, within the
            # log's resolution (it prints the elapsed time truncated to 1 ms; the sweeps lie inside it)
            # from the kernel's own two clock reads (the values ktime_get_boottime() returned
            # to try_to_freeze_tasks): its elapsed to the ns, which it prints truncated to 1 ms
            assert m[f"freeze_{stage}_ms"][3] == "probe"
            assert m[f"freeze_{stage}_ms"][4] == KERNEL_READS_SOURCE, m[f"freeze_{stage}_ms"]
            assert kernel_ms <= m[f"freeze_{stage}_ms"][1] < kernel_ms + 1, (c["label"], stage)
            # the whole freeze_processes() / freeze_kernel_threads() call contains the pass
            assert m[f"freeze_{stage}_call_ms"][1] >= probe_ms
        s, ms = kmsg(c, r"Filesystems sync: (\d+)\.(\d+) seconds")
        assert m["sync_ms"][1] >= int(s) * 1000 + int(ms)
        assert m["freeze_failed_tasks"][1] == 0


def test_tasks(lab):
    latencies = []
    for c in lab["cycles"]:
        rows = c["data"]["tasks"]
        kernel = [r for r in rows if r[4] == "kernel"]
        user = [r for r in rows if r[4] == "user"]
        assert kernel and all(r[3] == 1 for r in kernel)
        # user rows may be none: 6.12 and 7.3 froze every user task of the guest in place
        # (no fake signal, no refrigerator), which only the sweep hooks see
        assert all(r[3] == 0 for r in user)
        assert all(r[6] == 1 for r in rows)
        lat = [r[5] for r in rows if r[5] is not None]
        assert all(0 < x < 1_000_000_000 for x in lat)
        latencies += lat
        # the tasks the freezer had to wake are among those recorded (which also hold the
        # tasks that froze by themselves); the tasks frozen in place are not seen, so every
        # count of them is absent, with the reason
        m = metrics(c)
        for stage, recorded in (("kernel", kernel), ("user", user)):
            timed = sum(1 for r in recorded if r[5] is not None)  # a latency needs a request
            assert timed <= m[f"freeze_{stage}_woken"][1] <= len(recorded), (c["label"], stage)
        assert m["freeze_kernel_woken"][1] >= 1  # kswapd0, jbd2: asleep unfreezably, woken
        assert "freeze_kernel_tasks" not in m and "freeze_user_tasks" not in m
        assert "per-thread sweep hooks off" in not_measured(c)["freeze_kernel_tasks"]
    # A task asleep where the freezer can freeze it in place never runs __refrigerator
    # itself, so a single cycle may have no latency at all (seen once on 6.12 under load);
    # over the three cycles some task always had to get there.
    assert latencies


def test_copy_window_by_the_best_clock_this_kernel_has(lab):
    # Up to 6.12 the BPF clock stands still through the copy: the kernel's sleep-time report
    # is the window, when it can measure the pause (under TCG the clocksource stops, and the
    # RTC, whole seconds, shows no pause unless it ticked past the suspend time). From 7.1
    # the BPF clock runs through the copy (and is set back when timekeeping resumes):
    # swsusp_save's entry and return time it, in every run (the 9-kernel trend: stamps equal
    # up to 7.0.13, 538-585 ms apart on 7.1.13).
    for label in ("default", "image_size=0"):
        c = cycle(lab, label)
        m = metrics(c)
        b, e = events(c, "swsusp_save", "begin")[0], events(c, "swsusp_save", "end")[0]
        if lab["version"] >= (7, 1):
            assert e[0] > b[0]
            assert m["copy_window_ms"][3] == "bpf-clock"
            assert m["copy_window_ms"][1] == pytest.approx((e[0] - b[0]) / 1e6)
            # the clock ran forward through swsusp_save: its count before the copy lies between
            count = [x for x in events(c, "count_data_pages", "end") if x[7] == "swsusp_save pages to copy"][0]
            assert b[0] <= count[0] <= e[0]
            assert 0 < m["copy_window_ms"][1] < 30_000
            continue
        assert b[0] == e[0]  # the clocks stood still: no timestamp difference can tell
        if "copy_window_ms" in m:
            assert m["copy_window_ms"][3] == "sleep-time" and m["copy_window_ms"][1] > 0
        else:
            assert "persistent clock (RTC, whole seconds)" in not_measured(c)["copy_window_ms"]


def test_phases_and_devices(lab):
    c = cycle(lab, "default")
    names = [e[5] for e in c["data"]["events"] if e[5].startswith("pm:") and e[4] == "begin"]
    order = ["pm:dpm_prepare", "pm:dpm_suspend", "pm:dpm_suspend_late", "pm:dpm_suspend_noirq",
             "pm:syscore_suspend", "pm:machine_suspend", "pm:syscore_resume",
             "pm:dpm_resume_noirq", "pm:dpm_resume_early", "pm:dpm_resume", "pm:dpm_complete",
             "pm:thaw_processes"]
    assert [n for n in names if n in order] == order
    devs = c["data"]["devices"]
    m = metrics(c)
    assert m["device_callbacks"][1] == len(devs) > 100
    assert m["device_errors"][1] == 0
    stages = {d[4] for d in devs}
    assert {"prepare", "suspend", "resume", "complete"} <= stages
    assert {d[3] for d in devs} == {"freeze", "thaw"}
    assert all(d[6] >= 0 for d in devs)


def test_device_names_agree_with_sysfs(lab):
    # the probes keep each device's names once (a key in the callback records): every
    # callback's device, bound driver and parent must be the ones sysfs shows for it
    sysfs = lab["sysfs_devices"]
    devs = cycle(lab, "default")["data"]["devices"]
    checked_driver = checked_parent = 0
    for device, driver, parent, *_ in devs:
        if device not in sysfs:
            continue
        bound, up = sysfs[device]
        if bound is not None:
            assert driver == bound, device
            checked_driver += 1
        if up is not None:
            assert parent == up, device
            checked_parent += 1
    assert checked_driver > 50 and checked_parent > 50
    # one callback per device and PM verb at most in a cycle
    per = {}
    for d in devs:
        key = (d[0], d[1], d[2], d[3], d[4])
        per[key] = per.get(key, 0) + 1
    assert max(per.values()) == 1


def test_pm_test_freezer_says_what_was_not_reached(lab):
    c = cycle(lab, "pm_test=freezer")
    m, nm = metrics(c), not_measured(c)
    assert c["cycle"]["image_errno"] == 61  # ENODATA: no image
    assert "prealloc_ms" in m and "freeze_kernel_ms" in m
    for name in ("copy_pages", "image_pages", "copy_window_ms"):
        assert name not in m and nm[name].startswith("not reached in this cycle")
    devs = c["data"]["devices"]
    if lab["version"] >= (7, 2):
        # 7.2+ prepares the devices before preallocating (hibernation_snapshot: dpm_prepare
        # first), so even a freezer test prepares them and, on the way back, completes them
        assert m["device_callbacks"][1] == len(devs) > 0
        assert {d[4] for d in devs} == {"prepare", "complete"}
        for name in ("device_suspend_ms", "device_resume_ms"):  # a part, not comparable with a suspend
            assert name not in m and nm[name].startswith("not reached in this cycle")
    else:
        for name in ("device_callbacks", "device_suspend_ms"):
            assert name not in m and nm[name].startswith("not reached in this cycle")
        assert devs == []
