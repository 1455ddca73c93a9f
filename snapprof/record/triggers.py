"""What starts a hibernation cycle for `snapprof record`, and how the system is kept safe.

Standard library only. Triggers (``--trigger``):

``snapshot``
    /dev/snapshot snapshot-and-continue (hibernation-map.md §2.4): open O_RDONLY, FREEZE,
    CREATE_IMAGE, GET_IMAGE_SIZE, read the image to its end, FREE, UNFREEZE, close. The
    system keeps running; nothing is written to disk.
``pm-test:LEVEL``
    ``LEVEL`` (freezer, devices, platform, processors, core) is written to
    /sys/power/pm_test, then ``disk`` to /sys/power/state; pm_test is restored afterwards.
    The kernel stops at LEVEL, waits 5 s and thaws: no atomic copy at any level.
``hibernate``
    A real hibernation through /sys/power/state (image written to swap, power-off, resume).
``none``
    Nothing is started: the recorder waits for cycles that someone else starts.

Safety. Between FREEZE and UNFREEZE every user task except the thread issuing the ioctls
is frozen, the recorder's other threads included, so no user-space watchdog thread can
act then. The deadline is therefore the kernel's: an ITIMER_REAL armed before FREEZE with
SIGALRM at its default (fatal) disposition. If a cycle overruns it, the kernel kills the
recorder as soon as the step in progress returns, and closing /dev/snapshot on exit thaws
everything (snapshot_release: swsusp_free, thaw_processes). The same holds for any other
death of the recorder (SIGKILL included). Ctrl-C during a cycle only sets a flag: the
cycle stops reading the image, FREEs, UNFREEZEs and closes, and the run is marked
incomplete. Every /sys/power file the recorder changes is written with os.open/os.write
(errors are reported at the write, not at a late close) and restored afterwards.
"""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import gc
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field

from snapprof.errors import SnapprofError
from snapprof.record import journal

# include/uapi/linux/suspend_ioctls.h, magic '3'
SNAPSHOT_FREEZE = 0x3301
SNAPSHOT_UNFREEZE = 0x3302
SNAPSHOT_FREE = 0x3305
SNAPSHOT_GET_IMAGE_SIZE = 2 << 30 | 8 << 16 | 0x330E
SNAPSHOT_CREATE_IMAGE = 1 << 30 | 4 << 16 | 0x3311

SNAPSHOT_DEV = "/dev/snapshot"
POWER = "/sys/power"
PM_TEST_LEVELS = ("freezer", "devices", "platform", "processors", "core")
TRIGGERS = ("snapshot", "hibernate", "none") + tuple(f"pm-test:{lv}" for lv in PM_TEST_LEVELS)

PAGE = os.sysconf("SC_PAGE_SIZE")
READ_PAGES = 64  # pages per readv(): snapshot_read() returns at most one page per iovec


def self_memory_kb() -> dict[str, int]:
    """The recorder's own memory (kB): VmRSS, RssAnon (its private memory: the rest is file
    pages and the probes' ring buffers mapped in) and VmHWM from /proc/self/status, and
    Locked (resident pages that are locked) from /proc/self/smaps_rollup."""
    out = {}
    for path, keys in (("/proc/self/status", ("VmRSS", "RssAnon", "VmHWM")),
                       ("/proc/self/smaps_rollup", ("Locked",))):
        try:
            with open(path, encoding="ascii") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in keys:
                        out[key] = int(rest.split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def now_ns() -> int:
    """CLOCK_BOOTTIME ns: the clock of the BPF events; it includes the copy window, which
    the kernel injects as sleep time after the atomic copy."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def parse_trigger(text: str) -> tuple[str, str | None]:
    """"snapshot" -> ("snapshot", None); "pm-test:core" -> ("pm-test", "core")."""
    kind, _, level = text.strip().replace("=", ":").partition(":")
    kind = kind.replace("_", "-")
    if kind == "pm-test":
        if level not in PM_TEST_LEVELS:
            raise SnapprofError(f"--trigger pm-test needs a level: pm-test:{{{','.join(PM_TEST_LEVELS)}}}")
        return kind, level
    if kind in ("snapshot", "hibernate", "none") and not level:
        return kind, None
    raise SnapprofError(f"unknown trigger '{text}' (choose from {', '.join(TRIGGERS)})")


# -- /sys/power ---------------------------------------------------------------------------

def read_power(name: str, root: str = "/") -> str | None:
    try:
        with open(os.path.join(root, POWER.lstrip("/"), name), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def write_power(name: str, value: str, root: str = "/") -> None:
    """Write one /sys/power file; OSError at the write itself (never a late close error)."""
    fd = os.open(os.path.join(root, POWER.lstrip("/"), name), os.O_WRONLY | os.O_TRUNC)
    try:
        n = os.write(fd, value.encode())
        if n != len(value.encode()):
            raise OSError(errno.EIO, f"short write to {POWER}/{name}")
    finally:
        os.close(fd)


def selected(value: str | None) -> str | None:
    m = re.search(r"\[([^\]]+)\]", value or "")
    return m.group(1) if m else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PowerSettings:
    """Sets /sys/power files and puts the previous values back (restore(); also on error).

        with PowerSettings() as ps:
            ps.set("image_size", "0")
            ...

    The values to put back are also kept in a journal, /run/snapprof/power-<pid>.json, so
    that a recorder killed outright (SIGKILL, the cycle deadline) does not leave them
    changed: the next `snapprof record` puts them back (recover()).
    """

    JOURNAL_DIR = "/run/snapprof"

    def __init__(self, root: str = "/"):
        self.root = root
        self._saved: list[tuple[str, str]] = []
        self.journal = os.path.join(root, self.JOURNAL_DIR.lstrip("/"), f"power-{os.getpid()}.json")

    def set(self, name: str, value: str) -> None:
        old = read_power(name, self.root)
        if old is None:
            raise SnapprofError(f"cannot read {POWER}/{name}")
        if name == "pm_test":
            old = selected(old) or old
        if name not in {n for n, _ in self._saved}:  # the journal keeps the first, original value
            self._write_journal(self._saved + [(name, old)])
        try:
            write_power(name, value, self.root)
        except OSError as exc:
            raise SnapprofError(f"cannot write '{value}' to {POWER}/{name}: "
                                f"{exc.strerror or exc}") from None
        self._saved.append((name, old))

    def _write_journal(self, saved) -> None:
        try:
            os.makedirs(os.path.dirname(self.journal), mode=0o700, exist_ok=True)
            tmp = self.journal + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"pid": os.getpid(), "saved": saved}, f)
            os.replace(tmp, self.journal)
        except OSError:
            pass  # best effort: the in-process restore still runs

    def restore(self) -> list[str]:
        """Put back every value, newest first; returns the problems (never raises)."""
        problems = []
        while self._saved:
            name, old = self._saved.pop()
            try:
                write_power(name, old, self.root)
            except OSError as exc:
                problems.append(f"could not restore {POWER}/{name} to '{old}': {exc.strerror or exc}")
        if not problems:
            try:
                os.unlink(self.journal)
            except OSError:
                pass
        return problems

    @classmethod
    def recover(cls, root: str = "/") -> list[str]:
        """Put back what recorders that died without restoring left changed; one line each."""
        folder = os.path.join(root, cls.JOURNAL_DIR.lstrip("/"))
        try:
            names = sorted(n for n in os.listdir(folder) if n.startswith("power-") and n.endswith(".json"))
        except OSError:
            return []
        out = []
        for n in names:
            path = os.path.join(folder, n)
            try:
                with open(path, encoding="utf-8") as f:
                    doc = json.load(f)
                pid, saved = int(doc["pid"]), [tuple(x) for x in doc["saved"]]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if pid != os.getpid() and _alive(pid):
                continue  # another recorder is running
            for name, old in reversed(saved):
                try:
                    write_power(name, old, root)
                    out.append(f"put back {POWER}/{name} = '{old}', left changed by a recorder "
                               f"that died (pid {pid})")
                except OSError as exc:
                    out.append(f"could not put back {POWER}/{name} = '{old}' (recorder pid {pid} "
                               f"died): {exc.strerror or exc}")
            try:
                os.unlink(path)
            except OSError:
                pass
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()


# -- safety -------------------------------------------------------------------------------

# Mappings the cycle never runs: bcc's compiler. Locking their resident pages would make
# them unreclaimable and raise the minimum image size the kernel can shrink to.
_COMPILER_LIBS = re.compile(r"/lib(?:LLVM|clang|bcc)[-.\w]*\.so")
MLOCK_ONFAULT = 1


def lock_memory() -> str | None:
    """Keep the pages the cycle needs resident, so nothing is paged in while frozen
    (userland-swsusp.rst asks for mlockall).

    Every mapping is locked with MLOCK_ONFAULT: the pages resident now and any faulted in
    later stay, nothing is faulted in just to be locked (locked pages count against the
    minimum image size: the very shrinking being measured). bcc's compiler libraries are
    skipped should they be loaded — the recorder itself no longer loads them: the probes
    are compiled in a child process (snapprof/record/loader.py). Freed heap is handed back
    first (malloc_trim). Returns None, or a note on what went wrong.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    gc.collect()
    try:
        libc.malloc_trim(0)
    except AttributeError:
        pass
    try:
        mlock2 = libc.mlock2
    except AttributeError:
        return "mlock2 unavailable (glibc < 2.27): memory not locked"
    mlock2.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    failed = 0
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
        maps = f.read().splitlines()
    for line in maps:
        parts = line.split(None, 5)
        path = parts[5] if len(parts) > 5 else ""
        if _COMPILER_LIBS.search(path) or path in ("[vvar]", "[vsyscall]", "[vdso]", "[vvar_vclock]"):
            continue
        if parts[1].startswith("---"):
            continue  # guard pages
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if mlock2(lo, hi - lo, MLOCK_ONFAULT) != 0:
            failed += 1
    if failed:
        return f"mlock2 failed for {failed} of {len(maps)} mappings"
    return None


class Deadline:
    """A kernel-armed deadline for one cycle: ITIMER_REAL with SIGALRM at its default,
    fatal, disposition. While the cycle runs, user space (this process's other threads
    included) is frozen, so only the kernel can enforce a deadline; when it fires the
    process dies and closing /dev/snapshot thaws the system."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self._old = None

    def __enter__(self):
        if self.seconds:
            self._old = signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old if self._old is not None else signal.SIG_DFL)


class Interrupts:
    """During a cycle, SIGINT/SIGTERM only set a flag (checked between steps), so cleanup
    (FREE, UNFREEZE, close, restoring /sys/power) can never be cut short by an exception."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def _handler(self, signum, frame):
        self.received = signum

    def __enter__(self):
        for s in self.SIGNALS:
            self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    @property
    def name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name


# -- what one cycle returns -----------------------------------------------------------------

@dataclass
class CycleOutcome:
    """What the trigger itself saw of one cycle (the recorder adds probes and kernel log)."""

    status: str = "incomplete"  # complete / failed / incomplete
    error: str | None = None
    started_ns: int | None = None  # CLOCK_BOOTTIME
    ended_ns: int | None = None
    metrics: list[tuple] = field(default_factory=list)  # (name, value, unit, method, source)
    notes: list[str] = field(default_factory=list)
    image: bytearray | None = None  # --save-image: the image bytes, written after thaw
    interrupted: str | None = None  # signal name
    pm_test: str | None = None  # the pm_test level the cycle ran under (None: none)
    records: list[tuple] | None = None  # the cycle's kernel log, when the trigger read it
    slice: object | None = None  # snapprof.record.slicewatch.Seen: systemd's cgroup freeze (none)
    not_measured: dict[str, str] = field(default_factory=dict)  # name -> why (the journal's)
    wall_minus_boot_ns: int | None = None  # CLOCK_REALTIME - CLOCK_BOOTTIME before the cycle (none)

    def metric(self, name, value, unit, method, source):
        if value is not None:
            self.metrics.append((name, float(value), unit, method, source))


def _err(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else "?"
    return f"{exc.strerror or exc} ({name})"


def _mem_free_kb(fd: int) -> int | None:
    try:
        text = os.pread(fd, 4096, 0).decode()
    except OSError:
        return None
    m = re.search(r"^MemFree:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


class SnapshotTrigger:
    """/dev/snapshot snapshot-and-continue; see the module docstring."""

    name = "snapshot"
    SAVE_MARGIN_KB = 65536  # keep this much free memory when buffering an image (--save-image)

    def __init__(self, deadline_s: float | None = 600.0, save_image: bool = False,
                 device: str = SNAPSHOT_DEV):
        self.deadline_s = deadline_s
        self.save_image = save_image
        self.device = device
        self._buf = bytearray(PAGE * READ_PAGES)
        self._views = [memoryview(self._buf)[i * PAGE:(i + 1) * PAGE] for i in range(READ_PAGES)]
        self._meminfo = os.open("/proc/meminfo", os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._meminfo >= 0:
            os.close(self._meminfo)
            self._meminfo = -1

    def run(self, intr: Interrupts) -> CycleOutcome:
        out = CycleOutcome(pm_test=_current_pm_test())
        try:
            fd = os.open(self.device, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            out.status, out.error = "failed", f"cannot open {self.device}: {_err(exc)}"
            return out
        frozen = False
        step = "FREEZE"
        try:
            with Deadline(self.deadline_s):
                out.started_ns = now_ns()
                fcntl.ioctl(fd, SNAPSHOT_FREEZE)
                frozen = True
                t_frozen = now_ns()
                out.metric("freeze_ioctl_ms", (t_frozen - out.started_ns) / 1e6, "ms", "recorder",
                           "SNAPSHOT_FREEZE ioctl (sync + freeze user space), CLOCK_BOOTTIME")
                if intr.received:
                    raise _Stop
                step = "CREATE_IMAGE"
                flag = array.array("i", [-1])
                fcntl.ioctl(fd, SNAPSHOT_CREATE_IMAGE, flag, True)
                t_created = now_ns()
                out.metric("create_image_ms", (t_created - t_frozen) / 1e6, "ms", "recorder",
                           "SNAPSHOT_CREATE_IMAGE ioctl (hibernation_snapshot), CLOCK_BOOTTIME")
                if flag[0] != 1:
                    out.notes.append(f"CREATE_IMAGE reported in_suspend={flag[0]}")
                step = "GET_IMAGE_SIZE"
                size = array.array("q", [0])
                try:
                    fcntl.ioctl(fd, SNAPSHOT_GET_IMAGE_SIZE, size, True)
                except OSError as exc:
                    if exc.errno == errno.ENODATA and out.pm_test not in (None, "none"):
                        out.notes.append(f"no image: pm_test={out.pm_test}")
                        size = None
                    else:
                        raise
                if size is not None:
                    step = "read"
                    self._read_image(fd, size[0], out, intr)
                step = "FREE"
                fcntl.ioctl(fd, SNAPSHOT_FREE)
                step = "UNFREEZE"
                fcntl.ioctl(fd, SNAPSHOT_UNFREEZE)
                frozen = False
                out.ended_ns = now_ns()
            if intr.received:
                out.interrupted = intr.name
                out.status, out.error = "incomplete", f"interrupted ({intr.name}) during the cycle"
            elif out.status == "incomplete":
                out.status = "complete"
        except _Stop:
            out.interrupted = intr.name
            out.status, out.error = "incomplete", f"interrupted ({intr.name}) after {step}"
        except OSError as exc:
            out.status, out.error = "failed", f"SNAPSHOT_{step} failed: {_err(exc)}" \
                if step not in ("read",) else f"reading the image failed: {_err(exc)}"
        finally:
            if frozen:
                for cmd in (SNAPSHOT_FREE, SNAPSHOT_UNFREEZE):
                    try:
                        fcntl.ioctl(fd, cmd)
                    except OSError:
                        pass  # close() below thaws in any case
            os.close(fd)  # snapshot_release: frees the image, thaws if still frozen
            if out.ended_ns is None:
                out.ended_ns = now_ns()
        if out.started_ns is not None:
            out.metric("cycle_ms", (out.ended_ns - out.started_ns) / 1e6, "ms", "recorder",
                       "open..close of /dev/snapshot around FREEZE..UNFREEZE, CLOCK_BOOTTIME "
                       "(the copy window comes in as sleep time)")
        return out

    def _read_image(self, fd: int, size: int, out: CycleOutcome, intr: Interrupts) -> None:
        out.metric("image_bytes", size, "bytes", "device", "SNAPSHOT_GET_IMAGE_SIZE")
        out.metric("image_pages", size // PAGE, "pages", "device", "SNAPSHOT_GET_IMAGE_SIZE / page size")
        image = None
        if self.save_image:
            free_kb = _mem_free_kb(self._meminfo)
            if free_kb is not None and free_kb - size // 1024 > self.SAVE_MARGIN_KB:
                image = out.image = bytearray(size)
            else:
                out.notes.append(f"image not saved: {free_kb} kB free while frozen, "
                                 f"image {size // 1024} kB")
        views = self._views
        if image is not None:
            mv = memoryview(image)
        total = 0
        while True:
            if intr.received:
                raise _Stop
            if image is not None:
                end = min(size, total + PAGE * READ_PAGES)
                iov = [mv[o:o + PAGE] for o in range(total, end, PAGE)] or [self._views[0]]
                n = os.readv(fd, iov)
            else:
                n = os.readv(fd, views)
            if n == 0:
                break
            total += n
            if image is not None and total > size:
                raise OSError(errno.EFBIG, "image longer than GET_IMAGE_SIZE said")
        out.metric("image_read_bytes", total, "bytes", "device", "read() of /dev/snapshot to its end")
        if total != size:
            out.notes.append(f"read {total} bytes, GET_IMAGE_SIZE said {size}")


class _Stop(Exception):
    """Ctrl-C/SIGTERM seen between two steps of a cycle."""


def _current_pm_test(root: str = "/") -> str | None:
    """The selected /sys/power/pm_test level; None without CONFIG_PM_DEBUG."""
    return selected(read_power("pm_test", root))


class SysfsTrigger:
    """`disk` to /sys/power/state, under a pm_test level (pm-test:LEVEL) or for real (hibernate)."""

    def __init__(self, level: str | None, root: str = "/"):
        self.level = level  # None: real hibernation
        self.root = root
        self.name = f"pm-test:{level}" if level else "hibernate"

    def close(self) -> None:
        pass

    def run(self, intr: Interrupts) -> CycleOutcome:
        out = CycleOutcome(pm_test=self.level)
        settings = PowerSettings(self.root)
        try:
            current = _current_pm_test(self.root)
            if self.level or current not in (None, "none"):  # no pm_test file: nothing to set
                settings.set("pm_test", self.level or "none")
        except SnapprofError as exc:
            out.status, out.error = "failed", str(exc)
            return out
        try:
            out.started_ns = now_ns()
            try:
                write_power("state", "disk", self.root)
            except OSError as exc:
                out.status, out.error = "failed", f"writing 'disk' to {POWER}/state: {_err(exc)}"
            else:
                out.status = "complete"
            out.ended_ns = now_ns()
        finally:
            problems = settings.restore()
        if problems:
            out.notes.extend(problems)
        out.metric("cycle_ms", (out.ended_ns - out.started_ns) / 1e6, "ms", "recorder",
                   f"write('disk') to {POWER}/state, CLOCK_BOOTTIME"
                   + (" (includes the 5 s pm_test delay)" if self.level else ""))
        if intr.received:
            out.interrupted = intr.name
            if out.status == "complete":
                out.notes.append(f"{intr.name} received during the cycle")
        return out


# Lines that open and close a cycle in the kernel log (6.1 .. 7.x wording).
CYCLE_START = re.compile(r"PM: hibernation: hibernation entry|Filesystems sync:|Syncing filesystems|"
                         r"^(?:PM: )?Freezing user space processes")
# The thaw's line, "done" or not: another CPU's message can split "Restarting tasks ... " from
# its "done." into two records (seen in the lab, 6.12 resuming: an ata2 line between them),
# and a task reading it was thawed anyway. "hibernation exit" comes after the thaw too.
CYCLE_THAW = re.compile(r"Restarting tasks(?: \.\.\.|:)")
CYCLE_EXIT = re.compile(r"PM: hibernation: hibernation exit")


def _freeze_timeout(root: str = "/") -> int | None:
    value = read_power("pm_freeze_timeout", root)
    return int(value) if value and value.isdigit() else None


class WaitTrigger:
    """--trigger none: start nothing; return when a cycle someone else started has ended.

    The recorder is frozen during that cycle like every other task, so it notices the cycle
    after the thaw, from the kernel log: a start line (hibernation entry, filesystem sync,
    freezing user space), then the thaw ("Restarting tasks ... done."), then up to
    ``settle_s`` more for the rest of the cycle's lines ("hibernation exit").
    """

    name = "none"

    def __init__(self, reader, poll_s: float = 0.25, settle_s: float = 1.0, watch=None):
        self.reader = reader
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.watch = watch  # snapprof.record.slicewatch.SliceWatch, polled until a cycle begins

    def close(self) -> None:
        pass

    def run(self, intr: Interrupts) -> CycleOutcome | None:
        """The outcome of the next cycle, with ``records`` (its kernel log); None if
        interrupted while no cycle was under way."""
        records: list[tuple] = []
        in_cycle = thawed = False
        thaw_seen_at = 0.0
        out = CycleOutcome(pm_test=_current_pm_test())
        timeout = None  # pm_freeze_timeout as last read before the cycle (it can change while we wait)
        while True:
            if not in_cycle:
                if self.watch is not None:
                    self.watch.poll()  # systemd's freeze of user.slice comes before the kernel's part
                timeout = _freeze_timeout() or timeout
                out.wall_minus_boot_ns = journal.wall_minus_boot_ns()
            for rec in self.reader.read_new():
                text = rec[3]
                if not in_cycle and CYCLE_START.search(text):
                    in_cycle, records = True, []
                    out.pm_test = _current_pm_test()
                if in_cycle or CYCLE_THAW.search(text):
                    records.append(rec)
                if (CYCLE_THAW.search(text) or (in_cycle and CYCLE_EXIT.search(text))) and not thawed:
                    thawed, thaw_seen_at = True, time.monotonic()
                    if not in_cycle:
                        out.error = "the cycle began before the recorder was watching"
                        in_cycle = True
                if thawed and CYCLE_EXIT.search(text):
                    thaw_seen_at = 0.0  # nothing more to wait for
            if thawed and time.monotonic() - thaw_seen_at >= self.settle_s:
                out.records = records
                if self.watch is not None:
                    out.slice = self.watch.take()
                out.metric("freeze_timeout_setting_ms", timeout, "ms", "sysfs",
                           "/sys/power/pm_freeze_timeout, last read before the cycle began "
                           "(the recorder was waiting for it)")
                out.status = "incomplete" if out.error else "complete"
                return out
            if intr.received:
                if not in_cycle:
                    return None
                out.records, out.interrupted = records, intr.name
                out.status, out.error = "incomplete", f"interrupted ({intr.name}) during the cycle"
                return out
            time.sleep(self.poll_s)
