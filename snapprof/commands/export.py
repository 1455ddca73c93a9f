"""snapprof export: one capture → a Perfetto/Chrome trace (JSON) or one CSV per table."""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = """\
examples:
  snapprof export run.snap --format perfetto            # writes run.json beside the capture
  snapprof export run.snap --format perfetto -o t.json  # choose the file, open it in ui.perfetto.dev
  snapprof export run.snap --format csv                 # writes run-csv/meta.csv, runs.csv, ...
  snapprof export run.snap --format csv -o tables/ --force

perfetto: Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing). One process per run with
tracks "phases", "freezer" and "devices" (overlapping asynchronous device callbacks get extra
"devices async N" lanes) and a "pages" counter. Timestamps are µs from the capture's first
event. The copy phase's length is the copy_window_ms metric (clocks stop during the copy).
csv: one file per capture table (meta, probes, runs, metrics, not_measured, phases, tasks,
devices, kmsg, events). A figure that was not measured is absent (no row, empty cell), never 0.
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="export one capture (Perfetto trace JSON or CSV tables)",
        description="Export a hibernation capture for other tools: a trace the Perfetto UI "
                    "opens, or one CSV file per table.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture", metavar="CAPTURE", help="capture file written by snapprof record")
    p.add_argument("--format", choices=("perfetto", "csv"), required=True)
    p.add_argument("-o", "--output", metavar="PATH",
                   help="perfetto: the JSON file (default CAPTURE with .json); csv: the "
                        "directory (default <capture stem>-csv/)")
    p.add_argument("--force", action="store_true", help="replace existing output")
    p.set_defaults(func=run)
    return p


def _write(path: str, text: str) -> None:
    from snapprof.errors import SnapprofError

    tmp = path + ".new"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise SnapprofError(f"cannot write {path}: {exc.strerror}") from None


def run(args) -> int:
    from snapprof.errors import SnapprofError

    stem = os.path.splitext(args.capture)[0]
    out = args.output or (stem + ".json" if args.format == "perfetto" else stem + "-csv")
    if os.path.realpath(out) == os.path.realpath(args.capture):
        raise SnapprofError(f"{out} is the capture itself; choose another -o")
    if args.format == "perfetto":
        if os.path.exists(out) and not args.force:
            raise SnapprofError(f"{out} exists; use --force to replace it")
    elif os.path.exists(out):
        if not os.path.isdir(out):
            raise SnapprofError(f"{out} exists and is not a directory")
        if os.listdir(out) and not args.force:
            raise SnapprofError(f"{out} is not empty; use --force to replace its files")

    from snapprof.analysis.frames import load_capture

    frames = load_capture(args.capture)
    if args.format == "perfetto":
        import json

        from snapprof.export.perfetto import build_trace

        trace = build_trace(frames)
        _write(out, json.dumps(trace, ensure_ascii=False, allow_nan=False))
        print(f"snapprof export: wrote {out} ({len(trace['traceEvents'])} trace events, "
              f"{len(frames.runs)} runs)", file=sys.stderr)
        return 0

    from snapprof.export.csv import render_csv, tables

    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise SnapprofError(f"cannot create {out}: {exc.strerror}") from None
    written = tables(frames)
    for name, table in written.items():
        _write(os.path.join(out, name + ".csv"), render_csv(table))
    print(f"snapprof export: wrote {len(written)} CSV files to {out}", file=sys.stderr)
    return 0
