"""sysinfo on fake /proc, /sys, /etc and /dev trees (contents copied from Debian guests)."""

import re

import pytest

from snapprof import __version__
from snapprof.errors import SnapprofError
from snapprof.record import sysinfo

MEMINFO = """MemTotal:        2014520 kB
MemFree:         1711364 kB
MemAvailable:    1786032 kB
SwapTotal:        524284 kB
SwapFree:         524284 kB
HugePages_Total:       0
"""
SWAPS_ON = """Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/vdb                                partition\t524284\t\t0\t\t-2
"""
SWAPS_OFF = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"


def tree(tmp_path, files):
    for path, text in files.items():
        p = tmp_path / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)


def guest(tmp_path, **over):
    """A bookworm guest that can do everything; override or drop (None) single files."""
    files = {
        "/proc/sys/kernel/osrelease": "6.1.0-50-amd64\n",
        "/proc/sys/kernel/version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-01)\n",
        "/proc/sys/kernel/hostname": "lab\n",
        "/proc/sys/kernel/arch": "x86_64\n",
        "/proc/cmdline": "root=/dev/vda rw console=ttyS0 resume=/dev/vdb no_console_suspend\n",
        "/proc/meminfo": MEMINFO,
        "/proc/swaps": SWAPS_ON,
        "/etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                           'VERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n',
        "/sys/power/state": "freeze mem disk\n",
        "/sys/power/disk": "[shutdown] reboot suspend test_resume\n",
        "/sys/power/pm_test": "[none] core processors platform devices freezer\n",
        "/sys/power/image_size": "824778752\n",
        "/sys/power/reserved_size": "1048576\n",
        "/sys/power/resume": "254:16\n",
        "/sys/kernel/security/lockdown": "[none] integrity confidentiality\n",
        "/dev/snapshot": "",
    }
    files.update(over)
    return tree(tmp_path, {k: v for k, v in files.items() if v is not None})


def test_collect_meta(tmp_path):
    meta = sysinfo.collect_meta(guest(tmp_path))
    assert meta["kernel_release"] == "6.1.0-50-amd64"
    assert meta["kernel_version"].startswith("#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2")
    assert meta["distro"] == "Debian GNU/Linux 12 (bookworm)"
    assert (meta["os_id"], meta["os_version_id"], meta["os_codename"]) == ("debian", "12", "bookworm")
    assert "libc_version" not in meta  # only the running system's own C library is known
    assert meta["cmdline"].endswith("no_console_suspend")
    assert meta["machine"] == "x86_64" and meta["hostname"] == "lab"
    assert meta["mem_total_kb"] == "2014520" and meta["swap_total_kb"] == "524284"
    assert meta["power_state"] == "freeze mem disk"
    assert meta["power_disk"] == "[shutdown] reboot suspend test_resume"
    assert meta["pm_test"].startswith("[none]")
    assert meta["image_size"] == "824778752" and meta["reserved_size"] == "1048576"
    assert meta["snapprof_version"] == __version__
    assert re.fullmatch(r"3\.\d+\.\d+.*", meta["python_version"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", meta["recorded_at"])
    assert all(isinstance(v, str) for v in meta.values())


def test_collect_meta_missing_files_are_omitted(tmp_path):
    root = tree(tmp_path, {"/proc/sys/kernel/osrelease": "6.12.117+deb13-amd64\n"})
    meta = sysinfo.collect_meta(root)
    assert meta["kernel_release"] == "6.12.117+deb13-amd64"
    for key in ("distro", "cmdline", "mem_total_kb", "swap_total_kb", "power_state",
                "power_disk", "pm_test", "image_size", "reserved_size", "hostname", "machine",
                "hibernate_compressor"):  # before 6.9 the kernel has no compressor parameter
        assert key not in meta, key


def test_collect_meta_keeps_the_hibernate_compressor(tmp_path):
    root = tree(tmp_path, {"/sys/module/hibernate/parameters/compressor": "lz4\n"})
    assert sysinfo.collect_meta(root)["hibernate_compressor"] == "lz4"


def test_collect_meta_keeps_newer_kernels_hibernation_settings(tmp_path):
    root = tree(tmp_path, {"/sys/power/freeze_filesystems": "1\n",
                           "/sys/power/hibernate_compression_threads": "3\n"})
    meta = sysinfo.collect_meta(root)
    assert meta["freeze_filesystems"] == "1" and meta["hibernate_compression_threads"] == "3"
    assert "freeze_filesystems" not in sysinfo.collect_meta(guest(tmp_path / "old"))  # 6.12: no such file


def test_bcc_version_read_without_import(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "bcc"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "version.py").write_text("__version__ = '0.26.0'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert sysinfo.collect_meta(guest(tmp_path / "root"))["bcc_version"] == "0.26.0"


def test_memory_metrics(tmp_path):
    rows = sysinfo.memory_metrics(guest(tmp_path))
    assert rows == [
        ("mem_total_kb", 2014520.0, "kB", "sysfs", "/proc/meminfo MemTotal"),
        ("mem_free_kb", 1711364.0, "kB", "sysfs", "/proc/meminfo MemFree"),
        ("mem_available_kb", 1786032.0, "kB", "sysfs", "/proc/meminfo MemAvailable"),
        ("swap_free_kb", 524284.0, "kB", "sysfs", "/proc/meminfo SwapFree"),
        ("image_size_setting_bytes", 824778752.0, "bytes", "sysfs", "/sys/power/image_size"),
        ("reserved_size_setting_bytes", 1048576.0, "bytes", "sysfs", "/sys/power/reserved_size"),
    ]
    assert sysinfo.memory_metrics(str(tmp_path / "nothing")) == []


def test_power_settings(tmp_path):
    root = guest(tmp_path, **{"/sys/module/hibernate/parameters/compressor": "lzo\n"})
    got = sysinfo.power_settings(root)
    assert got["state"] == "freeze mem disk" and got["resume"] == "254:16"
    assert got["compressor"] == "lzo" and got["lockdown"].startswith("[none]")
    assert "pm_test_delay" not in got
    assert sysinfo.selected(got["disk"]) == "shutdown"
    assert sysinfo.selected(got["pm_test"]) == "none"


def test_check_can_record_ok(tmp_path):
    root = guest(tmp_path)
    for trigger in ("snapshot", "pm-test", "pm-test:core", "hibernate", "wait"):
        sysinfo.check_can_record(trigger, root=root, euid=0)


@pytest.mark.parametrize("trigger,over,euid,expect", [
    ("snapshot", {}, 1000, "needs root"),
    ("snapshot", {"/dev/snapshot": None}, 0, "CONFIG_HIBERNATION_SNAPSHOT_DEV"),
    ("snapshot", {"/sys/power/state": "freeze mem\n",
                  "/sys/kernel/security/lockdown": "none [integrity] confidentiality\n"},
     0, "lockdown 'integrity'"),
    ("pm-test", {"/sys/power/state": "freeze mem\n",
                 "/proc/cmdline": "root=/dev/vda nohibernate\n"}, 0, "'nohibernate'"),
    ("snapshot", {"/sys/power/state": "freeze mem\n"}, 0, "hibernation is not available"),
    ("pm-test:core", {"/sys/power/pm_test": None}, 0, "CONFIG_PM_DEBUG"),
    ("pm-test:bogus", {}, 0, "pm_test level 'bogus'"),
    ("hibernate", {"/sys/power/resume": "0:0\n"}, 0, "no resume device"),
    ("hibernate", {"/proc/swaps": SWAPS_OFF}, 0, "no active swap"),
])
def test_check_can_record_refuses(tmp_path, trigger, over, euid, expect):
    root = guest(tmp_path, **over)
    with pytest.raises(SnapprofError) as e:
        sysinfo.check_can_record(trigger, root=root, euid=euid)
    assert expect in str(e.value)
    assert "\n" not in str(e.value)


def test_snapshot_trigger_needs_no_swap(tmp_path):
    root = guest(tmp_path, **{"/proc/swaps": SWAPS_OFF, "/sys/power/resume": "0:0\n",
                              "/sys/power/pm_test": None})
    sysinfo.check_can_record("snapshot", root=root, euid=0)


def test_hibernation_support(tmp_path):
    rows = sysinfo.hibernation_support(guest(tmp_path), euid=0)
    assert all(ok for _, ok, _ in rows), rows
    checks = [c for c, _, _ in rows]
    assert checks == ["root", "hibernation", "lockdown", "snapshot_device", "pm_test",
                      "power_disk", "resume_device", "swap"]
    rows = dict((c, (ok, d)) for c, ok, d in sysinfo.hibernation_support(
        guest(tmp_path / "b", **{"/proc/swaps": SWAPS_OFF, "/dev/snapshot": None,
                                 "/sys/power/state": "freeze mem\n",
                                 "/sys/kernel/security/lockdown": "none [integrity] x\n"}),
        euid=1000))
    assert rows["root"][0] is False and rows["swap"][0] is False
    assert rows["snapshot_device"][0] is False and rows["lockdown"][0] is False
    assert rows["hibernation"][0] is False and "lockdown 'integrity'" in rows["hibernation"][1]


def test_sched_clock_stable(tmp_path):
    header = ("Sched Debug Version: v0.11, 6.12.117+deb13-amd64 #1\n"
              "ktime                                   : 22613.123456\n"
              "  .%-30s: %d\n")
    for value, expect in (("1", True), ("0", False)):
        root = tree(tmp_path / value, {
            "/sys/kernel/debug/sched/debug": header % ("sched_clock_stable()", int(value)),
            "/sys/devices/system/clocksource/clocksource0/current_clocksource": "tsc\n"})
        assert sysinfo.sched_clock_stable(root) is expect
        assert sysinfo.collect_meta(root)["clocksource"] == "tsc"
    assert sysinfo.sched_clock_stable(str(tmp_path / "none")) is None
    assert "clocksource" not in sysinfo.collect_meta(str(tmp_path / "none"))
