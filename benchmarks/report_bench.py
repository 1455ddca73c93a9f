"""How long `snapprof report` takes on a capture of 1,000 cycles, and its peak memory.

Builds a capture of RUNS runs by replicating the runs of a real capture (cyclically, with
their recorded figures unchanged; see compare_bench.replicate), then runs
`python -m snapprof report` on it once per format in a child process and prints the wall
time, the CPU time and the child's peak RSS. Target (issue 4): under 10 s and under 1 GiB for the HTML
report on a 2-core machine. Not a test: nothing is asserted.

    python benchmarks/report_bench.py                          # source: tests/data/*.snap
    python benchmarks/report_bench.py --source run.snap --runs 1000 --formats html,text,json
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_bench import replicate  # noqa: E402


def timed_child(cmd: list[str]) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS MiB, exit status) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace").strip()
    proc.stderr.close()
    if proc.returncode:
        print(f"  failed ({proc.returncode}): {err}", file=sys.stderr)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", help="real capture to replicate (default: the first of "
                                     "tests/data/*.snap with complete runs)")
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--formats", default="html,text,json")
    args = ap.parse_args()
    if args.source:
        source = Path(args.source)
    else:
        found = sorted(glob.glob(str(ROOT / "tests/data/*.snap")))
        if not found:
            print("no source capture: record one into tests/data/ or pass --source",
                  file=sys.stderr)
            return 2
        source = Path(found[0])

    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        big = Path(tmp) / "big.snap"
        t0 = time.perf_counter()
        replicate(source, big, args.runs)
        print(f"source {source.name}: built {args.runs} runs in {time.perf_counter() - t0:.1f} s "
              f"({big.stat().st_size / 2**20:.1f} MiB capture)")
        load = os.getloadavg()[0]
        print(f"load average {load:.1f} on {os.cpu_count()} CPUs (wall time grows with it; "
              "CPU time does not)")
        print(f"{'format':<7} {'wall':>8} {'CPU':>8} {'peak RSS':>10} {'output':>10}")
        for fmt in args.formats.split(","):
            out = Path(tmp) / f"report.{'txt' if fmt == 'text' else fmt}"
            wall, cpu, rss, rc = timed_child([sys.executable, "-m", "snapprof", "report", str(big),
                                         "--format", fmt, "-o", str(out), "--force"])
            size = f"{out.stat().st_size / 2**20:.2f} MiB" if out.exists() else "-"
            print(f"{fmt:<7} {wall:>7.2f}s {cpu:>7.2f}s {rss:>7.0f} MiB {size:>10}"
                  + ("" if rc == 0 else "  FAILED"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
