"""Facts about the machine being recorded, and whether it can hibernate at all.

Standard library only. Every function takes ``root`` (default "/"), the directory the
/proc, /sys, /dev and /etc paths are read under, so tests can point it at a fake tree.
A file that is missing or unreadable gives no value: the key is left out, never guessed.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import platform
import re

from snapprof import __version__
from snapprof.errors import SnapprofError

MEMINFO = "/proc/meminfo"
SWAPS = "/proc/swaps"
CMDLINE = "/proc/cmdline"
OS_RELEASE = "/etc/os-release"
SNAPSHOT_DEV = "/dev/snapshot"
LOCKDOWN = "/sys/kernel/security/lockdown"
POWER = "/sys/power"

# /sys/power files and /sys/module parameters reported by power_settings()
_POWER_FILES = ("state", "disk", "pm_test", "image_size", "reserved_size", "resume",
                "resume_offset", "pm_debug_messages", "pm_print_times", "pm_freeze_timeout",
                "pm_async", "freeze_filesystems", "hibernate_compression_threads")
_MODULE_PARAMS = {
    "compressor": "/sys/module/hibernate/parameters/compressor",  # 6.9+
    "pm_test_delay": "/sys/module/hibernate/parameters/pm_test_delay",  # 7.x
}


def _path(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _read(root: str, path: str) -> str | None:
    """The stripped text of a file, or None if it cannot be read."""
    try:
        with open(_path(root, path), encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _meminfo(root: str) -> dict[str, int]:
    text = _read(root, MEMINFO) or ""
    out = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def _os_release(root: str) -> dict[str, str]:
    out = {}
    for line in (_read(root, OS_RELEASE) or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip().strip("\"'")
    return out


def selected(value: str | None) -> str | None:
    """The bracketed choice of a sysfs list such as "[none] core freezer" → "none"."""
    if not value:
        return None
    m = re.search(r"\[([^\]]+)\]", value)
    return m.group(1) if m else None


def _libc_version() -> str | None:
    """"glibc 2.41" from confstr (the C library this Python runs on), else platform's guess."""
    try:
        v = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        v = None
    if v:
        return v
    lib, ver = platform.libc_ver()
    return f"{lib} {ver}" if lib and ver else None


def _bcc_version() -> str | None:
    """bcc's version, read from its version.py without importing bcc (which loads libbcc)."""
    try:
        spec = importlib.util.find_spec("bcc")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        try:
            with open(os.path.join(loc, "version.py"), encoding="utf-8") as f:
                m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read())
        except OSError:
            continue
        if m:
            return m.group(1)
    return None


def power_settings(root: str = "/") -> dict[str, str]:
    """The hibernation-related settings as the kernel shows them (raw strings).

    Keys are the /sys/power file names that exist ("state", "disk", "pm_test",
    "image_size", "reserved_size", "resume", ...), plus "compressor" and "pm_test_delay"
    (hibernate module parameters) and "lockdown" (/sys/kernel/security/lockdown).
    """
    out: dict[str, str] = {}
    for name in _POWER_FILES:
        value = _read(root, f"{POWER}/{name}")
        if value is not None:
            out[name] = value
    for name, path in _MODULE_PARAMS.items():
        value = _read(root, path)
        if value is not None:
            out[name] = value
    lockdown = _read(root, LOCKDOWN)
    if lockdown is not None:
        out["lockdown"] = lockdown
    return out


def collect_meta(root: str = "/") -> dict[str, str]:
    """Capture-wide facts (the capture's ``meta`` table). Unreadable facts are left out."""
    meta: dict[str, str] = {}

    def put(key: str, value) -> None:
        if value is not None and value != "":
            meta[key] = str(value)

    put("kernel_release", _read(root, "/proc/sys/kernel/osrelease"))
    put("kernel_version", _read(root, "/proc/sys/kernel/version"))
    osr = _os_release(root)
    put("distro", osr.get("PRETTY_NAME"))
    # The userspace, apart from the kernel: which suite, and the libc, Python and bcc the
    # recorder ran on (compare says when two captures differ here as well as in the kernel).
    put("os_id", osr.get("ID"))
    put("os_version_id", osr.get("VERSION_ID"))
    put("os_codename", osr.get("VERSION_CODENAME"))
    put("libc_version", _libc_version() if os.path.abspath(root) == "/" else None)
    put("cmdline", _read(root, CMDLINE))
    put("machine", _read(root, "/proc/sys/kernel/arch") or
        (platform.machine() if os.path.abspath(root) == "/" else None))
    put("hostname", _read(root, "/proc/sys/kernel/hostname"))
    if os.path.abspath(root) == "/":
        put("page_size", str(os.sysconf("SC_PAGE_SIZE")))  # bytes: kB figures to pages
    mem = _meminfo(root)
    put("mem_total_kb", mem.get("MemTotal"))
    put("swap_total_kb", mem.get("SwapTotal"))
    power = power_settings(root)
    for key, name in (("power_state", "state"), ("power_disk", "disk"), ("pm_test", "pm_test"),
                      ("image_size", "image_size"), ("reserved_size", "reserved_size"),
                      ("pm_freeze_timeout", "pm_freeze_timeout"),  # ms the freezer tries
                      ("hibernate_compressor", "compressor"),  # compressor: 6.9 and later
                      # settings of newer kernels' hibernation path (absent before them)
                      ("freeze_filesystems", "freeze_filesystems"),
                      ("hibernate_compression_threads", "hibernate_compression_threads")):
        put(key, power.get(name))
    put("snapprof_version", __version__)
    put("bcc_version", _bcc_version())
    put("clocksource", _read(root, CLOCKSOURCE))
    put("python_version", platform.python_version())
    put("recorded_at", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return meta


def mem_total_bytes(root: str = "/") -> int:
    """MemTotal in bytes (SnapprofError if /proc/meminfo has none)."""
    kb = _meminfo(root).get("MemTotal")
    if not kb:
        from snapprof.errors import SnapprofError  # noqa: PLC0415
        raise SnapprofError(f"cannot read MemTotal from {MEMINFO}")
    return int(kb) * 1024


def memory_metrics(root: str = "/") -> list[tuple]:
    """Memory facts before a cycle as metric rows ``(name, value, unit, "sysfs", source)``."""
    out = []
    mem = _meminfo(root)
    for name, key in (("mem_total_kb", "MemTotal"), ("mem_free_kb", "MemFree"),
                      ("mem_available_kb", "MemAvailable"), ("swap_free_kb", "SwapFree")):
        if key in mem:
            out.append((name, float(mem[key]), "kB", "sysfs", f"{MEMINFO} {key}"))
    for name, file, unit in (("image_size_setting_bytes", "image_size", "bytes"),
                             ("reserved_size_setting_bytes", "reserved_size", "bytes"),
                             ("freeze_timeout_setting_ms", "pm_freeze_timeout", "ms")):
        value = _read(root, f"{POWER}/{file}")
        if value is not None and value.isdigit():
            out.append((name, float(int(value)), unit, "sysfs", f"{POWER}/{file}"))
    return out


SCHED_DEBUG = "/sys/kernel/debug/sched/debug"
CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"


def sched_clock_stable(root: str = "/") -> bool | None:
    """Whether sched_clock (the printk clock) is stable, from debugfs; None if unknown.

    An unstable sched_clock (e.g. "tsc: Marking TSC unstable" in QEMU TCG guests) is
    filtered through the timekeeping clock, so it stands still while timekeeping is
    suspended: printk timestamps inside the atomic copy are then meaningless.
    """
    m = re.search(r"sched_clock_stable\(\)\s*:\s*(\d+)", _read(root, SCHED_DEBUG) or "")
    return None if m is None else m.group(1) != "0"


def _swaps(root: str) -> list[str] | None:
    text = _read(root, SWAPS)
    if text is None:
        return None
    return [line.split()[0] for line in text.splitlines()[1:] if line.strip()]


def _cmdline_blocks_hibernation(cmdline: str) -> str | None:
    for word in cmdline.split():
        if word == "nohibernate" or word in ("hibernate=no", "hibernate=off"):
            return word
    return None


def _euid(euid: int | None) -> int:
    return os.geteuid() if euid is None else euid


def hibernation_support(root: str = "/", euid: int | None = None) -> list[tuple]:
    """What this machine allows, as ``(check, ok, detail)`` rows for ``snapprof probes``."""
    rows: list[tuple] = []
    uid = _euid(euid)
    rows.append(("root", uid == 0, "running as root" if uid == 0 else
                 f"effective uid {uid}: BPF probes and hibernation need root"))

    state = _read(root, f"{POWER}/state")
    if state is None:
        rows.append(("hibernation", False, f"no {POWER}/state: kernel without power management"))
    else:
        ok = "disk" in state.split()
        detail = f"{POWER}/state: {state or '(empty)'}"
        if not ok:
            detail += " ('disk' missing: " + _why_no_disk(root) + ")"
        rows.append(("hibernation", ok, detail))

    lockdown = _read(root, LOCKDOWN)
    if lockdown is not None:
        level = selected(lockdown) or lockdown
        rows.append(("lockdown", level == "none",
                     f"kernel lockdown: {level}" + ("" if level == "none" else
                                                    " (blocks hibernation)")))

    snap = os.path.exists(_path(root, SNAPSHOT_DEV))
    rows.append(("snapshot_device", snap, f"{SNAPSHOT_DEV} present" if snap else
                 f"no {SNAPSHOT_DEV} (CONFIG_HIBERNATION_SNAPSHOT_DEV off): no 'snapshot' trigger"))

    pm_test = _read(root, f"{POWER}/pm_test")
    rows.append(("pm_test", pm_test is not None,
                 f"{POWER}/pm_test: {pm_test}" if pm_test is not None else
                 f"no {POWER}/pm_test (CONFIG_PM_DEBUG off): no pm-test triggers"))

    disk = _read(root, f"{POWER}/disk")
    if disk is not None:
        rows.append(("power_disk", selected(disk) is not None, f"{POWER}/disk: {disk}"))

    resume = _read(root, f"{POWER}/resume")
    rows.append(("resume_device", resume not in (None, "0:0"),
                 f"{POWER}/resume: {resume}" if resume not in (None, "0:0") else
                 "no resume device configured (resume= on the kernel command line)"))

    swaps = _swaps(root)
    rows.append(("swap", bool(swaps), "active swap: " + ", ".join(swaps) if swaps else
                 f"no active swap in {SWAPS}: a real hibernation cannot write its image"))
    return rows


def _why_no_disk(root: str) -> str:
    lockdown = selected(_read(root, LOCKDOWN))
    if lockdown and lockdown != "none":
        return f"kernel lockdown '{lockdown}' forbids hibernation (Secure Boot?)"
    word = _cmdline_blocks_hibernation(_read(root, CMDLINE) or "")
    if word:
        return f"'{word}' on the kernel command line"
    return ("hibernation unavailable: nohibernate, kernel lockdown, secretmem in use or "
            "CONFIG_HIBERNATION off")


def check_can_record(trigger: str, root: str = "/", euid: int | None = None) -> None:
    """Raise SnapprofError (one line) if ``trigger`` cannot run on this machine.

    Triggers: "snapshot" (/dev/snapshot snapshot-and-continue), "pm-test[:LEVEL]" (sysfs
    with /sys/power/pm_test), "hibernate" (a real hibernation: needs a resume device and
    active swap); any other trigger (e.g. waiting for an external cycle) gets the common
    checks (root, hibernation available).
    """
    uid = _euid(euid)
    if uid != 0:
        raise SnapprofError(f"snapprof record needs root (effective uid {uid})")
    state = _read(root, f"{POWER}/state")
    if state is None:
        raise SnapprofError(f"no {POWER}/state: this kernel has no system sleep support")
    if "disk" not in state.split():
        raise SnapprofError(f"hibernation is not available ({POWER}/state: '{state}'): "
                            + _why_no_disk(root))
    kind, _, level = trigger.replace("=", ":").partition(":")
    if kind == "snapshot" and not os.path.exists(_path(root, SNAPSHOT_DEV)):
        raise SnapprofError(f"no {SNAPSHOT_DEV}: the kernel was built without "
                            "CONFIG_HIBERNATION_SNAPSHOT_DEV")
    if kind in ("pm-test", "pm_test"):
        pm_test = _read(root, f"{POWER}/pm_test")
        if pm_test is None:
            raise SnapprofError(f"no {POWER}/pm_test: the kernel was built without CONFIG_PM_DEBUG")
        levels = pm_test.replace("[", " ").replace("]", " ").split()
        if level and level not in levels:
            raise SnapprofError(f"pm_test level '{level}' not offered by {POWER}/pm_test "
                                f"({pm_test})")
    if kind == "hibernate":
        resume = _read(root, f"{POWER}/resume")
        if resume in (None, "0:0"):
            raise SnapprofError("no resume device configured (/sys/power/resume is 0:0): "
                                "boot with resume=<swap device>")
        if not _swaps(root):
            raise SnapprofError(f"no active swap in {SWAPS}: the image has nowhere to go "
                                "(swapon first)")
