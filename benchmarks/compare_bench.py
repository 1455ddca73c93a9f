"""How long `snapprof compare` takes on many captures, and how much memory it needs.

Builds CAPTURES captures of RUNS runs each by replicating real captures (every run of a
source capture is copied, cyclically, until the new capture has RUNS runs; the figures
are the recorded ones, unchanged), then times the stages of `snapprof compare` on them:
loading the frames, the statistics, the text and HTML output. Prints wall time per stage
and the peak RSS of this process. Not a test: no assertion on time.

    python benchmarks/compare_bench.py                      # sources: tests/data/*.snap
    python benchmarks/compare_bench.py --html --source tests/data/bookworm-6.1-snapshot.snap \
        --source tests/data/trixie-6.12-snapshot.snap     # the two snapshot captures, 2 labels
    python benchmarks/compare_bench.py --source a.snap --source b.snap --captures 50 --runs 20
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snapprof.capture import COLUMNS, CaptureReader, CaptureWriter, Run  # noqa: E402


# `snapprof compare` through its command module (argparse as in snapprof.cli)
CLI = """
import argparse, sys
from snapprof.commands import compare
p = argparse.ArgumentParser(prog="snapprof")
compare.register(p.add_subparsers(dest="command"))
args = p.parse_args(["compare", *sys.argv[1:]])
sys.exit(args.func(args))
"""


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
    ap.add_argument("--labels", type=int, default=0,
                    help="spread the captures over this many labels (default: one label per "
                         "kernel release, i.e. pooled)")
    args = ap.parse_args()
    sources = [Path(s) for s in (args.source or sorted(glob.glob(str(ROOT / "tests/data/*.snap"))))]
    if not sources:
        print("no source captures: record some (tests/data/*.snap) or pass --source", file=sys.stderr)
        return 2

    from snapprof.analysis.compare import compare, group_captures, load_captures
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

        stages = []

        def cpu() -> float:  # this process and its finished children (the loader's workers)
            me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
            return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

        def timed(name, fn):
            w0, c0 = time.perf_counter(), cpu()
            result = fn()
            stages.append((name, time.perf_counter() - w0, cpu() - c0))
            return result

        frames = timed("load frames", lambda: load_captures(paths, for_compare=True))
        labels = ([f"L{i % args.labels:02d}" for i in range(len(frames))] if args.labels else None)
        cmp = timed("statistics", lambda: compare(group_captures(frames, labels)))
        text = timed("text + json", lambda: (render_text(cmp), render_json(cmp))[0])
        html = None
        if args.html:
            from snapprof.report.compare_html import render_html
            html = timed("html", lambda: render_html(cmp))

        # the whole command in a fresh process: imports, loading, statistics and HTML
        out = Path(tmp) / "compare.html"
        w0 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        label_args = [a for lab in labels for a in ("--label", lab)] if labels else []
        subprocess.run([sys.executable, "-c", CLI, *map(str, paths), *label_args, "-o", str(out)],
                       check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        t_cli = time.perf_counter() - w0
        cpu_cli = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        rss_cli = after.ru_maxrss / 1024

    groups = ", ".join(f"{lab}: {g.n_runs} runs" for lab, g in list(cmp.groups.items())[:4])
    if len(cmp.groups) > 4:
        groups += f", … ({len(cmp.groups)} labels)"
    print(f"sources: {', '.join(s.name for s in sources)}")
    print(f"captures: {args.captures} x {args.runs} runs ({size / 2**20:.1f} MiB; built in {t_build:.1f} s)")
    print(f"labels: {groups}")
    print(f"figures compared: {len(cmp.diffs)} rows, {len(cmp.not_comparable)} not comparable")
    print(f"host load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          "(wall time suffers when other work runs; CPU time is this process's and its workers')")
    print(f"{'stage':<12} {'wall s':>7} {'cpu s':>7}")
    for name, wall, cpu_s in stages:
        print(f"{name:<12} {wall:7.2f} {cpu_s:7.2f}")
    print(f"{'total':<12} {sum(s[1] for s in stages):7.2f} {sum(s[2] for s in stages):7.2f}")
    if html is not None:
        print(f"html size: {len(html) / 2**20:.1f} MiB; text: {len(text.splitlines())} lines")
    print(f"peak RSS (in-process stages): {peak_rss_mib():.0f} MiB (after building inputs: {rss_before:.0f} MiB)")
    print(f"end to end, new process, -o compare.html: wall {t_cli:.2f} s, cpu {cpu_cli:.2f} s, "
          f"peak RSS {rss_cli:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
