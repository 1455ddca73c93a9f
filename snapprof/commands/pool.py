"""snapprof pool: any number of captures → one Parquet dataset (incremental, idempotent)."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  snapprof pool -o fleet/ captures/                # every capture under captures/ (recursively)
  snapprof pool -o fleet/ a.snap b.snap            # add two more; pooled ones are not added again
  snapprof compare fleet/                          # kernels compared over the whole dataset
  snapprof compare fleet/ --by userspace           # or any other column (host, host_model, ...)

The dataset is a folder of Parquet files partitioned by kernel release (tables captures,
runs, metrics, not_measured, phases, tasks, devices) and a manifest that commits them; see
docs/fleet.md. A capture's id is the SHA-256 of its bytes: one already in the dataset is
counted and left out. A file that is not a capture, or a capture the reader refuses, is
skipped with a one-line reason and counted; the rest is pooled. Nothing is visible to
readers until the whole batch is written (write, rename, then the manifest by rename).

Exit status: 0 done (skips are counted, not errors), 2 bad target (not a dataset, a dataset
of another format version, not writable, busy with another pool).
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "pool", help="pool captures into a Parquet dataset (for fleets and kernel CI)",
        description="Pool hibernation captures into one Parquet dataset, partitioned by kernel "
                    "release, that snapprof compare and report read with DuckDB or Dask.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="CAPTURE_OR_FOLDER",
                   help="capture files, or folders searched recursively")
    p.add_argument("-o", "--output", required=True, metavar="DATASET",
                   help="the dataset folder (created when missing; added to when it exists)")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="worker processes reading captures (default: one per CPU)")
    p.add_argument("--quiet", action="store_true", help="no line per skipped file")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from snapprof.errors import SnapprofError
    from snapprof.fleet.writer import pool
    from snapprof.termsafe import visible

    if args.jobs is not None and args.jobs < 1:
        raise SnapprofError(f"--jobs {args.jobs}: needs at least 1")
    res = pool(args.inputs, args.output, jobs=args.jobs)
    if not args.quiet:
        for path, reason in res.skipped:
            print(f"snapprof pool: skipped {visible(path)}: {visible(reason)}", file=sys.stderr)
    rate = f", {len(res.added) / res.seconds:.1f} captures/s" if res.added and res.seconds else ""
    print(f"snapprof pool: {visible(res.dataset)}: {len(res.added)} captures added "
          f"({res.runs} runs{rate}), {len(res.already)} already pooled, "
          f"{len(res.skipped)} skipped" + ("" if res.batch else "; dataset unchanged"),
          file=sys.stderr)
    return 0
