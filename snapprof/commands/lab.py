"""snapprof lab: build Debian guest images and run commands in them under QEMU (TCG).

Standard library only at the top level; the lab modules are imported in run().
"""

from __future__ import annotations

import argparse
import sys
import time

EPILOG = """\
examples:
  snapprof lab build                         # the default guest (bookworm), if missing or stale
  snapprof lab build --distro trixie         # Debian 13 with its 6.12 kernel
  snapprof lab kernels --distro trixie       # kernel builds a trixie guest can take (trixie + backports)
  snapprof lab build --distro trixie --kernel 7.3
                                             # trixie's userspace with the newest 7.3 build
  snapprof lab run -- uname -r               # boot, run, power off; exits with CMD's status
  snapprof lab run --distro trixie -o out -- python3 -m snapprof --version
  snapprof lab run --timeout 300 --memory 3G --cpus 2 -- sh -c 'cat /sys/power/state'
  snapprof lab shell --distro trixie         # interactive root shell; exit to power off
  snapprof lab status                        # which images are built, where, what they hold
  snapprof lab compare --distro trixie --kernel 6.12 --kernel 7.3 --runs 5 -o cmp
                                             # one userspace, two kernels: record, report, compare
  snapprof lab compare --distro bookworm --distro trixie --runs 5 -o cmp
                                             # two whole systems (kernel and userspace differ)
  snapprof lab trend --distro trixie --kernels 6.12,6.16,6.17,6.18,6.19,7.0,7.1,7.2,7.3 --runs 5 -o trend
                                             # each figure against kernel version, real steps marked
  snapprof lab bisect --distro trixie --good 6.12 --bad 7.3 --fail-on 'image_pages>+5%' -o bis
                                             # the first build at which the image grew past +5 %
  snapprof lab record --distro trixie --kernel 7.3 --trigger snapshot --runs 3 -o snap
                                             # one kernel, live per-cycle lines, capture + report back
  snapprof lab record --distro trixie --trigger hibernate --runs 2 -o hib
                                             # real hibernate + resume (two boots per cycle),
                                             # both kernels' console figures joined in hib/trixie.snap

The cache lives in $SNAPPROF_LAB_DIR, else $XDG_CACHE_HOME/snapprof/lab, else
~/.cache/snapprof/lab. Inside the guest the project tree is /project (read-only, also
PYTHONPATH and the working directory) and the output folder is /output (read-write).
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "lab",
        help="build lab guests (Debian kernels + bcc) and run commands in them under QEMU",
        description="Build Debian guest images with their own kernels and bcc, and run "
        "commands in them under QEMU's software emulation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="lab_command", metavar="ACTION")
    sub.required = True

    def distro_arg(sp):
        sp.add_argument("--distro", default="bookworm", metavar="SUITE",
                        help="Debian suite of the guest (tested: bookworm, trixie; default: bookworm)")
        sp.add_argument("--kernel", metavar="VERSION",
                        help="boot this kernel build on the suite's userspace instead of the suite's own: "
                        "a release (7.3.4+deb13-amd64), a version (7.3.4) or a series (7.3: its newest "
                        "build), from the suite or its backports (see `snapprof lab kernels`)")

    def machine_args(sp):
        sp.add_argument("--memory", default="2G", help="guest memory, e.g. 2G or 1536M (default: 2G)")
        sp.add_argument("--cpus", type=int, default=2, help="guest CPUs (default: 2)")
        sp.add_argument("--append", action="append", default=[], metavar="ARGS",
                        help="extra kernel command-line arguments (repeatable)")

    def recording_args(sp):  # the guests that lab trend and lab bisect boot, one at a time
        sp.add_argument("--memory", default="2G", help="guest memory (default: 2G)")
        sp.add_argument("--cpus", type=int, default=2, help="guest CPUs (default: 2)")
        sp.add_argument("--timeout", type=float, default=1800, metavar="S",
                        help="kill a guest after S s (default: 1800)")
        sp.add_argument("--record-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `snapprof record` in the guests (repeatable)")

    b = sub.add_parser("build", help="build (or reuse) the guest image for a Debian suite",
                       description="Build the guest image if it is missing or its recipe changed.")
    distro_arg(b)
    b.add_argument("--force", action="store_true", help="rebuild even if a current image exists")

    r = sub.add_parser("run", help="boot the guest, run CMD as root, power off; exit with CMD's status",
                       description="Boot the guest's own kernel, run CMD as root, stream its output, "
                       "power off and exit with CMD's status.")
    distro_arg(r)
    machine_args(r)
    r.add_argument("--timeout", type=float, default=900, metavar="S",
                   help="kill the guest after S seconds (default: 900)")
    r.add_argument("-o", "--output", metavar="DIR",
                   help="host folder the guest sees read-write at /output (default: a new temporary folder); "
                   "the serial console log is kept there as console.log")
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...", help="the command to run in the guest")

    s = sub.add_parser("shell", help="an interactive root shell in the guest",
                       description="Boot the guest and give an interactive root shell on this terminal.")
    distro_arg(s)
    machine_args(s)
    s.add_argument("-o", "--output", metavar="DIR", help="host folder shared read-write at /output")

    c = sub.add_parser("compare", help="record kernels in their guests, report each, compare them",
                       description="For each --distro: boot its guest, run `snapprof record --runs N` "
                       "inside, bring the capture back and write its report; then compare the kernels "
                       "(DIR/compare.html, .txt, .json) and print the headline table. Guests run one "
                       "at a time so that they do not skew each other's timings.")
    c.add_argument("--distro", action="append", required=True, metavar="SUITE",
                   help="a Debian suite to record (give two or more, or one with several --kernel; "
                   "the first is the baseline)")
    c.add_argument("--kernel", action="append", default=[], metavar="VERSION",
                   help="with one --distro: a kernel build to boot on that userspace (repeatable; "
                   "the first is the baseline), e.g. --kernel 6.12 --kernel 7.3")
    c.add_argument("--runs", type=int, default=5, help="cycles recorded per kernel (default: 5)")
    c.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="folder for the captures, reports and comparison")
    c.add_argument("--memory", default="2G", help="guest memory (default: 2G)")
    c.add_argument("--cpus", type=int, default=2, help="guest CPUs (default: 2)")
    c.add_argument("--timeout", type=float, default=1800, metavar="S",
                   help="kill a guest after S seconds (default: 1800)")
    c.add_argument("--record-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `snapprof record` in the guests (repeatable), "
                   "e.g. --record-arg=--image-size=0")
    c.add_argument("--force", action="store_true", help="reuse a non-empty output folder")

    h = sub.add_parser("record", help="record cycles on one lab kernel: snapshot, pm-test:LEVEL or a real "
                       "hibernation", description="snapshot and pm-test:LEVEL: boot the guest once, run "
                       "`snapprof record --trigger T --runs N [--record-arg ...]` inside (live per-cycle "
                       "lines), bring the capture back and write its report (DIR/<image>.snap, .html). "
                       "hibernate, per cycle: boot the guest with a swap disk and resume=/dev/vdb, run "
                       "`snapprof record --trigger hibernate --yes` (the guest writes its image and powers "
                       "off), boot it again (the boot kernel reads the image and restores it; the restored "
                       "recorder stores its run), then join both boots' serial-console figures (image "
                       "written, read, times, rates) to that run. One capture: DIR/<distro>.snap.")
    distro_arg(h)
    h.add_argument("--trigger", required=True, metavar="TRIGGER",
                   help="snapshot, pm-test:LEVEL (core, processors, platform, devices, freezer) or hibernate")
    h.add_argument("--runs", type=int, default=1, help="cycles (default: 1)")
    h.add_argument("--record-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `snapprof record` in the guest (repeatable; snapshot and pm-test), "
                   "e.g. --record-arg=--image-size=0")
    h.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the capture and console logs")
    h.add_argument("--compressor", choices=["lzo", "lz4"],
                   help="hibernate.compressor=X on the kernel command line (6.9+ kernels only)")
    h.add_argument("--swap-size", default="1G", help="swap disk size (default: 1G)")
    h.add_argument("--memory", default="2G", help="guest memory (default: 2G)")
    h.add_argument("--cpus", type=int, default=2, help="guest CPUs (default: 2)")
    h.add_argument("--timeout", type=float, default=900, metavar="S",
                   help="kill a boot that has not powered off after S seconds (default: 900)")

    t = sub.add_parser("trend", help="one userspace, several kernels: each figure against kernel version",
                       description="Record each kernel build on the suite's userspace (oldest first), report "
                       "each, then chart every headline figure's median and 95 % interval against the "
                       "version and list the steps between consecutive kernels that the statistics call "
                       "real (DIR/trend.html, .txt, .json). An interrupted trend reuses the captures it has.")
    t.add_argument("--distro", required=True, metavar="SUITE", help="the userspace every kernel boots on")
    t.add_argument("--kernels", required=True, metavar="LIST",
                   help="comma-separated kernel builds, e.g. 6.12,6.16,6.17,6.18,6.19,7.0,7.1,7.2,7.3 "
                   "(a series means its newest build)")
    t.add_argument("--runs", type=int, default=5, help="cycles per kernel (default: 5; 4 or more for a verdict)")
    t.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for captures and reports")
    recording_args(t)

    bi = sub.add_parser("bisect", help="the first kernel build at which a figure moved past a threshold",
                        description="Bisect the suite's installable kernel builds from --good to --bad on its "
                        "userspace: record the middle build, compare it with the good one on the threshold "
                        "(compare --fail-on language), halve the range. A step that stays undecided after "
                        "--max-runs stops the bisection (never a guess). Resumable: captures in DIR are reused.")
    bi.add_argument("--distro", required=True, metavar="SUITE", help="the userspace every kernel boots on")
    bi.add_argument("--good", required=True, metavar="VERSION", help="a build without the change, e.g. 6.12")
    bi.add_argument("--bad", required=True, metavar="VERSION", help="a build with it, e.g. 7.3")
    bi.add_argument("--fail-on", required=True, metavar="EXPR",
                    help="the change to find, e.g. 'image_pages>+5%%' (as snapprof compare --fail-on)")
    bi.add_argument("--runs", type=int, default=5, help="cycles per build and boot (default: 5; at least 4)")
    bi.add_argument("--max-runs", type=int, default=15,
                    help="runs a build may get before its step is called undecided (default: 15)")
    bi.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for captures and the log")
    recording_args(bi)

    k = sub.add_parser("kernels", help="list the kernel builds a suite's guest can install",
                       description="Every amd64 kernel build of the suite and its backports, oldest first, "
                       "with its package version, where its packages come from, and its initramfs "
                       "generator. Reads the archive's package index (cached a day).")
    k.add_argument("--distro", default="bookworm", metavar="SUITE", help="Debian suite (default: bookworm)")
    k.add_argument("--refresh", action="store_true", help="fetch the package indices again now")

    st = sub.add_parser("status", help="list the cached guest images")
    st.add_argument("--distro", action="append", metavar="SUITE", help="only these suites")

    p.set_defaults(func=run)
    return p


def img_key(lab, folder: str) -> str | None:
    """The image key a cache folder holds (its stamp says), else the folder name."""
    import json

    try:
        return json.loads((lab / folder / "image.json").read_text()).get("distro") or folder
    except (OSError, ValueError):
        return folder


def _kernels(args) -> int:
    from snapprof.lab import archive, build
    from snapprof.termsafe import visible

    suite = build.validate_suite(args.distro)
    if args.refresh:
        for dist in archive.dists_for(suite):
            try:
                archive.load_index(dist, refresh=True)
            except Exception:  # noqa: BLE001 - a missing backports section is fine
                pass
    builds = archive.list_kernels(suite)
    own = archive.default_release(suite)
    print(f"kernel builds for a {suite} guest ({', '.join(archive.dists_for(suite))}), oldest first:")
    for b in builds:
        mark = " (the suite's own)" if b.release == own else ""
        # the archive's index is input from the network: its text is shown, never obeyed
        print(visible(f"  {b.release:26s} {b.version:22s} {b.dist:20s} {b.initramfs:15s} {b.describe()}{mark}"))
    ok = sum(b.installable for b in builds)
    print(f"{ok} of {len(builds)} installable; build one with: snapprof lab build --distro {suite} --kernel VERSION")
    return 0


def _record_one(args) -> int:
    """lab record with a trigger that keeps the guest running: one boot, capture and report."""
    from pathlib import Path

    from snapprof.errors import SnapprofError
    from snapprof.lab import build
    from snapprof.lab.compare import record_in_guest, write_report

    if args.runs < 1:
        raise SnapprofError(f"bad --runs {args.runs}: give 1 or more")
    out = Path(args.output)
    build.ensure_image(args.distro, progress=_progress)
    capture, res = record_in_guest(args.distro, args.runs, out, memory=args.memory, cpus=args.cpus,
                                   timeout=args.timeout,
                                   record_args=["--trigger", args.trigger, *args.record_arg],
                                   stream=sys.stdout)
    html = out / f"{build.slug(args.distro)}.html"
    write_report(capture, html)
    print(f"{capture}: recorded in the {args.distro} guest ({res.duration_s:.0f} s); report {html}")
    return 0


def _progress(msg: str) -> None:
    print(f"snapprof lab: {msg}", file=sys.stderr, flush=True)


def _terminated(signum, frame):
    raise KeyboardInterrupt  # unwind: stop QEMU or debootstrap, remove a partial build


def run(args) -> int:
    import signal

    from snapprof.errors import SnapprofError
    from snapprof.lab import build, host, qemu

    signal.signal(signal.SIGTERM, _terminated)

    if getattr(args, "kernel", None) and isinstance(args.kernel, str):
        args.distro = build.resolve_key(args.distro, args.kernel)

    if args.lab_command == "kernels":
        return _kernels(args)

    if args.lab_command == "bisect":
        from pathlib import Path

        from snapprof.lab.bisect import lab_bisect

        res = lab_bisect(args.distro, args.good, args.bad, args.fail_on, Path(args.output), runs=args.runs,
                         max_runs=args.max_runs, memory=args.memory, cpus=args.cpus, timeout=args.timeout,
                         record_args=args.record_arg)
        print(f"log: {Path(args.output) / 'bisect.txt'}")
        return 0 if res.outcome == "found" else 1

    if args.lab_command == "trend":
        from pathlib import Path

        from snapprof.lab.trend import lab_trend
        from snapprof.report.trend import render_text

        specs = [k.strip() for k in args.kernels.split(",") if k.strip()]
        res = lab_trend(args.distro, specs, args.runs, Path(args.output), memory=args.memory, cpus=args.cpus,
                        timeout=args.timeout, record_args=args.record_arg)
        print(render_text(res.trend, res.reports))
        print(f"{len(res.keys)} kernels in {res.seconds:.0f} s; {Path(args.output) / 'trend.html'}")
        return 0

    if args.lab_command == "build":
        t0 = time.monotonic()
        status = build.image_status(build.validate_distro(args.distro))
        img = build.ensure_image(args.distro, progress=_progress, force=args.force)
        if status == "ready" and not args.force:
            _progress(f"{img.distro} image is up to date ({img.dir}): kernel {img.kernel_release}, "
                      f"bcc {img.bcc_version} ({time.monotonic() - t0:.1f} s)")
        return 0

    if args.lab_command == "compare":
        from pathlib import Path

        from snapprof.termsafe import visible, visible_text

        from snapprof.lab.compare import headline_table, lab_compare

        targets = args.distro
        if args.kernel:
            if len(args.distro) != 1:
                raise SnapprofError("--kernel goes with one --distro (the userspace every kernel boots on); "
                                    f"got {len(args.distro)}")
            from snapprof.lab import archive

            builds = archive.list_kernels(build.validate_suite(args.distro[0]))
            targets = [build.resolve_key(args.distro[0], k, builds=builds) for k in args.kernel]
        kernels, cmp = lab_compare(targets, args.runs, Path(args.output), memory=args.memory,
                                   cpus=args.cpus, timeout=args.timeout, record_args=args.record_arg,
                                   force=args.force)
        # capture text (meta, kernel releases): controls shown, not obeyed
        print(f"\n{visible(cmp.userspace.get('sentence', ''))}")
        print(f"Headline: median [95 % CI] over complete runs; change vs {visible(cmp.baseline)}")
        print(visible_text(headline_table(cmp)))
        for k in kernels:
            print(f"  {k.distro}: capture {k.capture}, report {k.report}")
        print(f"  comparison: {Path(args.output) / 'compare.html'}")
        return 0

    if args.lab_command == "record":
        from pathlib import Path

        from snapprof.lab.hibernate import lab_hibernate
        from snapprof.record.triggers import parse_trigger

        kind, _level = parse_trigger(args.trigger)
        if kind == "none":
            raise SnapprofError("--trigger none waits for cycles someone else starts: nobody does in a lab "
                                "guest; use snapshot, pm-test:LEVEL or hibernate")
        if kind != "hibernate":
            return _record_one(args)
        if args.record_arg:
            raise SnapprofError("--record-arg goes with snapshot and pm-test (a real hibernation records "
                                "with the lab's own arguments)")

        capture, cycles = lab_hibernate(args.distro, args.runs, Path(args.output),
                                        compressor=args.compressor, swap_size=args.swap_size,
                                        memory=args.memory, cpus=args.cpus, timeout=args.timeout)
        bad = [c for c in cycles if c.status != "complete"]
        print(f"{capture}: {len(cycles)} cycle(s), {len(cycles) - len(bad)} complete")
        if bad:
            raise SnapprofError(f"cycle {bad[0].number} {bad[0].status}: {bad[0].error}")
        return 0

    if args.lab_command == "status":
        lab = host.lab_dir()
        names = args.distro
        if not names:
            cached = {p.name for p in lab.iterdir() if p.is_dir() and not p.name.startswith(".")} \
                if lab.is_dir() else set()
            names = sorted({build.split_key(n)[0] + (":" + build.split_key(n)[1] if build.split_key(n)[1] else "")
                            for n in (img_key(lab, c) for c in cached) if n} | set(build.TESTED_DISTROS))
        print(f"lab cache: {lab}")
        for name in names:
            st = build.image_status(name, lab)
            img = build.load_image(name, lab)
            line = f"  {name:26s} {st:8s}"
            if img:
                line += (f" kernel {img.kernel_release}, bcc {img.bcc_version}, python {img.python_version}, "
                         f"built {img.meta.get('built_at', '?')} in {img.meta.get('build_seconds', '?')} s")
            print(line)
        return 0

    if args.lab_command == "shell":
        if not sys.stdin.isatty():
            raise SnapprofError("lab shell needs a terminal; use `snapprof lab run -- CMD` from scripts")
        res = qemu.run_guest(args.distro, [], args.output, memory=args.memory, cpus=args.cpus, timeout=None,
                             extra_append=[a for x in args.append for a in x.split()], interactive=True,
                             progress=_progress)
        return res.check().returncode

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise SnapprofError("no command to run in the guest: put it after --, e.g. snapprof lab run -- uname -r")
    res = qemu.run_guest(args.distro, cmd, args.output, memory=args.memory, cpus=args.cpus, timeout=args.timeout,
                         extra_append=[a for x in args.append for a in x.split()], stream=sys.stdout,
                         progress=_progress)
    res.check()
    _progress(f"{res.distro} ({res.kernel_release}): exit {res.returncode}; booted to CMD in {res.boot_s:.1f} s, "
              f"{res.duration_s:.1f} s in all; output folder {res.output_dir} (console.log there)")
    return res.returncode
