"""The kernel's own log: read /dev/kmsg, parse console lines, pick out hibernation figures.

Standard library only (the recorder runs on the machine being hibernated).

Records are tuples ``(seq, ts_us, level, text)`` throughout: ``seq`` and ``level`` are
None for serial-console / dmesg lines, which carry neither. ``ts_us`` is the printk
timestamp (``local_clock()``, i.e. sched_clock, in microseconds), not CLOCK_BOOTTIME.

The figures and error lines recognised here were read from the format strings of
kernel/power/{hibernate,snapshot,swap,process,main}.c, kernel/time/timekeeping_debug.c and
drivers/base/power/main.c in Linux 6.1.192, 6.12.117 and the 7.x changes (swsusp_save's
messages became debug-only ``pm_deferred_pr_dbg``; "Not enough free memory for image
creation"). A figure is reported only when its line is in the log, with the value the
line states; nothing is derived or guessed except the printk-time copy window, which is
the difference of two logged timestamps (see ``copy_window_from_printk``).
"""

from __future__ import annotations

import errno
import os
import re
from typing import Iterable

from snapprof.errors import SnapprofError

Record = tuple  # (seq | None, ts_us, level | None, text)

# A record is at most PRINTKRB_RECORD_MAX (1 KiB) of text, escaped up to 4x, plus the
# header and the key=value dictionary lines: 16 KiB is ample (a short buffer gives EINVAL).
_READ_SIZE = 16384

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def _unescape(raw: bytes) -> str:
    """Undo /dev/kmsg's C-style \\xNN escaping (non-printable bytes and '\\' itself)."""
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode("utf-8", "replace")


def _parse(raw: bytes) -> tuple[tuple, str] | None:
    """(record, flags) for one /dev/kmsg record, or None if it is not one."""
    head, sep, rest = raw.partition(b";")
    if not sep:
        return None
    fields = head.split(b",")
    if len(fields) < 4:
        return None
    try:
        prio, seq, ts_us = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return None
    if prio < 0 or seq < 0 or ts_us < 0:
        return None
    flags = fields[3].decode("ascii", "replace")
    # The message ends at the first newline; lines after it that start with a space are
    # key=value context (SUBSYSTEM=, DEVICE=), not message text.
    text = rest.split(b"\n", 1)[0]
    return (seq, ts_us, prio & 7, _unescape(text)), flags


def parse_record(raw: bytes) -> Record | None:
    """One /dev/kmsg record ``b"prio,seq,ts_us,flags[,more];text\\n[ KEY=value\\n...]"``.

    Returns ``(seq, ts_us, level, text)`` with level = prio & 7 (the facility is dropped)
    and the text unescaped, or None if raw is not a record.
    """
    parsed = _parse(raw)
    return parsed[0] if parsed else None


_CONSOLE = re.compile(
    r"^(?:<(?P<level>\d+)>)?\[\s*(?P<sec>\d+)\.(?P<frac>\d+)\](?:\[\s*[CT]\d+\])?\s?(?P<text>.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def parse_console_line(line: str) -> Record | None:
    """A serial-console or dmesg line ``"[   12.345678] text"`` → ``(None, ts_us, None, text)``.

    Tolerates a trailing CR/LF, terminal escape sequences, a CONFIG_PRINTK_CALLER
    ``[T123]`` field and a ``<N>`` level prefix (``dmesg -r``), in which case level is N & 7.
    Lines without a printk timestamp (user-space output on the console) give None.
    """
    line = _ANSI.sub("", line).strip("\r\n\x00")
    m = _CONSOLE.match(line.lstrip())
    if not m:
        return None
    frac = m.group("frac")
    us = int((frac + "000000")[:6])  # printk prints 6 digits; scale others to microseconds
    level = m.group("level")
    return (None, int(m.group("sec")) * 1_000_000 + us,
            int(level) & 7 if level is not None else None, m.group("text").rstrip())


class KmsgReader:
    """Reads the kernel log from /dev/kmsg without blocking.

    ``mark()`` skips everything logged so far; ``read_new()`` returns what was logged since
    (or, without a mark, everything still in the buffer). Each ``read()`` of /dev/kmsg
    returns one record; EAGAIN means there is nothing more. EPIPE means records were
    overwritten before we read them: the kernel moves us to the oldest available record,
    and ``overruns`` / ``lost`` count the events and the records missed (from the sequence
    numbers), so a caller can say that its copy of the log is incomplete.
    """

    def __init__(self, path: str = "/dev/kmsg"):
        self.path = path
        self.overruns = 0  # EPIPE seen
        self.lost = 0  # records skipped over (sequence-number gaps)
        self._next_seq: int | None = None
        self._pending: Record | None = None  # an unfinished 'c' fragment
        self._fd = -1
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise SnapprofError(f"cannot read the kernel log {path}: {e.strerror}") from e

    def mark(self) -> None:
        """Skip to the current end of the log."""
        os.lseek(self._fd, 0, os.SEEK_END)
        self._next_seq = None
        self._pending = None

    def read_new(self) -> list[Record]:
        """The records logged since the mark or the last read, oldest first.

        Fragments (flag 'c': a line printed in pieces the kernel could not join) are
        joined with the records that continue them; an unfinished fragment at the end is
        returned as it is.
        """
        out: list[Record] = []
        while True:
            try:
                raw = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            except BrokenPipeError:
                self.overruns += 1
                continue
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            if not raw:
                break
            parsed = _parse(raw)
            if parsed is None:
                continue
            rec, flags = parsed
            if self._next_seq is not None and rec[0] > self._next_seq:
                self.lost += rec[0] - self._next_seq
            self._next_seq = rec[0] + 1
            self._fold(rec, flags, out)
        if self._pending is not None:
            out.append(self._pending)
            self._pending = None
        return out

    def _fold(self, rec: Record, flags: str, out: list[Record]) -> None:
        if self._pending is not None:
            # As the kernel's console does: the record after a fragment continues it.
            seq, ts, level, text = self._pending
            rec = (seq, ts, level, text + rec[3])
            self._pending = None
        if flags.startswith("c"):
            self._pending = rec
        else:
            out.append(rec)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "KmsgReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# The kernel's own figures

_NUM = r"(\d+)"
_SECS = r"(\d+)\.(\d{3})"  # "%d.%03d seconds": integer milliseconds
_CSECS = r"(\d+)\.(\d{2})"  # "%u.%02u seconds": centiseconds


def _ms(sec: str, frac: str) -> float:
    return int(sec) * 1000 + int(frac) * (1000 // 10 ** len(frac))


def _mbps(whole: str, frac: str) -> float:
    return int(whole) + int(frac) / 100


_MS_RES = "1 ms resolution, truncated"
_SPEED_RES = ("10 ms resolution, truncated; the kernel prints 0.01 s for anything under "
              "10 ms; MB/s = 1000 kB/s")

# swsusp_show_speed(): "PM: hibernation: %s %u kbytes in %u.%02u seconds (%u.%02u MB/s)",
# msg = "Allocated" (preallocation), "Wrote" (save_image*), "Read" (load_image*).
_SPEED = re.compile(r"\b(Allocated|Wrote|Read) " + _NUM + r" kbytes in " + _CSECS
                    + r" seconds \((\d+)\.(\d{2}) MB/s\)")
_SPEED_NAMES = {"Allocated": "prealloc", "Wrote": "write", "Read": "read"}
_SPEED_MS = {"Allocated": "prealloc_kernel_ms", "Wrote": "write_ms", "Read": "read_ms"}

# try_to_freeze_tasks(): "Freezing %s completed (elapsed %d.%03d seconds)" (ms, truncated)
_FREEZE_DONE = re.compile(r"Freezing (user space processes|remaining freezable tasks) "
                          r"completed \(elapsed " + _SECS + r" seconds\)")
# 6.1: "Freezing of tasks %s after ..."; 6.12+: "Freezing %s %s after ..." (what, failed|aborted)
_FREEZE_FAIL = re.compile(
    r"Freezing (?:of tasks|(user space processes|remaining freezable tasks)) (failed|aborted) "
    r"after " + _SECS + r" seconds \((\d+) tasks refusing to freeze, wq_busy=(\d+)\)")
_FREEZE_START = re.compile(r"^Freezing (user space processes|remaining freezable tasks)\s*$")
_FREEZE_STAGE = {"user space processes": "user", "remaining freezable tasks": "kernel"}

_SIMPLE: list[tuple[re.Pattern, str, str, str]] = [
    # (pattern with one integer group, metric, unit, precision note)
    (re.compile(r"Allocated " + _NUM + r" pages for snapshot"), "preallocated_pages", "pages", "exact"),
    (re.compile(r"Need to copy " + _NUM + r" pages"), "copy_needed_pages", "pages",
     "exact; includes zero pages on 6.6+"),
    # enough_free_mem() in swsusp_save(): "Normal pages needed: %u + %u, available pages: %u",
    # the first number count_data_pages() plus what highmem cannot hold (0 on 64-bit), the
    # second PAGES_FOR_IO. Logged where "Need to copy" is not (7.x under /dev/snapshot).
    (re.compile(r"Normal pages needed: " + _NUM + r" \+ \d+, available pages"), "copy_needed_pages", "pages",
     "exact on 64-bit (no highmem); includes zero pages"),
    (re.compile(r"(?:Saving image data pages|(?:Compressing and saving|Saving and compressing) image data) \(" + _NUM
                + r" pages\)"), "write_pages", "pages", "exact; image pages minus the header"),
    (re.compile(r"(?:Loading image data pages|Loading and decompressing image data) \(" + _NUM
                + r" pages\)"), "read_pages", "pages", "exact; image pages minus the header"),
    (re.compile(r"Image size after compression: " + _NUM + r" kbytes"), "write_compressed_kbytes",
     "kB", "exact, truncated to kB"),
    (re.compile(r"Using " + _NUM + r" thread\(s\) for (?:\w+ )?compression"), "compress_threads",
     "count", "exact"),
    (re.compile(r"Using " + _NUM + r" thread\(s\) for (?:\w+ )?decompression"),
     "decompress_threads", "count", "exact"),
]
# "Image created (%d pages copied)" (6.1) / "(%d pages copied, %d zero pages)" (6.6+)
_CREATED = re.compile(r"Image created \((\d+) pages copied(?:, (\d+) zero pages)?\)")
# ksys_sync_helper(): "Filesystems sync: %ld.%03ld seconds"
_SYNC = re.compile(r"Filesystems sync: " + _SECS + r" seconds")
# timekeeping_debug.c (debug only): "Timekeeping suspended for %lld.%03lu seconds"
_TK = re.compile(r"Timekeeping suspended for " + _SECS + r" seconds")
# drivers/base/power/main.c dpm_show_time() (pm_debug_messages only):
# "PM: [noirq |early |late |start |end ]<verb> of devices complete after %ld.%03ld msecs"
_DPM = re.compile(r"\b(?:(noirq|early|late|start|end) )?(freeze|thaw|quiesce|restore|recover|"
                  r"hibernate|suspend|resume) of devices complete after (\d+)\.(\d{3}) msecs")


def _text(rec) -> str:
    return rec[3] if isinstance(rec, (tuple, list)) else str(rec)


def kernel_figures(records: Iterable[Record], first_only: bool = True) -> list[tuple]:
    """The figures the kernel logged itself, as ``(name, value, unit, "kernel-log", source)``.

    ``source`` is the log line followed by its resolution in brackets. ``records`` should
    be one kernel's log of one cycle; a figure logged twice (e.g. the boot kernel of a
    resume freezes tasks too) keeps its first occurrence unless ``first_only`` is False.
    Covered: freezer times (1 ms), failed freezes, Filesystems sync (1 ms), preallocation
    pages and "Allocated/Wrote/Read N kbytes in S seconds (R MB/s)" (10 ms), pages to copy,
    pages copied and zero pages, image write/read page counts, size after compression,
    compression threads, and, with pm_debug_messages, device-phase times (1 µs) and the
    timekeeping sleep time (printed in ms; measured by the RTC, 1 s resolution on
    ordinary x86).
    """
    out: list[tuple] = []
    seen: set[str] = set()
    stage: str | None = None

    def add(name: str, value: float, unit: str, line: str, note: str) -> None:
        if first_only and name in seen:
            return
        seen.add(name)
        out.append((name, float(value), unit, "kernel-log", f"{line} [{note}]"))

    for rec in records:
        line = _text(rec).strip()
        if not line:
            continue
        m = _FREEZE_START.search(line.removeprefix("PM: ").strip())
        if m:
            stage = _FREEZE_STAGE[m.group(1)]
            continue
        m = _FREEZE_DONE.search(line)
        if m:
            st = _FREEZE_STAGE[m.group(1)]
            add(f"freeze_{st}_ms", _ms(m.group(2), m.group(3)), "ms", line, _MS_RES)
            continue
        m = _FREEZE_FAIL.search(line)
        if m:
            st = _FREEZE_STAGE.get(m.group(1) or "", stage)
            add("freeze_failed_tasks", int(m.group(5)), "count", line, "exact")
            if st:
                add(f"freeze_{st}_ms", _ms(m.group(3), m.group(4)), "ms", line,
                    _MS_RES + f"; freezing {m.group(2)}")
            continue
        m = _SPEED.search(line)
        if m:
            what = m.group(1)
            base = _SPEED_NAMES[what]
            add(_SPEED_MS[what], _ms(m.group(3), m.group(4)), "ms", line, _SPEED_RES)
            add(f"{base}_kbytes", int(m.group(2)), "kB", line, "exact: pages x 4")
            add(f"{base}_mbps", _mbps(m.group(5), m.group(6)), "MB/s", line, _SPEED_RES)
            continue
        m = _CREATED.search(line)
        if m:
            add("copy_pages", int(m.group(1)), "pages", line, "exact")
            if m.group(2) is not None:
                add("zero_pages", int(m.group(2)), "pages", line, "exact")
            continue
        m = _SYNC.search(line)
        if m:
            add("sync_ms", _ms(m.group(1), m.group(2)), "ms", line, _MS_RES)
            continue
        m = _TK.search(line)
        if m:
            add("timekeeping_suspended_ms", _ms(m.group(1), m.group(2)), "ms", line,
                "printed in ms; measured by the RTC: 1 s resolution on x86 without nonstop TSC")
            continue
        m = _DPM.search(line)
        if m:
            prefix, verb = m.group(1), m.group(2)
            name = f"dpm_{prefix}_{verb}_ms" if prefix else f"dpm_{verb}_ms"
            add(name, int(m.group(3)) + int(m.group(4)) / 1000, "ms", line,
                "1 us resolution; the kernel prints 0.001 for anything under 1 us")
            continue
        for pat, name, unit, note in _SIMPLE:
            m = pat.search(line)
            if m:
                add(name, int(m.group(1)), unit, line, note)
                break
    return out


# ---------------------------------------------------------------------------------------
# Errors

_ERRORS = [re.compile(p) for p in (
    r"Cannot find swap device",
    r"Cannot get swap writer",
    r"Not enough free swap",
    r"Image allocation is \d+ pages short",
    r"Cannot allocate (?:original|copy|zero) bitmap",
    r"Not enough free memory",  # 7.x: "... for image creation"
    r"Memory allocation failed",
    r"Error -?\d+ creating image",
    r"Some (?:system )?devices failed to power down",
    r"Freezing (?:of tasks|user space processes|remaining freezable tasks) (?:failed|aborted) after",
    r"Failed to load image, recovering",
    r"resume failed \(-?\d+\)",
    r"Image mismatch: ",
    r"Invalid image CRC32",
    r"Image saving failed",
    r"Swap header not found",
    r"Cannot find swsusp signature",
    r"hardware signature mismatch",
    r"Wakeup event detected during hibernation",
    r"Power down manually",
    r"compression is not available",
    r"(?:de)?compression failed",
    r"Invalid \w+ (?:un)?compressed length",
    r"Cannot start (?:de)?compression threads",
    r"Cannot start CRC32 thread",
    r"Adding page to bio failed",
    r"Device \S+ failed to \w+.*: error -?\d+",  # drivers/base/power: a callback failed
)]


def kernel_errors(records: Iterable[Record]) -> list[str]:
    """The hibernation error lines in the log, in order (text only, one per line).

    A caller marks the run failed with the first one as the reason. Only lines from the
    hibernation code's own error paths are matched, not every KERN_ERR line.
    """
    out = []
    for rec in records:
        line = _text(rec).strip()
        if any(p.search(line) for p in _ERRORS):
            out.append(line)
    return out


# ---------------------------------------------------------------------------------------
# The atomic-copy window from printk timestamps

_CREATING = re.compile(r"Creating image:")
_NEED = re.compile(r"Need to copy \d+ pages")
# Logged at boot (or later) when sched_clock stops being trusted.
_UNSTABLE = re.compile(r"Marking TSC unstable|sched_clock: Marking unstable|"
                       r"TSC found unstable after boot")


def copy_window_from_printk(records: Iterable[Record],
                            clock_stable: bool | None = None) -> tuple | None:
    """The time swsusp_save() took, from the printk timestamps of its own messages.

    Timekeeping is suspended during the atomic copy, but printk timestamps come from
    sched_clock, which with a stable TSC keeps running with interrupts off; it is rewound
    only by restore_processor_state(), after swsusp_save() returns (hibernation-map §7.1).
    An *unstable* sched_clock is filtered through the suspended timekeeping clock and
    stands still: in the 6.1 TCG lab guest ("tsc: Marking TSC unstable") "Creating image:",
    "Need to copy" and "Image created" all carry the same timestamp.

    So the difference between "Creating image:" (or, if missing, "Need to copy N pages")
    and the next "Image created" is returned only when
      * ``clock_stable`` (``sysinfo.sched_clock_stable()``) is not False and the records
        do not say the clock was marked unstable,
      * both lines are present (7.x logs them only with pm_debug_messages=1; a restored
        system never has "Image created": its log is the one from before the copy),
      * no boot lies between them (a timestamp going backwards means a new kernel),
      * the difference is positive, and "Image created" is not stamped with the very
        time of "Need to copy N pages" (copying N pages takes more than 0 us: a clock
        that advanced a little and then stood still, as seen on 6.1 under TCG, gives
        such a pair and a meaningless difference).
    With ``clock_stable`` None (unknown) the source says so. The window measured is
    swsusp_save() only: a lower bound of the syscore_suspend..syscore_resume window that
    the sleep-time method measures. Resolution 1 us.
    """
    if clock_stable is False:
        return None
    start = None
    start_line = ""
    last_ts = None
    need_ts = None
    for rec in records:
        ts, line = rec[1], _text(rec).strip()
        if _UNSTABLE.search(line):
            return None
        if ts is None:
            continue
        if last_ts is not None and ts < last_ts:
            start = need_ts = None  # the clock went back: a new boot (or a rewound clock)
        last_ts = ts
        if _CREATING.search(line):
            start, start_line, need_ts = ts, line, None
        elif _NEED.search(line):
            need_ts = ts
            if start is None:
                start, start_line = ts, line
        elif start is not None and _CREATED.search(line):
            delta_us = ts - start
            if delta_us <= 0 or ts == need_ts:
                return None
            note = "sched_clock stable" if clock_stable else "sched_clock stability unknown"
            return ("copy_window_ms", delta_us / 1000, "ms", "printk-time",
                    f"[{start / 1e6:.6f}] {start_line} -> [{ts / 1e6:.6f}] {line} "
                    f"[swsusp_save only; 1 us resolution; {note}]")
    return None
