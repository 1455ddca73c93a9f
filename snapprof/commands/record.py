"""snapprof record: drive (or wait for) hibernation cycles and write a capture.

Standard library only at import time; the recorder and bcc are imported inside run().
"""

from __future__ import annotations

import argparse

EPILOG = """\
triggers:
  snapshot          /dev/snapshot snapshot-and-continue: freeze, preallocate, copy the
                    image atomically, read it, thaw. Nothing is written; the system keeps
                    running (default)
  pm-test:LEVEL     'disk' to /sys/power/state under /sys/power/pm_test=LEVEL (freezer,
                    devices, platform, processors, core): stops at LEVEL, waits 5 s, thaws.
                    No atomic copy at any level
  hibernate         a real hibernation (image to swap, power-off, resume); needs a resume
                    swap device and --yes
  none              start nothing: record the cycles someone else starts, until Ctrl-C or
                    --runs N cycles

examples:
  snapprof record -o run.snap --runs 5             # five snapshot cycles, system keeps running
  snapprof record -o small.snap --image-size 0     # force page shrinking (restored afterwards)
  snapprof record -o sweep.snap --runs 3 --image-size-sweep 0,25%,50%,default
  snapprof record -o freezer.snap --trigger pm-test:freezer --runs 3
  snapprof record -o laptop.snap --trigger none    # then `systemctl hibernate` elsewhere
  snapprof record --rotate /var/lib/snapprof --trigger none   # what `snapprof service` runs
  snapprof record -o real.snap --trigger hibernate --yes
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "record", help="measure hibernation cycles into a capture file",
        description="Attach snapprof's probes, run or wait for hibernation cycles, and write "
                    "one run per cycle to a capture (SQLite), each committed when its cycle "
                    "ends. Needs root. The system is never left frozen: if the recorder dies "
                    "mid-cycle the kernel thaws when /dev/snapshot is closed.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", metavar="FILE", help="capture file to write")
    p.add_argument("--rotate", metavar="DIR",
                   help="instead of -o: write captures into DIR (snapprof-TIME.snap), a new one "
                        "past --rotate-mb or --rotate-days, keeping the newest --keep "
                        "(how `snapprof service` records)")
    p.add_argument("--rotate-mb", type=_whole(1, 1 << 20, "number of MiB"), default=64, metavar="N",
                   help="with --rotate: start a new capture past N MiB (default 64)")
    p.add_argument("--rotate-days", type=float, default=7.0, metavar="D",
                   help="with --rotate: start a new capture after D days (default 7)")
    p.add_argument("--keep", type=_whole(1, 10_000), default=8, metavar="N",
                   help="with --rotate: keep the newest N captures (default 8)")
    p.add_argument("--trigger", default="snapshot", metavar="TRIGGER",
                   help="snapshot (default), pm-test:LEVEL, hibernate or none")
    p.add_argument("--runs", type=int, metavar="N",
                   help="number of cycles (default 1; with --trigger none: until Ctrl-C)")
    p.add_argument("--interval", type=float, default=2.0, metavar="S",
                   help="seconds between cycles (default 2)")
    p.add_argument("--image-size", type=_size, metavar="BYTES",
                   help="set /sys/power/image_size for the cycles (0 = as small as possible; "
                        "suffixes K, M, G); restored afterwards")
    p.add_argument("--image-size-sweep", type=_sweep, metavar="LIST",
                   help="record --runs cycles at each of these /sys/power/image_size settings, "
                        "in rotating order: sizes (K, M, G), N%% of RAM, or 'default' (the "
                        "kernel's 2/5 of RAM), e.g. 0,25%%,50%%,default; restored afterwards")
    p.add_argument("--save-image", metavar="FILE",
                   help="keep the image bytes (snapshot trigger; held in memory while frozen, "
                        "written after the thaw; FILE.N per run when --runs > 1)")
    p.add_argument("--area", action="append", metavar="AREA",
                   help="attach only these probe areas: freezer, shrink, copy, devices, io, phases")
    p.add_argument("--no-probes", action="store_true",
                   help="attach no probes: record kernel-log, device and recorder figures only")
    p.add_argument("--cycle-timeout", type=float, default=600.0, metavar="S",
                   help="kill the recorder if one snapshot cycle takes longer (default 600); "
                        "closing /dev/snapshot then thaws the system")
    p.add_argument("--callbacks-per-device", type=_per_device, metavar="N",
                   help="size the device-callback ring buffer for N callbacks per PM device "
                        "(default 4; a cycle has at most 8; every page of it is in the image, "
                        "and records that do not fit are counted as drops in the run)")
    p.add_argument("--freeze-timeout", type=_freeze_timeout, metavar="MS",
                   help="set /sys/power/pm_freeze_timeout (how long the freezer tries before "
                        "giving up; kernel default 20000) for the cycles; restored afterwards")
    p.add_argument("--freezer-probes", choices=("light", "sweep", "fentry", "kprobe"), default="light",
                   help="light (default): no hook runs once per thread in a freezer sweep; the "
                        "freeze time, sweeps, tasks the freezer had to signal, their latency and "
                        "refusals come from a few calls a stage. sweep: add hooks on freeze_task() "
                        "for every thread in every sweep (tasks frozen in place, threads swept, "
                        "the stack of a task still refusing), with fentry/fexit where the kernel "
                        "has BTF, else kprobes; fentry / kprobe: those hooks by that method only. "
                        "The sweep hooks cost the freeze they measure (docs/record.md)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing capture")
    p.add_argument("--yes", action="store_true", help="confirm --trigger hibernate")
    p.set_defaults(func=run)
    return p


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = units.get(t[-1:], 1)
    try:
        value = int(t[:-1] if t[-1:] in units else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _sweep(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if len(items) < 2:
        raise argparse.ArgumentTypeError("give at least two settings, comma-separated")
    for t in items:
        if t.lower() != "default" and not t.endswith("%"):
            _size(t)
    return items


def _whole(lo: int, hi: int, what: str = "number", unit: str = ""):
    """An argparse type: a whole number from lo to hi."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole {what}: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}{unit}")
        return value
    return parse


_per_device = _whole(1, 64)
_freeze_timeout = _whole(1, 3_600_000, "number of milliseconds", " ms")


def _areas(values):
    if not values:
        return None
    return [a.strip() for v in values for a in v.split(",") if a.strip()]


def run(args) -> int:
    from snapprof.errors import SnapprofError
    from snapprof.record.recorder import Options, Recorder

    if (args.output is None) == (args.rotate is None):
        raise SnapprofError("give either -o FILE or --rotate DIR")
    if not 0 < args.rotate_days <= 3650:
        raise SnapprofError("--rotate-days must be more than 0 and at most 3650")

    opts = Options(output=args.output or args.rotate, trigger=args.trigger, runs=args.runs,
                   interval=args.interval, image_size=args.image_size, force=args.force,
                   save_image=args.save_image, probes=not args.no_probes,
                   areas=_areas(args.area), deadline_s=args.cycle_timeout, yes=args.yes,
                   callbacks_per_device=args.callbacks_per_device,
                   freezer_probes=args.freezer_probes, freeze_timeout_ms=args.freeze_timeout,
                   image_size_sweep=args.image_size_sweep, rotate_dir=args.rotate,
                   rotate_mb=args.rotate_mb, rotate_days=args.rotate_days, keep=args.keep)
    summary = Recorder(opts).run()
    n = len(summary.runs)
    done = sum(1 for _, s, _ in summary.runs if s == "complete")
    print(f"{summary.output}: {n} run{'s' if n != 1 else ''} recorded, {done} complete")
    if summary.interrupted and opts.trigger.strip() != "none":
        return 130
    return 0 if summary.ok else 1
