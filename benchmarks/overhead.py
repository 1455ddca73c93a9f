"""What snapprof's probes cost the cycle they measure: in one lab boot, alternate snapshot
cycles recorded with the probes attached and without (`snapprof record --no-probes`), and
print the with/without ratio of the freeze time, the preallocation time, the copy window
and the image pages, plus the recorder's own peak resident memory. Target: at most +2 %
on each time and +0.5 % on image pages. Not a test: nothing is asserted.

    python benchmarks/overhead.py                       # bookworm, 4 pairs
    python benchmarks/overhead.py --distro trixie --pairs 6

Every figure is read from the kernel's own log lines or /dev/snapshot in both halves
(method kernel-log / device / recorder), never from the probes, so both halves are
measured the same way. The copy window has no probe-free measurement on a guest whose
sched_clock is unstable (TCG): it is then shown as not measured.
(Guest side: python3 benchmarks/overhead.py --guest OUTDIR --pairs N.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "lab"))

import offline  # noqa: E402

FIGURES = [  # (label, metric, methods accepted in both halves)
    ("freeze user space (ms)", "freeze_user_ms", ("kernel-log",)),
    ("freeze kernel threads (ms)", "freeze_kernel_ms", ("kernel-log",)),
    ("preallocation, kernel log (ms)", "prealloc_kernel_ms", ("kernel-log",)),
    ("CREATE_IMAGE ioctl (ms)", "create_image_ms", ("recorder",)),
    ("copy window (ms)", "copy_window_ms", ("printk-time",)),
    ("image pages", "image_pages", ("device",)),
]


def guest(outdir: str, pairs: int, device: str) -> int:
    """Runs in the lab guest: PAIRS x (with probes, without), one recorder process each.
    The 9p shares die at the first cycle (tests/lab/offline.py): run from a copy of the
    tree on tmpfs and hand the results back as a tar on DEVICE."""
    tree = offline.relocate(str(ROOT))
    os.makedirs(outdir, exist_ok=True)
    try:
        return _guest_pairs(outdir, pairs, tree)
    finally:
        offline.pack(outdir, device)


def _guest_pairs(outdir: str, pairs: int, tree: str) -> int:
    env = dict(os.environ, PYTHONPATH=tree, PWD=tree)  # clang stats $PWD: not the dead 9p share
    rows = []
    for i in range(pairs):
        for mode in (("with", []), ("without", ["--no-probes"])):
            out = os.path.join(outdir, f"{mode[0]}-{i}.snap")
            t = time.monotonic()
            p = subprocess.Popen([sys.executable, "-m", "snapprof", "record", "-o", out, "--runs", "1",
                                  *mode[1]], env=env, cwd=tree, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
            _, status, usage = os.wait4(p.pid, 0)
            rows.append({"mode": mode[0], "pair": i, "capture": os.path.basename(out),
                         "rc": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss,
                         "wall_s": time.monotonic() - t, "stderr": p.stderr.read().decode()[-1000:]})
            p.stderr.close()
            print(f"{mode[0]} {i}: rc {rows[-1]['rc']} maxrss {usage.ru_maxrss} kB", flush=True)
    with open(os.path.join(outdir, "overhead.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return 0


def figures(path: Path) -> dict[str, float]:
    """The run's probe-free figures: kernel-log figures recomputed from its stored log lines,
    device and recorder figures as stored."""
    from snapprof.capture import CaptureReader
    from snapprof.record import kmsg

    with CaptureReader(path) as r:
        metrics = r.table("metrics")
        records = [(k["seq"], k["ts_us"], k["level"], k["text"]) for k in r.table("kmsg")]
        meta = r.meta()
    out = {m["name"]: m["value"] for m in metrics if m["method"] in ("device", "recorder")}
    out.update({name: v for name, v, *_ in kmsg.kernel_figures(records)})
    stable = meta.get("clocksource") == "tsc" or None
    window = kmsg.copy_window_from_printk(records, stable)
    if window:
        out["copy_window_ms"] = window[1]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distro", default="bookworm")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--guest", metavar="OUTDIR", help=argparse.SUPPRESS)
    ap.add_argument("--pack", default="/dev/vdb", help=argparse.SUPPRESS)
    ap.add_argument("--out", metavar="DIR", help="keep the guest's captures here")
    ap.add_argument("--from", dest="source", metavar="DIR",
                    help="only summarise a guest run already made (its overhead.json folder)")
    args = ap.parse_args()
    if args.guest:
        return guest(args.guest, args.pairs, args.pack)

    if args.source:
        ov, release = Path(args.source), "guest output " + args.source
    else:
        from snapprof.lab.qemu import create_disk, run_guest

        out = Path(args.out or f"/tmp/snapprof-overhead-{args.distro}")
        out.mkdir(parents=True, exist_ok=True)
        disk = create_disk(out / "results.img", "64M")
        res = run_guest(args.distro, ["python3", "benchmarks/overhead.py", "--guest", "/tmp/ov",
                                      "--pairs", str(args.pairs)], out, extra_disks=[disk],
                        stream=None, timeout=600 + 300 * args.pairs)
        res.check()
        offline.unpack(str(disk.path), str(out / "ov"))
        ov, release = out / "ov", res.kernel_release
    rows = json.loads((ov / "overhead.json").read_text())
    per: dict[str, dict[str, list[float]]] = {"with": {}, "without": {}}
    rss: dict[str, list[int]] = {"with": [], "without": []}
    for row in rows:
        if row["rc"] != 0:
            print(f"{row['mode']} {row['pair']}: recorder failed: {row['stderr'].strip()}")
            continue
        rss[row["mode"]].append(row["maxrss_kb"])
        for name, v in figures(ov / row["capture"]).items():
            per[row["mode"]].setdefault(name, []).append(v)
    pairs = len({r["pair"] for r in rows})
    print(f"{args.distro} ({release}), {pairs} pairs of cycles, medians:")
    print(f"  {'figure':32} {'with probes':>12} {'without':>12} {'ratio':>8}")
    for label, name, _methods in FIGURES:
        w, wo = per["with"].get(name), per["without"].get(name)
        if not w or not wo:
            print(f"  {label:32} not measured ({'no probe-free measurement here' if not wo else 'missing'})")
            continue
        mw, mwo = statistics.median(w), statistics.median(wo)
        ratio = f"{(mw / mwo - 1) * 100:+.2f} %" if mwo else "n/a"
        print(f"  {label:32} {mw:12.1f} {mwo:12.1f} {ratio:>8}   (n={len(w)}/{len(wo)})")
    for mode in ("with", "without"):
        if rss[mode]:
            print(f"  recorder peak RSS {mode + ' probes':15} {statistics.median(rss[mode]) / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
