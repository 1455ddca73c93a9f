"""Fleet scale: pooling rate, and a pooled comparison of two kernels on DuckDB and on Dask.

Builds CAPTURES captures of RUNS runs each by replicating two real captures (the 6.1 and
6.12 snapshot captures of tests/data, every run copied cyclically as in
compare_bench.replicate), alternating kernels; each copy gets its own hostname in its meta,
so every capture's content hash differs. Then:

1. ``snapprof pool`` of the folder: wall time, captures/s;
2. ``snapprof compare DATASET --format json`` (DuckDB) in a child process: wall time, peak RSS;
3. the same comparison on a local Dask cluster of 2 workers (threads, in one child process
   so its peak RSS is all of it): wall time, peak RSS.

Prints figures; no assertion (targets in issue 15: compare < 60 s and < 2 GiB).

    python benchmarks/fleet_bench.py                   # 10,000 captures x 20 runs
    python benchmarks/fleet_bench.py --captures 1000   # smaller

Pooling 10,000 captures takes over 10 minutes; to time the comparisons alone on a bigger
dataset, ``--from-dataset DIR --times N`` copies a pooled dataset's batches N times (each
copy's capture ids and pooled order made its own, the rows unchanged) and compares that:

    python benchmarks/fleet_bench.py --captures 1000 --dir /tmp/fleet1k
    python benchmarks/fleet_bench.py --from-dataset /tmp/fleet1k/dataset --times 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from compare_bench import replicate  # noqa: E402

SOURCES = [ROOT / "tests/data/bookworm-6.1-snapshot.snap", ROOT / "tests/data/trixie-6.12-snapshot.snap"]

DASK = """
import sys, time
from snapprof.fleet.dask_engine import DaskEngine
from snapprof.fleet.pooled import compare_pooled
t = time.monotonic()
eng = DaskEngine(sys.argv[1], workers=2, processes=False)
try:
    cmp = compare_pooled(eng)
finally:
    eng.close()
print(f"{len(cmp.diffs)} rows, labels {cmp.labels}", file=sys.stderr)
"""


def child(argv: list[str]) -> tuple[float, int, int]:
    """(wall s, peak RSS kB, exit status) of a child process."""
    t = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t
    err = p.stderr.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        print(err, file=sys.stderr)
    return wall, ru.ru_maxrss, p.returncode


def build(folder: Path, captures: int, runs: int) -> None:
    bases = []
    for i, src in enumerate(SOURCES):
        dest = folder / f"base-{i}.snap.tmpl"
        replicate(src, dest, runs)
        bases.append(dest)
    for i in range(captures):
        dest = folder / f"host{i:05d}-{'6.1' if i % 2 == 0 else '6.12'}.snap"
        shutil.copyfile(bases[i % 2], dest)
        con = sqlite3.connect(dest)
        with con:
            con.execute("UPDATE meta SET value = ? WHERE key = 'hostname'", (f"fleet-{i:05d}",))
        con.close()
    for b in bases:
        b.unlink()


def replicate_dataset(src: Path, dest: Path, times: int) -> int:
    """dest: src's batches ``times`` times over, copy k's capture ids suffixed ``-k`` and
    its seq moved past the copies before it. Returns the captures in dest."""
    import json

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    manifest = json.loads((src / "snapprof-dataset.json").read_text())
    seqs = [pq.read_table(src / f, columns=["seq"]).column("seq")
            for b in manifest["batches"] for f in b["files"]["captures"]]
    span = max(pc.max(c).as_py() for c in seqs if len(c)) + 1
    out = dict(manifest, batches=[])
    for k in range(times):
        for b in manifest["batches"]:
            nb = dict(b, id=f"{b['id']}-r{k}", files={})
            for table, files in b["files"].items():
                for rel in files:
                    t = pq.read_table(src / rel)
                    i = t.schema.get_field_index("capture_id")
                    t = t.set_column(i, "capture_id", pc.binary_join_element_wise(
                        t.column("capture_id"), pa.scalar(f"r{k}"), "-"))
                    if table == "captures":
                        j = t.schema.get_field_index("seq")
                        t = t.set_column(j, "seq", pc.add(t.column("seq"), k * span))
                    new = rel.replace(b["id"], nb["id"])
                    (dest / new).parent.mkdir(parents=True, exist_ok=True)
                    pq.write_table(t, dest / new, compression="zstd")
                    nb["files"].setdefault(table, []).append(new)
            out["batches"].append(nb)
    (dest / "snapprof-dataset.json").write_text(json.dumps(out))
    return sum(b["captures"] for b in out["batches"])


def compare_both(ds: Path, work: Path) -> None:
    py = sys.executable
    out = work / "compare.json"
    wall, rss, rc = child([py, "-m", "snapprof", "compare", str(ds), "--format", "json",
                           "-o", str(out), "--force"])
    print(f"compare (DuckDB): {wall:.1f} s, peak RSS {rss / 1024:.0f} MiB, exit {rc}")
    wall, rss, rc = child([py, "-c", DASK, str(ds)])
    print(f"compare (Dask, local cluster of 2 workers, threads): {wall:.1f} s, peak RSS "
          f"{rss / 1024:.0f} MiB, exit {rc}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captures", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed)")
    ap.add_argument("--from-dataset", metavar="DIR", help="compare copies of this pooled dataset "
                    "instead of pooling (with --times)")
    ap.add_argument("--times", type=int, default=10, help="copies of --from-dataset (default 10)")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="fleet-bench-"))
    if args.from_dataset:
        if (work / "dataset").exists():  # it may be the input itself: never written over
            sys.exit(f"fleet_bench: {work / 'dataset'} exists; give a --dir without a dataset")
        try:
            t = time.monotonic()
            n = replicate_dataset(Path(args.from_dataset), work / "dataset", args.times)
            print(f"copied {args.from_dataset} {args.times} times: {n} captures in "
                  f"{time.monotonic() - t:.1f} s")
            compare_both(work / "dataset", work)
        finally:
            if not args.dir:
                shutil.rmtree(work, ignore_errors=True)
        return 0
    caps, ds = work / "captures", work / "dataset"
    caps.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    try:
        t = time.monotonic()
        build(caps, args.captures, args.runs)
        print(f"built {args.captures} captures x {args.runs} runs in {time.monotonic() - t:.1f} s "
              f"({sum(f.stat().st_size for f in caps.iterdir()) / 2**20:.0f} MiB)")
        wall, rss, rc = child([py, "-m", "snapprof", "pool", "-o", str(ds), str(caps)])
        size = sum(f.stat().st_size for f in ds.rglob("*.parquet")) / 2**20
        print(f"pool: {wall:.1f} s, {args.captures / wall:.1f} captures/s, "
              f"{args.captures * args.runs / wall:.0f} runs/s, peak RSS {rss / 1024:.0f} MiB "
              f"(main process), dataset {size:.0f} MiB, exit {rc}")
        compare_both(ds, work)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
