"""`snapprof lab record --trigger hibernate`: real hibernations in a lab guest, each joined
with the serial console of both boots into one capture run.

One cycle, in a fresh guest (new root overlay, new swap disk, new result disk):

* boot 1, kernel command line ``resume=/dev/vdb no_console_suspend`` (plus
  ``hibernate.compressor=X`` when asked): mkswap + swapon /dev/vdb, then
  ``snapprof record --trigger hibernate --yes`` writes its capture to the guest's root disk.
  The kernel freezes, copies, writes the image to /dev/vdb and powers off: QEMU exits.
* boot 2, the same overlay, disks and command line: the boot kernel finds the image, reads
  it and jumps into it. The restored recorder carries on from its write to /sys/power/state,
  stores its run, and the job copies the capture to the result disk /dev/vdc as a tar
  stream (the 9p shares do not survive a resume: see snapprof.lab.qemu). If instead the
  boot kernel finds no image or fails to load it, the fresh system runs boot 2's own
  command, which copies the capture (without a run) and exits with NOT_RESUMED.
* on the host: console.split_console() splits the two boots' console logs into the
  writing kernel and the boot kernel; the writing kernel's figures after the copy (image
  created, pages written, write time and rate, compression) and the boot kernel's (pages
  loaded, read time and rate) are added to the cycle's run with method "kernel-log" and a
  source naming the kernel, and those console lines are stored in the run's kmsg. What the
  restored system knows (events and kernel log before the copy) is kept as it recorded it.

The output is one capture, DIR/<distro>.snap, one run per cycle, each committed when its
cycle ends; DIR/<distro>-cycleN/ keeps each boot's console log and the guest's capture.
Standard library only (the lab's host side).
"""

from __future__ import annotations

import re
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from snapprof.capture import COLUMNS, STOPPED_IN_CYCLE, CaptureReader, CaptureWriter, Run
from snapprof.errors import SnapprofError
from snapprof.record import console, kmsg
from snapprof.record.recorder import AFTER_COPY

GUEST_CAPTURE = "/root/snapprof-hibernate.snap"
COMPRESSORS = ("lzo", "lz4")
NOT_RESUMED = 97  # boot 2's own command: it runs only when no image was restored
NO_COMPRESSOR = 98  # boot 1: the kernel has no hibernate.compressor parameter
MARK = "snapprof-lab-hibernate:"
PAGE = 4096  # x86-64 guest page size (swap header layout)

# The writing kernel's figures of interest (everything after the atomic copy, and the copy
# counts the restored system's log has lost: it is rolled back to before "Image created").
WRITER_FIGURES = ("copy_pages", "zero_pages", "copy_needed_pages", "write_pages", "write_ms",
                  "write_kbytes", "write_mbps", "write_compressed_kbytes", "compress_threads")
BOOT_FIGURES = ("read_pages", "read_ms", "read_kbytes", "read_mbps", "decompress_threads")
WRITER_SOURCE = "serial console, writing kernel (boot 1)"
BOOT_SOURCE = "serial console, boot kernel (boot 2)"
OFFLINE_SOURCE = ("host monotonic clock, QEMU exit of boot 1 -> QEMU start of boot 2 (10 ms); "
                  "includes host overhead (disk checks, setting up the boot); not kernel time")
_RESUME_START = re.compile(r"PM: hibernation: resume from hibernation|Image signature found|"
                           r"PM: (?:hibernation: )?(?:Looking for|Checking) hibernation image|"
                           r"(?:Loading and decompressing image data|Loading image data pages) \(")
_SIZE = re.compile(r"(\d+)([MG])")
_SAVED = re.compile(r"Image saving done")
_LOADED = re.compile(r"Image loading done")


@dataclass
class Cycle:
    """What one lab cycle gave: its run in the output capture and how it ended."""

    number: int
    run_id: int | None = None
    status: str = "failed"
    error: str | None = None
    figures: dict[str, float] = field(default_factory=dict)
    boot1_s: float | None = None
    boot2_s: float | None = None
    offline_ms: float | None = None
    folder: Path | None = None


# Probe areas recorded by default: all of them (None). The recorder itself leaves out what
# needs a return probe on swsusp_save() in a real hibernation (it crashes the restored
# kernel; snapprof.record.recorder), with the reason. SAFE_AREAS, the set the lab recorded
# before that was done per measurement, is kept for callers that want it.
from snapprof.record.recorder import SAFE_AREAS  # noqa: E402,F401
DEFAULT_AREAS: tuple[str, ...] | None = None


def guest_script(compressor: str | None, areas: tuple[str, ...] | None = DEFAULT_AREAS) -> str:
    """Boot 1's shell job: swap on, (check the compressor,) record one real hibernation,
    copy the capture to /dev/vdc; exit with the recorder's status. areas: the recorder's
    probe areas (None: all; see SAFE_AREAS)."""
    check = ""
    if compressor:
        param = "/sys/module/hibernate/parameters/compressor"
        check = (f"if [ ! -e {param} ]; then echo '{MARK} the kernel has no {param}'; "
                 f"exit {NO_COMPRESSOR}; fi; echo \"{MARK} compressor $(cat {param})\"; ")
    return (f"{check}swapon /dev/vdb || exit 2; "
            "grep -qx 0:0 /sys/power/resume && cat /sys/class/block/vdb/dev > /sys/power/resume; "
            f"python3 -m snapprof record --trigger hibernate --yes -f -o {GUEST_CAPTURE}"
            + (f" --area {','.join(areas)}" if areas else "") + "; rc=$?; "
            f"{_copy_out()}; exit $rc")


def make_swap(path: Path) -> None:
    """Write a swap signature (mkswap's v1 header) on a new raw disk image.

    Done on the host so that the guest's initramfs finds a swap device at boot 1 and
    configures it as the resume device at once (without a signature it waits for one,
    then gives up: /sys/power/resume stays 0:0)."""
    import struct
    import uuid

    size = path.stat().st_size
    pages = size // PAGE
    if pages < 10:
        raise SnapprofError(f"swap disk {path} is too small ({size} bytes)")
    head = bytearray(PAGE)
    struct.pack_into("<III16s16s", head, 1024, 1, pages - 1, 0, uuid.uuid4().bytes, b"snapprof-swap")
    head[PAGE - 10:] = b"SWAPSPACE2"
    with open(path, "r+b") as f:
        f.write(head)


def fresh_boot_script() -> str:
    """Boot 2's own job: runs only if the boot kernel did not restore the image."""
    return f"echo '{MARK} not resumed: a fresh boot'; {_copy_out()}; exit {NOT_RESUMED}"


def _copy_out() -> str:
    return f"tar -cf /dev/vdc -C {Path(GUEST_CAPTURE).parent} {Path(GUEST_CAPTURE).name} 2>/dev/null; sync"


def read_result_disk(disk: Path, dest: Path) -> Path | None:
    """The guest capture from the result disk's tar stream, written to dest; None if absent."""
    try:
        with tarfile.open(disk, "r:") as tf:
            member = tf.getmember(Path(GUEST_CAPTURE).name)
            src = tf.extractfile(member)
            if src is None:
                return None
            with open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            return dest
    except (tarfile.TarError, KeyError, OSError):
        return None


def check_swap_size(size: str) -> str:
    m = _SIZE.fullmatch(str(size).strip().upper().removesuffix("B").removesuffix("I"))
    if not m or int(m.group(1)) == 0:
        raise SnapprofError(f"bad --swap-size {size!r}: give e.g. 1G or 512M")
    return f"{m.group(1)}{m.group(2)}"


# -- joining the console with the recorded run (pure: unit tests drive it) ----------------

def _records_from(records: list, start: re.Pattern) -> list:
    i = next((i for i, r in enumerate(records) if start.search(r[3])), None)
    return [] if i is None else records[i:]


def console_part(split: console.ConsoleSplit) -> tuple[list[tuple], list[tuple], list[str]]:
    """(metrics, kmsg rows, notes) the console adds to a cycle's run.

    metrics: the writing kernel's WRITER_FIGURES and the boot kernel's BOOT_FIGURES as
    ``(name, value, unit, "kernel-log", source)``, source naming the kernel and the line.
    kmsg rows: the writing kernel's lines from the copy on (console.copy_start: "Creating
    image:", or on 7.x the CPUs going offline before it; the restored system's
    log ends at the copy) and the boot kernel's from its resume on, ``(None, ts_us, None,
    text)``; their timestamps are each kernel's own clock.
    """
    metrics = []
    notes = list(split.notes)
    for records, names, source, speed, done in (
            (split.writer, WRITER_FIGURES, WRITER_SOURCE, ("write_ms", "write_kbytes", "write_mbps"),
             _SAVED),
            (split.boot, BOOT_FIGURES, BOOT_SOURCE, ("read_ms", "read_kbytes", "read_mbps"), _LOADED)):
        figs = [f for f in kmsg.kernel_figures(records) if f[0] in names]
        if any(f[0] in speed for f in figs) and not any(done.search(r[3]) for r in records):
            # swsusp_show_speed() prints the full page count whether the save/load worked
            # or not; only "Image saving/loading done" says it did (seen: a 64 MiB swap,
            # saving stopped at 40 %, "Wrote 370012 kbytes" printed all the same).
            figs = [f for f in figs if f[0] not in speed]
            notes.append(f"{source}: the kernel's '{'Wrote' if speed[0] == 'write_ms' else 'Read'} "
                         f"N kbytes' line came without '{done.pattern}': the image was not "
                         f"{'written' if speed[0] == 'write_ms' else 'read'} whole")
        metrics += [(n, v, u, m, f"{source}: {src}") for n, v, u, m, src in figs]
    start = console.copy_start(split.writer)
    lines = ([] if start is None else split.writer[start:]) + _records_from(split.boot, _RESUME_START)
    rows = [(None, r[1], r[2], r[3]) for r in lines]
    return metrics, rows, notes


def failure_reason(split: console.ConsoleSplit, boot1_rc: int | None, boot2_rc: int | None,
                   boot2: list | None = None) -> str | None:
    """Why a cycle did not resume, from the console and the two boots' exit codes; None if it did.
    boot2: boot 2's console records (a boot that found no usable image is no resume boot
    for split_console, but its kernel may say why, e.g. "lz4 compression is not available")."""
    errors = kmsg.kernel_errors(split.writer + split.boot + list(boot2 or []))
    if split.restored and boot2_rc not in (None, NOT_RESUMED):
        return None
    if boot2_rc == NOT_RESUMED or not split.restored:
        why = "the guest did not resume from its image"
        detail = errors[0] if errors else "; ".join(n for n in split.notes if "resume" in n or "image" in n)
        return f"{why}: {detail}" if detail else why
    return f"the restored guest did not finish (exit {boot2_rc})"


def unrecorded_areas(areas: tuple[str, ...] | None) -> dict[str, str]:
    """not_measured reasons for the registry figures of the probe areas left out."""
    from snapprof.metrics import REGISTRY
    from snapprof.record.catalogue import AREAS

    left_out = [a for a in AREAS if areas is not None and a not in areas]
    return {m.name: (f"probe area {m.area} not recorded in a lab hibernation (its kretprobe on "
                     f"swsusp_save crashes the restored kernel; see snapprof.lab.hibernate)")
            for m in REGISTRY.values() if m.area in left_out}


def join_run(run: Run | None, metrics: list[tuple], kmsg_rows: list[tuple], notes: list[str],
             failure: str | None, offline_ms: float | None,
             unrecorded: dict[str, str] | None = None) -> Run:
    """The cycle's run: the recorded one (or a new failed one when the guest stored none)
    with the console's figures and lines added. Figures the run already has are kept as
    recorded; a figure now measured leaves not_measured; a failure marks the run failed."""
    if run is None:
        run = Run(trigger="hibernate", status="failed",
                  error=failure or "the guest stored no run for this cycle")
    have = {m[0] for m in run.metrics}
    for m in metrics:
        if m[0] not in have:
            run.metrics.append(m)
            have.add(m[0])
    if offline_ms is not None:
        run.metric("lab_offline_ms", offline_ms, "ms", "recorder", OFFLINE_SOURCE)
        have.add("lab_offline_ms")
    reason = "not in the serial console log" + (f" ({'; '.join(notes)})" if notes else "")
    nm = {n: r for n, r in run.not_measured if n not in have}
    for name in (*WRITER_FIGURES, *BOOT_FIGURES):
        if name in AFTER_COPY and name not in have:
            nm[name] = reason
    for name, why in (unrecorded or {}).items():
        if name not in have:
            nm.setdefault(name, why)
    run.not_measured = sorted(nm.items())
    run.kmsg = list(run.kmsg) + list(kmsg_rows)
    if failure and run.status == "complete":
        run.status, run.error = "failed", failure
    elif failure and failure not in (run.error or ""):
        run.error = f"{run.error}; {failure}" if run.error else failure
    return run


def run_from_capture(path: Path) -> tuple[dict, list[tuple], Run | None]:
    """(meta, probes, its last run as a Run or None) of a guest capture."""
    with CaptureReader(path) as r:
        meta = r.meta()
        probes = [(p["name"], p["area"], p["target"], p["attached"], p["reason"]) for p in r.probes()]
        # a cycle's row is committed as it begins (incomplete, "the recorder stopped during
        # this cycle"): if the guest capture holds no more of it than that, the recorder never
        # came back to it, and the lab says why (not hibernated, not resumed) from the consoles
        runs = [x for x in r.runs() if not (x["status"] == "incomplete" and x["error"] == STOPPED_IN_CYCLE)]
        if not runs:
            return meta, probes, None
        row = runs[-1]
        rid = row["run_id"]
        kw = {k: row[k] for k in ("trigger", "status", "error", "started_ns", "ended_ns",
                                  "started_wall", "ringbuf_drops")}
        for table, cols in COLUMNS.items():
            kw[table] = [tuple(d[c] for c in cols[1:]) for d in r.table(table) if d["run_id"] == rid]
        return meta, probes, Run(**kw)


# -- the lab job ----------------------------------------------------------------------------

class _Output:
    """The output capture, created with the first guest capture's meta and probes."""

    def __init__(self, path: Path, extra_meta: dict):
        self.path = path
        self.extra_meta = extra_meta
        self.writer: CaptureWriter | None = None

    def add(self, meta: dict | None, probes: list | None, run: Run) -> int:
        if self.writer is None:
            if meta is None:
                raise SnapprofError("the guest returned no capture: nothing to record the cycle in")
            self.writer = CaptureWriter(self.path, force=True)
            self.writer.set_meta({**meta, **self.extra_meta})
            self.writer.set_probes(probes or [])
        return self.writer.add_run(run)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _boot(distro, argv, folder, overlay, disks, append, memory, cpus, timeout, stream):
    from snapprof.lab.qemu import run_guest

    return run_guest(distro, argv, folder, memory=memory, cpus=cpus, timeout=timeout,
                     extra_disks=disks, overlay=overlay, extra_append=append, stream=stream,
                     env={"SNAPPROF_LAB_DISTRO": distro if isinstance(distro, str) else distro.distro})


def boot_failure(res, which: str) -> str | None:
    """Why a boot ended badly (QEMU killed after the timeout, a kernel panic/oops), or None."""
    if res.timed_out:
        return (f"the {res.distro} guest did not power off within {res.timeout:g} s ({which}); "
                f"QEMU was killed; console log {res.console_log}{res.where()}")
    if res.panic:
        return f"the {res.distro} guest died or hung ({which}): {res.panic}; console log {res.console_log}"
    return None


def one_cycle(distro, number: int, out_dir: Path, output: _Output, *, compressor: str | None,
              swap_size: str, memory: str, cpus: int, timeout: float,
              stream: IO[str] | None, wipe_swap: bool = False, areas=DEFAULT_AREAS,
              say=print, job: str | None = None, more=None, extra_append: tuple[str, ...] = ()) -> Cycle:
    """One hibernate-resume cycle in a fresh guest; its run is added to `output`.

    wipe_swap: zero the swap disk between the boots (the boot kernel then finds no image:
    the failure path, for tests).
    job: boot 1's shell job instead of guest_script(compressor, areas); it must leave the
    guest capture on the result disk /dev/vdc as guest_script does (_copy_out()), e.g.
    snapprof.lab.systemd.guest_job (`systemctl hibernate` with the snapprof service).
    more: more(r1, r2) -> (metrics, {name: reason}): figures the boots' GuestResults give
    beyond the consoles (r2 None when boot 1 did not power off), added to the run like
    the console's, with the reasons for those it could not give.
    extra_append: more kernel command-line arguments for both boots."""
    from snapprof.lab.qemu import create_disk

    name = distro if isinstance(distro, str) else distro.distro
    folder = out_dir / f"{name}-cycle{number}"
    if folder.exists():
        shutil.rmtree(folder)
    work = folder / "disks"
    work.mkdir(parents=True)
    cyc = Cycle(number, folder=folder)
    # oops=panic: a restored kernel that oopses panics and powers off at once (QEMU runs
    # with -no-reboot) instead of hanging until the timeout.
    append = ["resume=/dev/vdb", "no_console_suspend", "oops=panic", *extra_append]
    if compressor:
        append.append(f"hibernate.compressor={compressor}")
    try:
        overlay = work / "root.qcow2"
        swap = create_disk(work / "swap.img", swap_size)
        make_swap(swap.path)
        result = create_disk(work / "result.img", "256M")
        disks = [swap, result]
        say(f"{name} cycle {number}: boot 1 (record, hibernate, power off)")
        r1 = _boot(distro, ["sh", "-c", job or guest_script(compressor, areas)], folder / "boot1", overlay,
                   disks, append, memory, cpus, timeout, stream)
        t_off = time.monotonic()
        cyc.boot1_s = r1.duration_s
        dead = boot_failure(r1, "boot 1")
        if dead:
            raise SnapprofError(dead)
        if r1.returncode == NO_COMPRESSOR:
            raise SnapprofError(f"the {name} kernel ({r1.kernel_release}) does not offer "
                                f"hibernate.compressor (no /sys/module/hibernate/parameters/"
                                f"compressor): it always uses lzo; run without --compressor")
        if compressor and f"{MARK} compressor" in r1.output and \
                not re.search(rf"{MARK} compressor \[?{compressor}\]?", r1.output):
            raise SnapprofError(f"the {name} kernel did not take hibernate.compressor={compressor} "
                                f"(console log {r1.console_log})")
        r2 = None
        offline = None
        if r1.returncode is None:  # powered off: boot again from the image
            if wipe_swap:
                with open(swap.path, "r+b") as f:
                    f.write(bytes(1 << 20))
            say(f"{name} cycle {number}: boot 2 (read the image, restore, finish)")
            r2 = _boot(distro, ["sh", "-c", fresh_boot_script()], folder / "boot2", overlay, disks,
                       append, memory, cpus, timeout, stream)
            # boot 2's QEMU started duration_s before run_guest returned
            offline = (time.monotonic() - r2.duration_s - t_off) * 1000
            cyc.boot2_s = r2.duration_s
        logs = r1.console_log.read_text(errors="replace")
        if r2 is not None:
            logs += "\n" + r2.console_log.read_text(errors="replace")
        split = console.split_console(logs)
        metrics, rows, notes = console_part(split)
        guest_cap = read_result_disk(result.path, folder / "guest.snap")
        meta = probes = run = None
        if guest_cap is not None:
            meta, probes, run = run_from_capture(guest_cap)
        if r2 is None:
            failure = None if run is not None else (
                f"the guest did not hibernate (record exit {r1.returncode}); see {r1.console_log}")
        else:
            boot2 = console.console_records(r2.console_log.read_text(errors="replace"))
            failure = boot_failure(r2, "boot 2") or failure_reason(split, r1.returncode, r2.returncode,
                                                                   boot2)
        if failure and r2 is not None and run is not None and run.status == "complete" \
                and r2.returncode == NOT_RESUMED:
            run = None  # a fresh boot cannot have a run of this cycle: the capture is pre-hibernation
        cyc.offline_ms = None if offline is None or offline <= 0 else round(offline, 1)
        unrecorded = unrecorded_areas(areas)
        if more is not None:
            extra, reasons = more(r1, r2)
            metrics = metrics + list(extra)
            unrecorded = {**unrecorded, **reasons}
        joined = join_run(run, metrics, rows, notes, failure, cyc.offline_ms, unrecorded)
        if meta is None and output.writer is None:
            raise SnapprofError(f"{name} cycle {number}: the guest returned no capture: "
                                f"{failure or 'unknown reason'}; console logs in {folder}")
        cyc.run_id = output.add(meta, probes, joined)
        cyc.status, cyc.error = joined.status, joined.error
        cyc.figures = {m[0]: m[1] for m in joined.metrics}
        return cyc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def lab_hibernate(distro: str, runs: int, out_dir: Path, *, compressor: str | None = None,
                  swap_size: str = "1G", memory: str = "2G", cpus: int = 2, timeout: float = 900,
                  stream: IO[str] | None = sys.stdout, wipe_swap: bool = False,
                  areas: tuple[str, ...] | None = DEFAULT_AREAS, progress=None) -> tuple[Path, list[Cycle]]:
    """Run `runs` hibernate-resume cycles of `distro`; returns (capture, cycles)."""
    from snapprof.lab import build

    if runs < 1:
        raise SnapprofError(f"bad --runs {runs}: give 1 or more")
    if compressor is not None and compressor not in COMPRESSORS:
        raise SnapprofError(f"bad --compressor {compressor!r}: give one of {', '.join(COMPRESSORS)}")
    swap_size = check_swap_size(swap_size)
    build.validate_distro(distro)
    say = progress or (lambda m: print(f"snapprof lab record: {m}", file=sys.stderr, flush=True))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    img = build.ensure_image(distro, progress=say)
    capture = out_dir / f"{distro}.snap"
    extra = {"lab_distro": distro, "lab_trigger": "hibernate (two QEMU boots, serial console joined)",
             "lab_compressor": compressor or "kernel default",
             "lab_probe_areas": ",".join(areas) if areas else "all"}
    output = _Output(capture, extra)
    cycles: list[Cycle] = []
    try:
        for n in range(1, runs + 1):
            cyc = one_cycle(img, n, out_dir, output, compressor=compressor, swap_size=swap_size,
                            memory=memory, cpus=cpus, timeout=timeout, stream=stream,
                            wipe_swap=wipe_swap, areas=areas, say=say)
            cycles.append(cyc)
            say(summary_line(cyc))
    finally:
        output.close()
    return capture, cycles


def summary_line(c: Cycle) -> str:
    f = c.figures
    parts = [f"cycle {c.number}: {c.status}"]
    if "write_pages" in f:
        parts.append(f"wrote {f['write_pages']:.0f} pages")
    if "write_ms" in f:
        parts.append(f"in {f['write_ms'] / 1000:.2f} s ({f.get('write_mbps', float('nan')):.2f} MB/s)")
    if "read_pages" in f:
        parts.append(f"read {f['read_pages']:.0f} pages")
    if "read_ms" in f:
        parts.append(f"in {f['read_ms'] / 1000:.2f} s ({f.get('read_mbps', float('nan')):.2f} MB/s)")
    if c.boot1_s is not None:
        parts.append(f"boot 1 {c.boot1_s:.0f} s")
    if c.boot2_s is not None:
        parts.append(f"boot 2 {c.boot2_s:.0f} s")
    if c.error:
        parts.append(c.error)
    return "  ".join(parts)
