"""Split the serial-console log of a real hibernation and resume into its kernels.

A real hibernation leaves one log with two boots (whether QEMU ran once or twice and the
two logs were concatenated):

* **writer**: boot 1, the kernel that froze, copied, wrote the image ("Wrote N kbytes in
  S seconds") and powered off ("reboot: Power down");
* **boot**: boot 2, the fresh kernel that found the image, loaded it ("Loading and
  decompressing image data (N pages)", "Read N kbytes ...") and jumped into it;
* **restored**: the image kernel again, after that jump. Its memory, printk buffer and
  printk clock are the writer's from the moment of the copy, so its timestamps continue
  the writer's, not the boot kernel's (a stable sched_clock is set back to the value
  saved just before "Creating image:": the lab's 6.12 writer shows the same step back
  right after "Image created"). It may print again writer lines that were still waiting
  for the console at the copy.

What happens after the copy (the write, the power-off, the boot kernel's read) is in no
capture made inside the guest: the restored system's memory is the image. This console
log is the only record of it. Timestamps are per kernel: never subtract across parts.

The console shows only lines above the console loglevel: boot without ``quiet`` (or with
``ignore_loglevel``) and with ``no_console_suspend`` to see the hibernation lines.
Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from snapprof.record.kmsg import Record, parse_console_line

_BANNER = re.compile(r"^Linux version \S+")
_TS_ANYWHERE = re.compile(r"(?:<\d+>)?\[\s*\d+\.\d+\]")
# writer-side markers (hibernate(), swsusp_save(), swsusp_write())
_WRITER = re.compile(r"PM: hibernation: hibernation entry|Creating image:|Need to copy \d+ pages|"
                     r"Image created \(|\bWrote \d+ kbytes|Image saving done|"
                     r"(?:Compressing and saving|Saving and compressing|Saving image data pages)")
# boot-kernel markers (software_resume(), load_image*())
_RESUME = re.compile(r"PM: hibernation: resume from hibernation|"
                     r"(?:Loading and decompressing image data|Loading image data pages) \(|"
                     r"\bRead \d+ kbytes in|Image loading done|Image signature found, resuming")
_LOADED = re.compile(r"\bRead \d+ kbytes in|Image loading done")
_RECOVER = re.compile(r"Failed to load image, recovering|resume failed \(")
CREATING = re.compile(r"Creating image:|Need to copy \d+ pages|Normal pages needed: \d+")
# 7.x prints swsusp_save()'s lines with pm_deferred_pr_dbg (pm_debug_messages only, and not
# in every path): then the copy is known to follow the non-boot CPUs going offline.
_CPUS_OFF = re.compile(r"Disabling non-boot CPUs")
_FROZEN = re.compile(r"Freezing remaining freezable tasks")


def copy_start(writer: list[Record]) -> int | None:
    """Index of the writer's first line of the atomic copy: "Creating image:" (or the pages
    to copy), else the first "Disabling non-boot CPUs" after the kernel threads froze (the
    CPUs go offline right before the copy), else None."""
    i = next((i for i, r in enumerate(writer) if CREATING.search(r[3])), None)
    if i is not None:
        return i
    frozen = next((i for i, r in enumerate(writer) if _FROZEN.search(r[3])), None)
    if frozen is None:
        return None
    return next((i for i in range(frozen, len(writer)) if _CPUS_OFF.search(writer[i][3])), None)

# After the image is loaded the boot kernel prints for milliseconds before the jump; a
# step of more than this in its timestamps, or any step back, is the restored kernel.
JUMP_US = 1_000_000


@dataclass
class ConsoleSplit:
    """The three kernels' lines of one hibernate+resume console log (see module doc)."""

    writer: list[Record] = field(default_factory=list)
    boot: list[Record] = field(default_factory=list)
    restored: list[Record] = field(default_factory=list)
    boots: int = 0  # kernel boots seen in the log ("Linux version" banners)
    notes: list[str] = field(default_factory=list)  # what could not be found, and why


def console_records(lines: Iterable[str] | str) -> list[Record]:
    """Parse a console log into records; lines without a printk timestamp are dropped.

    A kernel line printed after user-space output on the same console line
    ("Begin: Running ... [    3.141592] virtio_blk ...") is recovered from its timestamp.
    """
    if isinstance(lines, str):
        lines = lines.splitlines()
    out = []
    for line in lines:
        rec = parse_console_line(line)
        if rec is None:
            m = _TS_ANYWHERE.search(line)
            if m and m.start() > 0:
                rec = parse_console_line(line[m.start():])
        if rec is not None:
            out.append(rec)
    return out


def _boots(records: list[Record]) -> list[list[Record]]:
    boots: list[list[Record]] = [[]]
    for rec in records:
        if _BANNER.match(rec[3]) and boots[-1]:
            boots.append([])
        boots[-1].append(rec)
    return boots if boots[0] else []


def _has(records: list[Record], pattern: re.Pattern) -> bool:
    return any(pattern.search(r[3]) for r in records)


def _save_ts(writer: list[Record]) -> int | None:
    """The writer's clock just before the copy: the line before its start (copy_start)."""
    i = copy_start(writer)
    if i is None:
        return None
    return writer[i - 1][1] if i > 0 else writer[i][1]


def _jump(boot: list[Record], save_ts: int | None) -> int | None:
    """Index of the first restored-kernel line in the resuming boot, or None."""
    start = next((i for i, r in enumerate(boot) if _LOADED.search(r[3])), None)
    if start is None:
        return None
    prev = boot[start][1]
    for i in range(start + 1, len(boot)):
        ts, text = boot[i][1], boot[i][3]
        if _RECOVER.search(text):
            return None  # the boot kernel carries on: no restore happened
        if ts < prev or ts - prev > JUMP_US or (save_ts is not None and prev < save_ts <= ts):
            return i
        prev = ts
    return None


def split_console(log: Iterable[str] | str) -> ConsoleSplit:
    """Split a hibernate+resume serial-console log into writer / boot / restored records.

    The writer is the last boot before the resuming one that logged image creation or
    writing; the boot kernel is the first boot that logged a resume ("resume from
    hibernation", image loading). The restored part starts at the first line after the
    image was loaded whose timestamp steps back, jumps by more than JUMP_US, or crosses the
    writer's copy time (the restored kernel's clock continues from there).
    """
    out = ConsoleSplit()
    boots = _boots(console_records(log))
    out.boots = len(boots)
    if not boots:
        out.notes.append("no kernel lines with printk timestamps in the log")
        return out
    resume_i = next((i for i, b in enumerate(boots) if _has(b, _RESUME)), None)
    last_writer = len(boots) if resume_i is None else resume_i
    writer_i = next((i for i in range(last_writer - 1, -1, -1) if _has(boots[i], _WRITER)), None)
    if writer_i is not None:
        out.writer = boots[writer_i]
        if not _has(out.writer, re.compile(r"\bWrote \d+ kbytes")):
            out.notes.append("the writing kernel logged no 'Wrote N kbytes' line: image not written")
    else:
        out.notes.append("no boot logged creating or writing an image")
    if resume_i is None:
        out.notes.append("no boot logged a resume from the image")
        return out
    boot = boots[resume_i]
    cut = _jump(boot, _save_ts(out.writer) if out.writer else None)
    if cut is None:
        out.boot = boot
        if _has(boot, _RECOVER):
            out.notes.append("the boot kernel failed to load the image and recovered")
        else:
            out.notes.append("no jump into the restored image found after the image was loaded")
    else:
        out.boot, out.restored = boot[:cut], boot[cut:]
    return out
