"""How long `snapprof compare` takes on many captures, and how much memory it needs.

Builds CAPTURES captures of RUNS runs each by replicating real captures (every run of a
source capture is copied, cyclically, until the new capture has RUNS runs; the figures
are the recorded ones, unchanged), then times the stages of `snapprof compare` on them:
loading the frames, the statistics, the text and HTML output. Prints wall time per stage
and the peak RSS of this process. Not a test: no assertion on time.

    python benchmarks/compare_bench.py                      # sources: tests/data/*.snap
    python benchmarks/compare_bench.py --source a.snap --source b.snap --captures 50 --runs 20
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snapprof.capture import COLUMNS, CaptureReader, CaptureWriter, Run  # noqa: E402


def replicate(source: Path, dest: Path, runs: int) -> None:
    """dest: a capture with source's meta and probes and ``runs`` runs copied from it."""
    with CaptureReader(source) as r:
        meta, probes, src_runs = r.meta(), r.probes(), r.runs()
        tables = {t: r.table(t) for t in COLUMNS}
    if not src_runs:
        raise SystemExit(f"{source}: no runs to replicate")
    by_run = {t: {} for t in COLUMNS}
    for t, rows in tables.items():
        for row in rows:
            by_run[t].setdefault(row["run_id"], []).append(
                tuple(row[c] for c in COLUMNS[t] if c != "run_id"))
    with CaptureWriter(dest, force=True) as w:
        w.set_meta(meta)
        w.set_probes([(p["name"], p["area"], p["target"], p["attached"], p["reason"]) for p in probes])
        for i in range(runs):
            src = src_runs[i % len(src_runs)]
            run = Run(trigger=src["trigger"], status=src["status"], error=src["error"],
                      started_ns=src["started_ns"], ended_ns=src["ended_ns"],
                      started_wall=src["started_wall"], ringbuf_drops=src["ringbuf_drops"])
            for t in COLUMNS:
                setattr(run, t, list(by_run[t].get(src["run_id"], [])))
            w.add_run(run)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", action="append", help="real capture(s) to replicate "
                    "(default: tests/data/*.snap)")
    ap.add_argument("--captures", type=int, default=50)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--html", action="store_true", help="also time the HTML report")
    args = ap.parse_args()
    sources = [Path(s) for s in (args.source or sorted(glob.glob(str(ROOT / "tests/data/*.snap"))))]
    if not sources:
        print("no source captures: record some (tests/data/*.snap) or pass --source", file=sys.stderr)
        return 2

    from snapprof.analysis.compare import compare, group_captures
    from snapprof.commands.compare import load_all
    from snapprof.report.compare_text import render_json, render_text

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = []
        for i in range(args.captures):
            src = sources[i % len(sources)]
            dest = Path(tmp) / f"{i:03d}-{src.stem}.snap"
            replicate(src, dest, args.runs)
            paths.append(dest)
        t_build = time.perf_counter() - t0
        size = sum(os.path.getsize(p) for p in paths)
        rss_before = peak_rss_mib()

        t0 = time.perf_counter()
        frames = load_all([str(p) for p in paths])
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        cmp = compare(group_captures(frames))
        t_stats = time.perf_counter() - t0
        t0 = time.perf_counter()
        text = render_text(cmp)
        render_json(cmp)
        t_text = time.perf_counter() - t0
        t_html = None
        if args.html:
            from snapprof.report.compare_html import render_html
            t0 = time.perf_counter()
            html = render_html(cmp)
            t_html = time.perf_counter() - t0

    groups = ", ".join(f"{lab}: {g.n_runs} runs" for lab, g in cmp.groups.items())
    print(f"sources: {', '.join(s.name for s in sources)}")
    print(f"captures: {args.captures} x {args.runs} runs ({size / 2**20:.1f} MiB; built in {t_build:.1f} s)")
    print(f"labels: {groups}")
    print(f"figures compared: {len(cmp.diffs)} rows, {len(cmp.not_comparable)} not comparable")
    print(f"load frames : {t_load:6.2f} s")
    print(f"statistics  : {t_stats:6.2f} s")
    print(f"text + json : {t_text:6.2f} s ({len(text.splitlines())} lines)")
    if t_html is not None:
        print(f"html        : {t_html:6.2f} s ({len(html) / 2**20:.1f} MiB)")
    total = t_load + t_stats + t_text + (t_html or 0)
    print(f"total       : {total:6.2f} s (compare itself, without building the inputs)")
    print(f"peak RSS    : {peak_rss_mib():.0f} MiB (after building inputs: {rss_before:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
