"""The record loop of `snapprof record`: meta, probes, then one committed run per cycle.

Standard library only: bcc runs in the probe loader's child process (snapprof/record/loader.py).

For each cycle: mark the kernel log, run the trigger (every other task, the recorder's
other threads included, is frozen meanwhile), then after the thaw drain the probes, read
the kernel's log lines of the cycle, merge the figures and write the run with
CaptureWriter.add_run, which commits it: a crash loses at most the cycle in flight.

Figures are merged with one row per metric name, first come first kept:
  1. the probes' own (methods probe, tracepoint, sleep-time);
  2. the kernel's log lines (kernel-log), then the printk-time copy window;
  3. what /dev/snapshot reported (device: image_bytes, image_pages) and the recorder's
     clock around the system calls (recorder: create_image_ms, cycle_ms, ...);
  4. /proc and /sys read just before the cycle (sysfs).
A metric nobody measured has no row; its reason goes to not_measured.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field

from snapprof import metrics as registry
from snapprof.capture import CaptureWriter, Run
from snapprof.errors import SnapprofError
from snapprof.record import composition, culprits, image, journal, kmsg, others, slicewatch, sysinfo
from snapprof.termsafe import visible
from snapprof.record import triggers as trg

COPY_METRICS = ("copy_pages", "zero_pages", "meta_pages", "image_pages", "image_bytes",
                "copy_window_ms", "copy_needed_pages")
DEVICE_METRICS = ("device_suspend_ms", "device_resume_ms", "device_callbacks", "device_errors")
# Where each pm_test level stops (hibernation-map.md §5.1): what it does not reach.
NOT_REACHED = {
    "freezer": COPY_METRICS + DEVICE_METRICS,
    "devices": COPY_METRICS,
    "platform": COPY_METRICS,
    "processors": COPY_METRICS,
    "core": COPY_METRICS,
}
AFTER_COPY = ("write_ms", "write_kbytes", "write_mbps", "write_pages", "write_compressed_kbytes",
              "read_ms", "read_kbytes", "read_mbps", "read_pages", "compress_threads",
              "decompress_threads")
# Figures only the kernel log gives, and only when PM debugging is on.
PM_DEBUG_ONLY = ("dpm_freeze_ms", "dpm_late_freeze_ms", "dpm_noirq_freeze_ms", "dpm_noirq_thaw_ms",
                 "dpm_early_thaw_ms", "dpm_thaw_ms", "timekeeping_suspended_ms")
LAB_ONLY = ("lab_offline_ms",)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
LONG_BYTES = 8 if os.uname().machine.endswith("64") else 4  # the kernel's sizeof(long)


def default_reason(name: str, trigger: str) -> str:
    """Why a registry metric nobody measured or explained is absent from a run."""
    if name in PM_DEBUG_ONLY:
        return ("not in the kernel log: the kernel logs it only with "
                "/sys/power/pm_debug_messages=1")
    if name in LAB_ONLY:
        return "only in the lab's two-boot hibernation (snapprof lab record)"
    if name in registry.SYSTEMD_JOURNAL:
        return ("systemd's part of a `systemctl hibernate`: read from the journal when the "
                "recorder waits for cycles started elsewhere (--trigger none, as the service "
                f"does), on a machine running systemd; this cycle: --trigger {trigger}")
    metric = registry.get(name)
    if metric.area == "io" and trigger != "hibernate":
        return (f"no image written or read: a {trigger} cycle hands the image to user space; "
                "the kernel writes and reads it only in a real hibernation")
    return "not seen in this cycle: no probe, kernel log line or device figure gave it"


@dataclass
class Options:
    output: str
    trigger: str = "snapshot"
    runs: int | None = None  # None: 1, or until Ctrl-C for --trigger none
    interval: float = 2.0
    image_size: int | None = None
    force: bool = False
    save_image: str | None = None
    probes: bool = True
    areas: list[str] | None = None
    deadline_s: float = 600.0
    yes: bool = False
    callbacks_per_device: int | None = None  # None: the probe set's default
    freezer_probes: str = "light"  # probeset.FREEZER_PROBES: light, or the per-thread sweep hooks
    freeze_timeout_ms: int | None = None  # /sys/power/pm_freeze_timeout for the cycles
    #: image_size settings to sweep ("0", "25%" of RAM, "default" = the kernel's 2/5 of RAM,
    #: or bytes): --runs cycles at each, in rotating order (one round has each setting once)
    image_size_sweep: list[str] | None = None
    #: write rotating captures into this folder instead of one file (output is then the
    #: folder): a new capture past rotate_mb or rotate_days, the newest `keep` kept
    rotate_dir: str | None = None
    rotate_mb: int = 64
    rotate_days: float = 7.0
    keep: int = 8


@dataclass
class Summary:
    output: str
    runs: list[tuple] = field(default_factory=list)  # (run_id, status, error)
    interrupted: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(status == "complete" for _, status, _ in self.runs)


# -- merging ------------------------------------------------------------------------------

def merge_metrics(*groups: list[tuple]) -> list[tuple]:
    """One row per metric name, the first one kept (groups in order of preference)."""
    out: dict[str, tuple] = {}
    for rows in groups:
        for row in rows:
            name, value = row[0], row[1]
            if value is None or name in out:
                continue
            out[name] = (name, float(value), row[2], row[3], row[4] if len(row) > 4 else None)
    return list(out.values())


def not_measured_rows(measured: set[str], reasons: list[tuple], pm_test: str | None,
                      extra: dict[str, str] | None = None) -> list[tuple]:
    """(name, reason) for every metric that has no row, one per name.

    ``reasons`` are the probes' (name, reason); ``pm_test`` (the level the cycle ran under)
    replaces the reason of what that level does not reach, unless a probe was missing;
    ``extra`` adds reasons for names nobody else explained.
    """
    out: dict[str, str] = {}
    for name, reason in reasons:
        if name not in measured:
            out.setdefault(name, reason)
    if pm_test and pm_test != "none":
        for name in NOT_REACHED.get(pm_test, ()):
            if name in measured or "not attached" in out.get(name, ""):
                continue
            out[name] = f"not reached: pm_test={pm_test}"
    for name, reason in (extra or {}).items():
        if name not in measured:
            out.setdefault(name, reason)
    return sorted(out.items())


def build_run(trigger: str, outcome: trg.CycleOutcome, data, records: list[tuple],
              before: list[tuple], probe_reason: str | None = None,
              clock_stable: bool | None = None, started_wall: str | None = None,
              zero_pages_left_out: bool | None = None, page_size: int = 4096) -> Run:
    """One capture run from what the trigger, the probes (``data``: CycleData or None) and
    the kernel log (``records``) say about a cycle. Pure: unit tests drive it.

    In a real hibernation (trigger hibernate) the image's size comes from the pages to copy,
    counted before the copy (probes first, then the kernel's log line), where that is exact
    (``zero_pages_left_out`` False: snapprof.record.image)."""
    probe_rows = list(data.metrics) if data is not None else []
    log_rows = kmsg.kernel_figures(records)
    window = kmsg.copy_window_from_printk(records, clock_stable)
    if window is not None:
        log_rows.append(window)
    dev_rows = [m for m in outcome.metrics if m[3] == "device"]
    rec_rows = [m for m in outcome.metrics if m[3] != "device"]
    rows = merge_metrics(probe_rows, log_rows, dev_rows, rec_rows, before)

    image_why = None
    if trigger == "hibernate" and "image_pages" not in {r[0] for r in rows}:
        need = next((r for r in rows if r[0] == "copy_needed_pages"), None)
        image_rows, image_why = image.image_from_pages_to_copy(
            need, zero_pages_left_out, page_size, LONG_BYTES)
        rows = merge_metrics(rows, image_rows)

    measured = {r[0] for r in rows}
    extra = dict(outcome.not_measured)
    if trigger == "snapshot" and "image_bytes" not in measured:
        extra["image_bytes"] = "no image (CREATE_IMAGE did not complete)"
    if trigger == "hibernate":
        # The restored system's memory (BPF maps, printk buffer) is the image taken at the
        # atomic copy: what came after (write, power-off, the boot kernel's read) is gone.
        for name in AFTER_COPY:
            extra[name] = ("after the atomic copy: rolled back by the restore, not visible to "
                           "the restored system (see the serial console log)")
    if data is None:
        why = probe_reason or "probes not attached"
        for m in registry.REGISTRY.values():
            if m.area != "system" and m.name not in registry.DERIVED:
                extra.setdefault(m.name, why)
    reasons = list(data.not_measured) if data is not None else []
    if trigger == "hibernate":
        reasons = [r for r in reasons if r[0] not in AFTER_COPY]
    if image_why:  # the image's own reason, before a probe's about its counters
        reasons = [(n, image_why) for n in ("image_pages", "image_bytes")] + reasons
    nm = not_measured_rows(measured, reasons, outcome.pm_test, extra)
    explained = measured | {n for n, _ in nm}
    nm += [(m.name, default_reason(m.name, trigger)) for m in registry.REGISTRY.values()
           if m.area != "system" and m.name not in explained and m.name not in registry.DERIVED]
    nm.sort()

    status, error = outcome.status, outcome.error
    errors = kmsg.kernel_errors(records)
    if status != "complete" and errors:
        error = f"{error}; kernel: {errors[0]}" if error else f"kernel: {errors[0]}"
        if outcome.pm_test not in (None, "none", "freezer") and any(
                "Cannot find swap device" in e for e in errors):
            error += (" (the kernel went on to write an image: in_suspend was left set by an "
                      "earlier /dev/snapshot cycle in this boot)")
    elif status == "complete" and errors:
        status, error = "failed", f"kernel: {errors[0]}"
    if status != "complete" and outcome.notes:
        error = "; ".join([error or status] + outcome.notes)

    started, ended = outcome.started_ns, outcome.ended_ns
    if data is not None and data.events and (started is None or ended is None):
        ts = [e[0] for e in data.events]
        started = started if started is not None else min(ts)
        ended = ended if ended is not None else max(ts)
    return Run(
        trigger=trigger, status=status, error=error, started_ns=started, ended_ns=ended,
        started_wall=started_wall, ringbuf_drops=data.drops if data is not None else None,
        events=list(data.events) if data is not None else [],
        metrics=rows, not_measured=nm,
        tasks=list(data.tasks) if data is not None else [],
        devices=list(data.devices) if data is not None else [],
        kmsg=[tuple(r) for r in records],
    )


# -- the session --------------------------------------------------------------------------

def check_output(path: str, force: bool) -> None:
    """Refuse early (before attaching probes) what CaptureWriter would refuse."""
    if os.path.isdir(path):
        raise SnapprofError(f"{path} is a directory")
    if os.path.exists(path) and not force:
        raise SnapprofError(f"{path} exists; use --force to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise SnapprofError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise SnapprofError(f"cannot write {path}: directory {parent} is not writable")


def _image_path(base: str, run_no: int, runs: int | None) -> str:
    return base if runs == 1 else f"{base}.{run_no}"


def _summary_line(run_no: int, run: Run) -> str:
    m = {r[0]: r[1] for r in run.metrics}
    parts = [f"run {run_no}: {run.status}"]
    if "cycle_ms" in m:
        parts.append(f"cycle {m['cycle_ms'] / 1000:.2f} s")
    if "freeze_user_ms" in m:
        parts.append(f"freeze user {m['freeze_user_ms']:.1f} ms")
    if "prealloc_ms" in m:
        parts.append(f"prealloc {m['prealloc_ms'] / 1000:.2f} s")
    elif "prealloc_kernel_ms" in m:
        parts.append(f"prealloc {m['prealloc_kernel_ms'] / 1000:.2f} s")
    if "shrink_reclaimed_pages" in m and "shrink_requested_pages" in m:
        parts.append(f"shrink {m['shrink_reclaimed_pages']:.0f}/{m['shrink_requested_pages']:.0f} pages")
    if "image_pages" in m:
        parts.append(f"image {m['image_pages']:.0f} pages")
    if run.ringbuf_drops:
        parts.append(f"{run.ringbuf_drops} records lost to full BPF buffers or maps (below)")
    if run.error:
        parts.append(run.error)
    return "  ".join(parts)


# A return probe on swsusp_save() is pending at the atomic copy: in a real hibernation the
# restored image resumes in swsusp_arch_suspend() and never returns through swsusp_save();
# the stale return-probe node then crashes the restored kernel (seen in the lab on Debian 6.1
# and 6.12: "WARNING ... rethook.c rethook_trampoline_handler", then a NULL pointer
# dereference). /dev/snapshot and pm_test cycles return normally. So a cycle that may be a
# real hibernation records every area with ProbeSet(real_hibernation=True), which leaves out
# exactly the measurements that need such a return probe (the catalogue's
# pending_across_copy: the image counters read at swsusp_save's return), with the reason.
ACROSS_COPY_AREAS = ("shrink", "copy")  # the areas that hold measurements needing one
# What a real hibernation recorded before the return probes were left out one by one: the
# default of snapprof.lab.hibernate's guest job, which passes them as --area.
SAFE_AREAS = ("freezer", "devices", "phases", "io")


def probe_areas(kind: str, requested: list[str] | None) -> tuple[list[str] | None, bool]:
    """The probe areas to attach for a trigger kind, and whether the cycles may be real
    hibernations (ProbeSet's real_hibernation: no return probe pending across the copy).

    hibernate: always. none: by default (anyone may start a real hibernation); an explicit
    --area keeps every probe of its areas, for runs where only /dev/snapshot cycles happen.
    """
    if kind == "hibernate":
        return (list(requested) if requested else None), True
    if kind == "none" and requested is None:
        return None, True
    return requested, False


class Recorder:
    def __init__(self, opts: Options, log=None):
        self.opts = opts
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    # checks that need no probes and change nothing
    def preflight(self) -> tuple[str, str | None]:
        o = self.opts
        kind, level = trg.parse_trigger(o.trigger)
        if o.runs is not None and o.runs < 1:
            raise SnapprofError("--runs must be at least 1")
        if o.interval < 0:
            raise SnapprofError("--interval must not be negative")
        if o.image_size is not None and o.image_size < 0:
            raise SnapprofError("--image-size must not be negative")
        if o.image_size_sweep is not None:
            if o.image_size is not None:
                raise SnapprofError("--image-size and --image-size-sweep exclude each other")
            if kind == "none":
                raise SnapprofError("--image-size-sweep needs a trigger snapprof drives "
                                    "(not --trigger none)")
            sweep_bytes(o.image_size_sweep, 1 << 30)  # the spelling, before anything is changed
        if o.save_image and kind != "snapshot":
            raise SnapprofError("--save-image needs --trigger snapshot (only /dev/snapshot hands "
                                "the image over)")
        if o.rotate_dir is not None:
            if not os.path.isdir(o.rotate_dir) or not os.access(o.rotate_dir, os.W_OK):
                raise SnapprofError(f"cannot write captures into {o.rotate_dir}: not a writable "
                                    "directory")
        else:
            check_output(o.output, o.force)
        if o.save_image:
            check_output(o.save_image, True)
        sysinfo.check_can_record(o.trigger)
        swaps = _active_swaps()
        if kind == "hibernate" and not o.yes:
            raise SnapprofError("--trigger hibernate really hibernates this machine (image to "
                                "swap, power-off, resume); add --yes to go ahead")
        if kind == "pm-test" and level != "freezer" and swaps:
            raise SnapprofError(
                f"pm-test:{level} with active swap ({', '.join(swaps)}) can really hibernate: an "
                "earlier /dev/snapshot cycle leaves in_suspend set, and the kernel then writes an "
                "image and powers off; swapoff first, or use pm-test:freezer")
        return kind, level

    def run(self) -> Summary:
        o = self.opts
        kind, level = self.preflight()
        for note in trg.PowerSettings.recover():  # a killed recorder's /sys/power changes
            self.log(f"snapprof record: {note}")
        for other in others.announce(o.output, o.trigger):  # e.g. beside `snapprof service`
            self.log(visible(f"snapprof record: another recorder is running ({other}): both "
                             "record the cycles; each one's probes add their cost to them"))
        from snapprof.record.probeset import ProbeSet  # noqa: PLC0415 (resolves, no bcc yet)

        summary = Summary(o.output)
        areas, real = probe_areas(kind, o.areas)
        ps = ProbeSet(areas=areas, callbacks_per_device=o.callbacks_per_device,
                      real_hibernation=real, freezer_probes=o.freezer_probes)
        if real:
            gone = [r.measurement.name for r in ps.resolutions
                    if ps.catalogue.returns_across_copy(r.measurement)]
            if gone:
                self.log(f"snapprof record: left out for a real hibernation: {', '.join(gone)} "
                         f"(no return probe on {', '.join(ps.catalogue.pending_across_copy)}: "
                         f"{ps.catalogue.pending_why})")
        probe_reason = None
        if o.probes:
            t = time.monotonic()
            timeout = o.freeze_timeout_ms or _int(trg.read_power("pm_freeze_timeout")) or 20000
            ps.stuck_after_ms = max(1, min(1000, timeout // 2))  # stacks of tasks still refusing
            ps.attach()
            self.log(f"snapprof record: {sum(1 for r in ps.status() if r[3])} probes attached "
                     f"in {time.monotonic() - t:.1f} s ({ps.methods_text()})")
            if ps.fentry_why:
                self.log(f"snapprof record: freezer hooks: {ps.fentry_why}")
        else:
            probe_reason = "recorded without probes (--no-probes)"
        settings = trg.PowerSettings()
        reader = writer = trigger = None
        try:
            if o.image_size is not None:
                settings.set("image_size", str(o.image_size))
            sweep = None
            if o.image_size_sweep:
                sweep = sweep_bytes(o.image_size_sweep, sysinfo.mem_total_bytes())
            if o.freeze_timeout_ms is not None:
                settings.set("pm_freeze_timeout", str(o.freeze_timeout_ms))
            reader = kmsg.KmsgReader()
            if o.rotate_dir is not None:
                from snapprof.record.rotate import RotatingWriter  # noqa: PLC0415

                writer = RotatingWriter(o.rotate_dir, o.rotate_mb << 20, o.rotate_days * 86400,
                                        o.keep)
            else:
                writer = CaptureWriter(o.output, force=o.force)
            meta = sysinfo.collect_meta()
            meta["trigger"] = o.trigger
            if sweep:
                meta["image_size_sweep"] = ",".join(o.image_size_sweep)
                meta["image_size_sweep_bytes"] = ",".join(str(b) for b in sweep)
            if level:
                meta["pm_test"] = level
            if os.environ.get("SNAPPROF_LAB_DISTRO"):
                meta["lab_distro"] = os.environ["SNAPPROF_LAB_DISTRO"]
            if "SNAPPROF_LAB_RECORD_ARGS" in os.environ:  # what a lab job asked the recorder for
                meta["lab_record_args"] = os.environ["SNAPPROF_LAB_RECORD_ARGS"]
            meta["probes"] = "attached" if o.probes else "off (--no-probes)"
            if ps.timings:
                meta["probe_compile_s"] = f"{ps.timings.get('compile_s', 0):.2f}"
                if ps.timings.get("loader_peak_rss_kb"):
                    meta["probe_loader_peak_rss_kb"] = str(int(ps.timings["loader_peak_rss_kb"]))
                meta["probe_buffers"] = " ".join(f"{k}={v}" for k, v in ps.sizes.items())
                meta["probe_methods"] = ps.methods_text()
                if ps.task_layout_text:
                    meta["probe_task_layout"] = ps.task_layout_text
                if ps.fentry_why:
                    meta["probe_fentry_fallback"] = ps.fentry_why
                if "cache_dropped_kb" in ps.timings:
                    meta["probe_compiler_cache_dropped_kb"] = str(int(ps.timings["cache_dropped_kb"]))
                if ps.bpf_memlock_kb:  # the kernel's memlock accounting, fdinfo
                    meta["probe_bpf_memlock_kb"] = " ".join(f"{k}={v}" for k, v in ps.bpf_memlock_kb.items())
            writer.set_meta(meta)
            rows = ps.status()
            if not o.probes:
                rows = [(n, a, t, False, probe_reason) for n, a, t, _att, _r in rows]
            writer.set_probes(rows)
            if kind == "snapshot":
                trigger = trg.SnapshotTrigger(deadline_s=o.deadline_s, save_image=bool(o.save_image))
            elif kind in ("pm-test", "hibernate"):
                trigger = trg.SysfsTrigger(level)
            else:
                # systemd's cgroup freeze of user.slice, watched while the recorder waits
                trigger = trg.WaitTrigger(reader, watch=slicewatch.SliceWatch())
            note = trg.lock_memory()
            if note:
                self.log(f"snapprof record: {note}")
            mem = trg.self_memory_kb()
            writer.set_meta({"recorder_rss_kb": mem.get("VmRSS"), "recorder_rss_anon_kb": mem.get("RssAnon"),
                             "recorder_locked_kb": mem.get("Locked"),
                             "recorder_peak_rss_kb": mem.get("VmHWM")})
            self._loop(kind, trigger, ps if o.probes else None, reader, writer, summary,
                       probe_reason, ps.view.zero_pages_left_out(), sweep, settings)
        finally:
            summary.problems += settings.restore()
            others.withdraw()
            for obj in (trigger, reader, writer):
                if obj is not None:
                    obj.close()
            ps.close()
        for p in summary.problems:
            self.log(f"snapprof record: {p}")
        return summary

    def _loop(self, kind, trigger, ps, reader, writer, summary, probe_reason,
              zero_pages_left_out=None, sweep=None, settings=None) -> None:
        o = self.opts
        runs = o.runs if o.runs is not None else (None if kind == "none" else 1)
        order = sweep_order(sweep, runs) if sweep else None
        if order:
            runs = len(order)
        clock_stable = sysinfo.sched_clock_stable()
        if ps is not None:
            ps.collect()  # drop whatever the probes saw before the first cycle
        if kind == "none":
            reader.mark()
            self.log("snapprof record: waiting for hibernation cycles started elsewhere "
                     "(Ctrl-C to stop)")
        n = 0
        with trg.Interrupts() as intr:
            while runs is None or n < runs:
                if intr.received:
                    break
                if order:  # this cycle's image_size (restored with the other settings)
                    settings.set("image_size", str(order[n]))
                before = sysinfo.memory_metrics()
                comp, procs = composition.before_cycle()  # what the memory in use is made of
                comp_read_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
                before += comp
                wall = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                begun = None
                if kind != "none":
                    reader.mark()
                    # committed before the cycle: a recorder killed in it leaves this row,
                    # incomplete, saying so (waiting for a cycle started elsewhere begins none)
                    try:
                        begun = writer.begin_run(trigger.name, wall)
                    except (sqlite3.Error, OSError) as exc:  # a full disk must not stop the cycle
                        self.log(f"snapprof record: cannot write to {o.output} ({exc}): this "
                                 "cycle runs, its row is written when it ends if it can be")
                wait_wall = time.time()
                try:
                    outcome = trigger.run(intr)
                except BaseException as exc:
                    if begun is not None:  # what stopped it, instead of "killed"
                        writer.abandon_run(begun, "the recorder stopped during this cycle: "
                                           f"{exc or type(exc).__name__}")
                    raise
                if outcome is None:  # none: interrupted while waiting
                    if begun is not None:
                        writer.abandon_run(begun, "interrupted before the cycle began")
                    break
                sd_events = []
                if kind == "none" and not outcome.interrupted:  # systemd's part, from the journal
                    figures, missing, notes, sd_events = journal.cycle_part(
                        wait_wall - 1, before_ns=outcome.wall_minus_boot_ns)
                    outcome.metrics += figures
                    outcome.not_measured.update(missing)
                    outcome.notes += notes
                data = ps.collect(timeout_ms=100) if ps is not None else None
                records = outcome.records if outcome.records is not None else reader.read_new()
                if reader.lost:
                    outcome.notes.append(f"{reader.lost} kernel log records lost to overruns")
                after = composition.kinds(when="_after")  # and what the cycle left of it
                if kind == "none" and outcome.started_ns:  # read when the wait began
                    age = (outcome.started_ns - comp_read_ns) / 1e9
                    before = [r if r[0] not in {c[0] for c in comp} else
                              (*r[:4], f"{r[4]}, read {age:.0f} s before the cycle began "
                                       "(the recorder was waiting for it)") for r in before]
                run = build_run(trigger.name, outcome, data, records, before + after, probe_reason,
                                clock_stable, wall, zero_pages_left_out, PAGE_SIZE)
                run.processes = procs
                run.events += sd_events  # systemd's spans, beside the probes' events on the timeline
                if run.status != "complete" or culprits.freeze_failed(records):
                    # now, while the tasks that refused are still there to be looked up
                    run.culprits = culprits.rows(culprits.culprits(
                        records, run.tasks, probe_stacks=data.stuck if data is not None else None))
                if run.status != "complete" and culprits.allocation_failed(records, run.error):
                    run.culprits += culprits.memory_users()  # who held the memory
                seen = outcome.slice
                if seen is not None and seen.held_up:  # who held systemd's freeze of user.slice up
                    run.culprits += seen.holders
                    outcome.notes.append(
                        f"systemd's cgroup freeze of {seen.slice} was still not done {seen.held_s:.1f} s "
                        f"after it was asked for: {len(seen.holders)} thread(s) not parked")
                n += 1
                try:
                    run_id = writer.add_run(run, begun)
                except (sqlite3.Error, OSError) as exc:  # a full disk: this cycle is lost, not the next
                    why = f"run {n} could not be written to {o.output} ({exc}): its figures are lost"
                    summary.runs.append((None, "failed", why))  # the exit status says so
                    if begun is not None:  # say so in its begun row, if even that can be written
                        try:
                            writer.abandon_run(begun, f"the cycle ended but could not be written ({exc})")
                        except (sqlite3.Error, OSError):
                            pass
                    self.log(f"snapprof record: {why}; recording goes on")
                    run_id = None
                else:
                    summary.runs.append((run_id, run.status, run.error))
                    self.log(_summary_line(run_id, run))
                for note in (data.drop_notes if data is not None else []):
                    self.log(f"  lost: {note}")
                for note in outcome.notes:  # the journal's words among them: never raw to a terminal
                    self.log(visible(f"  note: {note}"))
                for c in (c for c in run.culprits if c[0] in ("freeze", "cgroup")):  # never raw to a terminal
                    where = c[7] or (c[8] or "?").split("\n")[0]
                    what = "refused to freeze" if c[0] == "freeze" else f"held up {c[1]}'s cgroup freeze"
                    self.log(visible(f"  {what}: pid {c[2]} {c[4] or '?'} "
                                     f"({c[5] or 'no command line'}), state {c[6] or '?'}, in {where}"))
                if outcome.image is not None and o.save_image:
                    path = _image_path(o.save_image, n, runs)
                    _write_file(path, outcome.image)
                    self.log(f"  image saved to {path} ({len(outcome.image)} bytes)")
                if outcome.interrupted:
                    break
                if runs is None or n < runs:
                    deadline = time.monotonic() + o.interval
                    while time.monotonic() < deadline and not intr.received:
                        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            if intr.received:
                summary.interrupted = intr.name


def _write_file(path: str, data: bytearray) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as exc:
        raise SnapprofError(f"cannot save the image to {path}: {exc.strerror}") from None


def _active_swaps() -> list[str]:
    try:
        with open("/proc/swaps", encoding="utf-8") as f:
            return [ln.split()[0] for ln in f.read().splitlines()[1:] if ln.strip()]
    except OSError:
        return []


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def sweep_bytes(specs: list[str], mem_total: int, page_size: int = PAGE_SIZE) -> list[int]:
    """image_size values in bytes for --image-size-sweep: "default" is what the kernel sets
    at boot (2/5 of RAM, in whole pages), "N%" N percent of RAM, else a size (K, M, G)."""
    out = []
    for spec in specs:
        t = spec.strip().lower()
        if t == "default":
            value = (mem_total // page_size * 2 // 5) * page_size
        elif t.endswith("%"):
            try:
                pct = float(t[:-1])
            except ValueError:
                raise SnapprofError(f"--image-size-sweep: not a percentage: {spec!r}") from None
            if not 0 <= pct <= 100:
                raise SnapprofError(f"--image-size-sweep: {spec!r} is not between 0 % and 100 %")
            value = int(mem_total * pct / 100) // page_size * page_size
        else:
            units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
            u = t.removesuffix("b").removesuffix("i")
            try:
                value = int(u[:-1] if u[-1:] in units else u) * units.get(u[-1:], 1)
            except ValueError:
                raise SnapprofError(f"--image-size-sweep: not a size, a percentage or "
                                    f"'default': {spec!r}") from None
            if value < 0:
                raise SnapprofError(f"--image-size-sweep: {spec!r} is negative")
        out.append(value)
    if len(set(out)) < 2:
        raise SnapprofError("--image-size-sweep needs at least two different settings")
    return out


def sweep_order(sweep: list[int], rounds: int | None) -> list[int]:
    """The setting of each cycle: `rounds` rounds, each with every setting once, the start
    rotating from round to round so no setting always comes first or after another one."""
    k = len(sweep)
    return [sweep[(r + i) % k] for r in range(rounds or 1) for i in range(k)]
