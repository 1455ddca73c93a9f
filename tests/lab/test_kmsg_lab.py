"""The kernel-log parser and sysinfo on real kernels: one /dev/snapshot cycle per guest.

One boot per distro (module-scoped) runs tests/lab/kmsg_cycle.py; the tests assert on its
JSON and on the boot's serial console log.
"""

import json
import math

import pytest

from conftest import KERNEL_VERSIONS, LAB_DISTROS, lab_id
from snapprof.record.console import console_records

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module", params=LAB_DISTROS, ids=lab_id)
def cycle(request, lab_guest, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"kmsg-{request.param}")
    run = lab_guest(request.param)
    res = run(["sh", "-c", "mount -t securityfs securityfs /sys/kernel/security 2>/dev/null; "
               "exec python3 tests/lab/kmsg_cycle.py"], out, timeout=600)
    res.check()
    assert res.returncode == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("KMSG_CYCLE_JSON "))
    data = json.loads(line.split(" ", 1)[1])
    data["distro_name"] = request.param
    data["version"] = KERNEL_VERSIONS[request.param]
    data["kernel_release_host_view"] = res.kernel_release
    data["console"] = res.console_log.read_text(errors="replace")
    return data


def figs(data):
    return {row[0]: row[1] for row in data["figures"]}


def test_meta_and_support(cycle):
    meta = cycle["meta"]
    assert meta["kernel_release"] == cycle["kernel_release_host_view"]
    assert ("12 (bookworm)" if cycle["distro_name"].startswith("bookworm") else "13 (trixie)") in meta["distro"]
    assert meta["bcc_version"].count(".") == 2  # read from bcc/version.py, no import
    assert "disk" in meta["power_state"].split()
    ok = {check: flag for check, flag, _ in cycle["support"]}
    assert ok["root"] and ok["hibernation"] and ok["snapshot_device"] and ok["pm_test"]
    assert ok["lockdown"] and not ok["swap"] and not ok["resume_device"]
    assert cycle["checks"]["snapshot"] is None and cycle["checks"]["pm-test:core"] is None
    assert "no resume device" in cycle["checks"]["hibernate"]
    mem = {row[0]: row[1] for row in cycle["memory"]}
    assert mem["mem_total_kb"] == int(meta["mem_total_kb"]) and 0 < mem["mem_free_kb"] < mem["mem_total_kb"]


def test_kernel_figures_agree_with_the_device(cycle):
    f = figs(cycle)
    need = {"sync_ms", "freeze_user_ms", "freeze_kernel_ms", "preallocated_pages",
            "prealloc_kernel_ms", "prealloc_kbytes", "prealloc_mbps", "copy_needed_pages"}
    # from 6.19 swsusp_save() logs "Image created" with pm_deferred_pr_dbg: not here
    late = cycle["version"] >= (6, 19)
    assert need | (set() if late else {"copy_pages"}) <= set(f), sorted(f)
    assert cycle["errors"] == [] and cycle["overruns"] == 0 and cycle["lost"] == 0
    assert cycle["cycle"]["in_suspend"] == 1
    assert f["prealloc_kbytes"] == 4 * f["preallocated_pages"]
    # The image the device reports = data pages + PFN list + header (hibernation-map §2.3)
    meta_pages = math.ceil(f["copy_needed_pages"] * 8 / 4096)
    if late:  # pages to copy from "Normal pages needed"; the copied ones only from the device
        assert "copy_pages" not in f and "zero_pages" not in f
        copied = cycle["cycle"]["image_bytes"] // 4096 - 1
        assert 0 < copied <= f["copy_needed_pages"] + meta_pages
    elif cycle["distro_name"] == "bookworm":  # 6.1 stores zero pages
        assert cycle["cycle"]["image_bytes"] == (f["copy_pages"] + meta_pages + 1) * 4096
        assert "zero_pages" not in f and f["copy_pages"] == f["copy_needed_pages"]
    else:  # 6.6+ skips them
        assert cycle["cycle"]["image_bytes"] == (f["copy_pages"] + meta_pages + 1) * 4096
        assert f["copy_pages"] + f["zero_pages"] == f["copy_needed_pages"]
    # the kernel's preallocation time lies inside the CREATE_IMAGE ioctl
    assert 0 < f["prealloc_kernel_ms"] <= cycle["cycle"]["create_image_ioctl_s"] * 1000


def test_printk_copy_window(cycle):
    window = cycle["copy_window"]
    if cycle["sched_clock_stable"] is False:
        assert window is None  # 6.1 under TCG: the printk clock stands still in the copy
    elif cycle["version"] >= (6, 19):
        assert window is None  # no "Creating image" / "Image created" lines to time
    else:
        assert window is not None and window[3] == "printk-time"
        assert 0 < window[1] < cycle["cycle"]["create_image_ioctl_s"] * 1000


def test_console_log_has_the_same_lines(cycle):
    # every record the console printed (level < 7 with the default console loglevel) is
    # parsed from the serial log with the same timestamp and text, but for trailing blanks:
    # the console parser drops them, and a record cut short keeps them on /dev/kmsg only
    # (CI, 6.1: "Restarting tasks ... " whose pr_cont("done.") came after another
    # context's "ata2: found unknown device" line, so "done." was a record of its own).
    console = {(r[1], r[3]) for r in console_records(cycle["console"])}
    printed = [(r[1], r[3].rstrip()) for r in cycle["records"] if r[2] < 7]
    assert printed and all(p in console for p in printed), [p for p in printed if p not in console]
