"""snapprof report: one capture → a self-contained HTML page, a terminal summary, or JSON."""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = """\
examples:
  snapprof report run.snap                       # writes run.html beside the capture
  snapprof report run.snap -o report.html        # choose the file
  snapprof report run.snap --format text         # aligned tables on stdout
  snapprof report run.snap --format json -o -    # JSON on stdout, for scripts
  snapprof report fleet/ --format text           # a dataset (snapprof pool): statistics per kernel
  snapprof report fleet/ --by host_model --format json -o fleet.json
  snapprof report fleet/ -o fleet.html               # the same as one self-contained page

The HTML file is self-contained (CSS inline, figures as inline SVG, no script) and makes no
network request. Statistics are over the complete runs; failed and incomplete runs are
listed as such. A figure that was not measured is shown as "not measured" with the reason,
never as 0. Every figure names its method (probe, tracepoint, kernel-log, sleep-time, ...).
"""

SUFFIX_FORMATS = {".html": "html", ".htm": "html", ".json": "json", ".txt": "text"}


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="report one capture (HTML, text or JSON)",
        description="Report a hibernation capture: phases, freezer, memory, devices, image "
                    "I/O and the kernel's own figures, with their spread across runs.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture", metavar="CAPTURE",
                   help="capture file written by snapprof record, or a dataset made by "
                        "snapprof pool (text and JSON: per label, the figures' statistics)")
    fleet = p.add_argument_group("a dataset (snapprof pool; docs/fleet.md)")
    fleet.add_argument("--by", default="kernel", metavar="COLUMN",
                       help="labels: kernel (default), userspace, host, host_model, compressor, ...")
    fleet.add_argument("--only", action="append", metavar="LABEL", help="these labels only (repeatable)")
    fleet.add_argument("--engine", choices=("duckdb", "dask"), default="duckdb")
    fleet.add_argument("--scheduler", metavar="ADDRESS", help="--engine dask: tcp://HOST:8786")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="output file, '-' for stdout (default: CAPTURE with .html for HTML, "
                        "stdout for text and JSON)")
    p.add_argument("--format", choices=("html", "text", "json"),
                   help="default: from the -o suffix (.html, .json, .txt), else html")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


def _format(args) -> str:
    if args.format:
        return args.format
    if args.output and args.output != "-":
        return SUFFIX_FORMATS.get(os.path.splitext(args.output)[1].lower(), "html")
    return "html"


def _output(args, fmt: str) -> str | None:
    """The file to write, or None for stdout."""
    if args.output == "-":
        return None
    if args.output:
        return args.output
    if fmt == "html":
        return os.path.splitext(args.capture)[0] + ".html"
    return None


def _run_dataset(args) -> int:
    from snapprof.cmdio import check_output, write_atomic
    from snapprof.errors import SnapprofError
    from snapprof.termsafe import visible

    fmt = args.format or ("json" if (args.output or "").lower().endswith(".json") else "text")
    if not args.format and (args.output or "").lower().endswith((".html", ".htm")):
        fmt = "html"
    out_path = args.output if args.output and args.output != "-" else None
    if fmt == "html" and out_path is None:
        raise SnapprofError("a dataset's HTML report needs -o FILE.html (text and JSON go to "
                            "stdout)")
    if out_path:
        check_output(out_path, [args.capture], args.force)
    from snapprof.fleet.open import open_engine
    from snapprof.fleet.summary import fleet_summary, render_html, render_json, render_text

    eng = open_engine(args.capture, args.engine, args.scheduler)
    try:
        model = fleet_summary(eng, by=args.by, only=args.only)
    finally:
        eng.close()
    text = {"json": render_json, "html": render_html}.get(fmt, render_text)(model)
    if out_path is None:
        sys.stdout.write(text)
        return 0
    write_atomic(out_path, text)
    print(f"snapprof report: wrote {visible(out_path)} ({fmt}; {len(model['labels'])} labels)",
          file=sys.stderr)
    return 0


def run(args) -> int:
    from snapprof.cmdio import check_output, print_warnings, write_atomic
    from snapprof.commands.compare import is_dataset
    from snapprof.termsafe import visible, visible_text

    if is_dataset(args.capture):
        return _run_dataset(args)
    fmt = _format(args)
    out_path = _output(args, fmt)
    if out_path:
        check_output(out_path, [args.capture], args.force)

    from snapprof.analysis.frames import load_capture
    from snapprof.report.model import build_model

    frames = load_capture(args.capture)
    print_warnings("report", [args.capture], [frames])
    model = build_model(frames)
    if fmt == "html":
        from snapprof.report.html import render_html
        text = render_html(model)
    elif fmt == "json":
        from snapprof.report.json import render_json
        text = render_json(model)
    else:
        from snapprof.report.text import render_text
        text = render_text(model)

    if out_path is None:
        # stdout may be a terminal: HTML keeps capture text exact only in files (text and
        # JSON are terminal-safe already)
        sys.stdout.write(visible_text(text) if fmt == "html" else text)
        return 0
    write_atomic(out_path, text)
    h = model["header"]["runs_by_status"]
    print(f"snapprof report: wrote {visible(out_path)} ({fmt}; {h['complete']} complete, "
          f"{h['failed']} failed, {h['incomplete']} incomplete runs)", file=sys.stderr)
    return 0
