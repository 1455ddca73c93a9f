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
  snapprof export run.snap --format kcidb               # writes run-kcidb.json (KernelCI KCIDB v5.3)

perfetto: Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing). One process per run with
tracks "phases", "freezer" and "devices" (overlapping asynchronous device callbacks get extra
"devices async N" lanes) and a "pages" counter. Timestamps are µs from the capture's first
event. The copy phase's length is the copy_window_ms metric (clocks stop during the copy).
csv: one file per capture table (meta, probes, runs, metrics, not_measured, phases, tasks,
devices, kmsg, events). A figure that was not measured is absent (no row, empty cell), never 0.
kcidb: KernelCI KCIDB I/O v5.3 test records (validated with kcidb-io before writing), one per
headline figure per run: status PASS/SKIP (not measured: no number, the reason in misc)/FAIL/
ERROR, number {value, unit}, duration (s), misc with the capture id (SHA-256 of the file).
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="export one capture (Perfetto trace JSON or CSV tables)",
        description="Export a hibernation capture for other tools: a trace the Perfetto UI "
                    "opens, or one CSV file per table.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture", metavar="CAPTURE", help="capture file written by snapprof record")
    p.add_argument("--format", choices=("perfetto", "csv", "kcidb"), required=True)
    p.add_argument("-o", "--output", metavar="PATH",
                   help="perfetto: the JSON file (default CAPTURE with .json); csv: the "
                        "directory (default <capture stem>-csv/); kcidb: the JSON file (default "
                        "<capture stem>-kcidb.json)")
    p.add_argument("--force", action="store_true", help="replace existing output")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from snapprof.cmdio import check_output, print_warnings, refuse_input, write_atomic
    from snapprof.errors import SnapprofError
    from snapprof.termsafe import visible

    stem = os.path.splitext(args.capture)[0]
    out = args.output or {"perfetto": stem + ".json", "kcidb": stem + "-kcidb.json"}.get(
        args.format, stem + "-csv")
    if args.format in ("perfetto", "kcidb"):
        check_output(out, [args.capture], args.force)
    else:
        refuse_input(out, [args.capture])
        if os.path.exists(out):
            if not os.path.isdir(out):
                raise SnapprofError(f"{out} exists and is not a directory")
            if os.listdir(out) and not args.force:
                raise SnapprofError(f"{out} is not empty; use --force to replace its files")

    from snapprof.analysis.frames import load_capture

    frames = load_capture(args.capture)
    print_warnings("export", [args.capture], [frames])
    if args.format == "kcidb":
        from snapprof.export.kcidb import build_records, render_records
        from snapprof.fleet.writer import content_id

        doc = build_records(frames, content_id(args.capture))
        write_atomic(out, render_records(doc))
        print(f"snapprof export: wrote {visible(out)} ({len(doc['tests'])} KCIDB test records, "
              f"schema v{doc['version']['major']}.{doc['version']['minor']})", file=sys.stderr)
        return 0
    if args.format == "perfetto":
        from snapprof.export.perfetto import build_trace, render_trace

        trace = build_trace(frames)
        write_atomic(out, render_trace(trace))
        print(f"snapprof export: wrote {visible(out)} ({len(trace['traceEvents'])} trace events, "
              f"{len(frames.runs)} runs)", file=sys.stderr)
        return 0

    from snapprof.export.csv import render_csv, tables

    # every file is checked and rendered before anything is written
    texts = {os.path.join(out, name + ".csv"): render_csv(table)
             for name, table in tables(frames).items()}
    for path in texts:
        check_output(path, [args.capture], force=True)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise SnapprofError(f"cannot create {out}: {exc.strerror}") from None
    for path, text in texts.items():
        write_atomic(path, text)
    print(f"snapprof export: wrote {len(texts)} CSV files to {visible(out)}", file=sys.stderr)
    return 0
