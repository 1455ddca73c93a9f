"""snapprof compare: kernels side by side, with statistics fit for a handful of runs."""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = """\
examples:
  snapprof compare a.snap b.snap                     # text on stdout; labels = kernel releases
  snapprof compare a.snap b.snap --brief            # only the header and the real changes
  snapprof compare a.snap b.snap -o compare.html     # self-contained HTML with plots
  snapprof compare old1.snap old2.snap new.snap --label old --label old --label new
                                                     # pool captures under one label
  snapprof compare base.snap cand.snap --format json -o compare.json
  snapprof compare base.snap cand.snap --fail-on 'image_pages>+5%' --fail-on 'freeze_user_ms>+10%'
                                                     # exit 1 on a confident regression (CI gate)
  snapprof compare fleet/                            # a dataset (snapprof pool): every kernel in it
  snapprof compare fleet/ --only 6.1.0-50-amd64 --only 6.12.117+deb13-amd64
  snapprof compare fleet/ --by userspace --engine dask --scheduler tcp://10.0.0.5:8786

The first label is the baseline; every other label is compared against it. Captures with
the same label (default: the kernel release in the capture) are pooled; captures of one
release whose images were written with different compressors (lzo, lz4) get it in their
default label ("6.12.117+deb13-amd64 lz4") and are not pooled. Only complete runs
count. change = median(label) - median(baseline); its interval is the exact 95 % (--level)
distribution-free interval of the shift (Hodges-Lehmann), p the Mann-Whitney U test. A
verdict needs the interval to exclude 0 and p <= 0.05; with too few runs there is none.

--fail-on NAME>VALUE[%] or NAME<VALUE[%]: NAME is a metric (image_pages) or a phase
(freeze_user, its duration in ms); VALUE is a signed number in the metric's unit, or a % of
the baseline median. '>' is crossed when the whole 95 % interval of the change lies above
VALUE, '<' when it lies below: a threshold trips only on a change shown with confidence.
Exit status: 0 ok, 1 a threshold was crossed, 2 bad input. A threshold that cannot be
judged (not measured on one side, too few runs) is reported and does not trip.
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare", help="compare captures from different kernels (statistics, verdicts, HTML)",
        description="Compare hibernation captures: per-kernel medians with 95 % intervals, "
                    "the change against the baseline (the first label) with its interval, "
                    "a Mann-Whitney test and a verdict.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("captures", nargs="+", metavar="CAPTURE",
                   help="capture files (.snap), or one dataset made by snapprof pool (a folder, "
                        "or an fsspec URL such as s3://bucket/fleet with --engine dask)")
    fleet = p.add_argument_group("a dataset (snapprof pool; docs/fleet.md)")
    fleet.add_argument("--by", default="kernel", metavar="COLUMN",
                       help="group the dataset's captures by kernel (default), kernel_release, "
                            "userspace, distro, host, host_model, machine, compressor, trigger, "
                            "bcc, python, libc, snapprof or batch")
    fleet.add_argument("--only", action="append", metavar="LABEL",
                       help="compare these labels only, the first as the baseline (repeatable; "
                            "default: every label, in pool order)")
    fleet.add_argument("--engine", choices=("duckdb", "dask"), default="duckdb",
                       help="duckdb: embedded, one machine (default); dask: a Dask cluster")
    fleet.add_argument("--scheduler", metavar="ADDRESS",
                       help="--engine dask: the scheduler to use (tcp://HOST:8786); default: a "
                            "local cluster of --workers processes")
    fleet.add_argument("--workers", type=int, default=2, metavar="N",
                       help="--engine dask without --scheduler: local workers (default 2)")
    p.add_argument("--label", action="append", metavar="NAME",
                   help="label of each capture, in order (repeat once per capture); captures "
                        "with the same label are pooled; default: the kernel release, plus "
                        "the image compressor when captures of one release differ in it")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write here (default: stdout); a .html name selects --format html")
    p.add_argument("--format", choices=("html", "text", "json"),
                   help="output format (default: html for -o *.html, else text)")
    p.add_argument("--fail-on", action="append", default=[], metavar="EXPR",
                   help="exit 1 when EXPR is crossed with confidence, e.g. 'image_pages>+5%%', "
                        "'copy_window_ms>+50', 'write_mbps<-10%%' (repeatable)")
    p.add_argument("--level", type=_level, default=0.95, metavar="P",
                   help="confidence level of the intervals and verdicts (default 0.95; with 3 runs "
                        "per kernel only 0.90 or less can give a verdict)")
    p.add_argument("--brief", action="store_true",
                   help="text only: print the header and the summary (one line per real "
                        "change), not the full tables")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a confidence level between 0.5 and 1 "
                                         "(e.g. 0.95)")
    return value


def _format(args) -> str:
    if args.format:
        return args.format
    if args.output and args.output.lower().endswith((".html", ".htm")):
        return "html"
    return "text"


def is_dataset(path: str) -> bool:
    """A dataset (snapprof pool) rather than a capture: a folder with its manifest, or a URL."""
    return "://" in path or os.path.isfile(os.path.join(path, "snapprof-dataset.json"))


def _check_dataset(args) -> None:
    from snapprof.errors import SnapprofError

    if len(args.captures) != 1:
        raise SnapprofError("give one dataset, or capture files, not both")
    if args.label is not None:
        raise SnapprofError("--label names capture files; a dataset's captures are grouped with "
                            "--by and chosen with --only")


def _check_inputs(args) -> None:
    from snapprof.errors import SnapprofError

    if any(is_dataset(p) for p in args.captures):
        _check_dataset(args)
    elif args.by != "kernel" or args.only or args.engine != "duckdb" or args.scheduler:
        raise SnapprofError("--by, --only, --engine and --scheduler are for a dataset "
                            "(snapprof pool); capture files are labelled with --label")
    elif len(args.captures) < 2:
        raise SnapprofError(f"compare needs at least two captures (got {len(args.captures)}: "
                            f"{args.captures[0]})")
    seen = {}
    for path in args.captures:
        try:
            key = os.path.realpath(path)
        except OSError:
            key = path
        if key in seen:
            raise SnapprofError(f"{path} is given twice (as {seen[key]} too): its runs would "
                                "count twice")
        seen[key] = path
    if args.label is not None and len(args.label) != len(args.captures):
        raise SnapprofError(f"--label given {len(args.label)} times for {len(args.captures)} "
                            "captures: give one --label per capture, in order")
    fmt = _format(args)
    if getattr(args, "brief", False) and fmt != "text":
        raise SnapprofError(f"--brief is for the text output, not {fmt}: the HTML page and the "
                            "JSON lead with the summary already (JSON: real_changes)")
    if fmt == "html" and not args.output:
        raise SnapprofError("--format html needs -o FILE")
    if args.output and args.output != "-":
        from snapprof.cmdio import check_output

        check_output(args.output, args.captures, args.force)


def run(args) -> int:
    from snapprof.cmdio import print_warnings, write_atomic
    from snapprof.termsafe import visible, visible_text

    _check_inputs(args)
    from snapprof.analysis.compare import (check_thresholds, compare, group_captures, load_captures,
                                           parse_threshold)

    thresholds = [parse_threshold(e) for e in args.fail_on]  # bad syntax fails before any work
    fmt = _format(args)
    if is_dataset(args.captures[0]):
        from snapprof.fleet.open import compare_dataset

        cmp = compare_dataset(args.captures[0], by=args.by, only=args.only, level=args.level,
                              engine=args.engine, scheduler=args.scheduler,
                              workers=args.workers, wide=fmt == "html")
    else:
        frames = load_captures(args.captures, for_compare=True)
        print_warnings("compare", args.captures, frames)
        cmp = compare(group_captures(frames, args.label), level=args.level)
    results = check_thresholds(cmp, thresholds)

    if fmt == "html":
        from snapprof.report.compare_html import render_html
        out = render_html(cmp, results)
    elif fmt == "json":
        from snapprof.report.compare_text import render_json
        out = render_json(cmp, results)
    else:
        from snapprof.report.compare_text import render_text
        out = render_text(cmp, results, brief=args.brief)

    if args.output and args.output != "-":
        write_atomic(args.output, out)
        print(f"snapprof compare: wrote {visible(args.output)} ({fmt}; baseline "
              f"{visible(cmp.baseline)})", file=sys.stderr)
    else:
        # stdout may be a terminal: HTML keeps capture text exact only in files (text and
        # JSON are terminal-safe already)
        sys.stdout.write(visible_text(out) if fmt == "html" else out)

    crossed = [r for r in results if r.status == "crossed"]
    for r in results:
        if r.status != "not crossed":
            print(visible(f"snapprof compare: --fail-on {r.threshold.expr} [{r.label} vs "
                          f"{cmp.baseline}]: {r.status}: {r.detail}"), file=sys.stderr)
    return 1 if crossed else 0
