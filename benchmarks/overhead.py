"""What snapprof's probes cost the cycle they measure: in one lab boot, alternate snapshot
cycles recorded with the probes attached and without (`snapprof record --no-probes`), and
print the with/without ratio of the freeze time, the preallocation time, the copy window
and the image pages, plus the recorder's own resident memory during the cycle and the
peak of the short-lived probe loader (the child that compiles with bcc and exits before
the cycle). Not a test: nothing is asserted; targets are printed with the figures.

"With probes" comes in the kinds --modes names, one cycle of each per round, in rotating
order with the probe-free cycle: the light freezer probes (`--freezer-probes light`, the
default: no hook runs once per thread in a sweep), and the per-thread sweep hooks on
freeze_task() as fentry/fexit trampolines (`fentry`) or as kprobes/kretprobes (`kprobe`). Targets:
the probed freeze within +10 % of the probe-free one or within 0.1 ms per stage (printk
timestamps), and image pages within +0.5 %.

Before the pairs, one cycle without probes runs before anything was ever compiled in
this boot ("cold"): the difference between it and the later cycles without probes is the
page cache the first compile left behind (kernel headers, libLLVM), which every later
image carries until the kernel needs the memory — reported, not hidden.

    python benchmarks/overhead.py                       # bookworm, light against none, 6 rounds
    python benchmarks/overhead.py --distro trixie:7.3.4+deb13-amd64 --pairs 4
    python benchmarks/overhead.py --modes light,fentry,kprobe   # the sweep hooks too

Every figure is read from the kernel's own log lines or /dev/snapshot in both halves
(method kernel-log / device / recorder), never from the probes, so both halves are
measured the same way. The freezer times are also given from the printk timestamps (µs)
of the kernel's "Freezing ..." and "... completed" lines, which its 1 ms figure rounds. The copy window has no probe-free measurement on a guest whose
sched_clock is unstable (TCG): it is then shown as not measured.
(Guest side: python3 benchmarks/overhead.py --guest OUTDIR --pairs N.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    ("  same, printk timestamps (ms)", "freeze_user_printk_ms", ("printk-time",)),
    ("freeze kernel threads (ms)", "freeze_kernel_ms", ("kernel-log",)),
    ("  same, printk timestamps (ms)", "freeze_kernel_printk_ms", ("printk-time",)),
    ("preallocation, kernel log (ms)", "prealloc_kernel_ms", ("kernel-log",)),
    ("CREATE_IMAGE ioctl (ms)", "create_image_ms", ("recorder",)),
    ("copy window (ms)", "copy_window_ms", ("printk-time",)),
    ("image pages", "image_pages", ("device",)),
]


MODES = {"light": ["--freezer-probes", "light"], "fentry": ["--freezer-probes", "fentry"],
         "kprobe": ["--freezer-probes", "kprobe"],
         # the light probes' second cycle in one recorder: under TCG the first run of every
         # freshly JITed BPF program is QEMU translating it (bpf_stats on 6.1: 7.8 ms of
         # program time in a first pm_test cycle, 0.6 ms in the second), which hardware has not
         "light-warm": ["--freezer-probes", "light", "--runs", "2", "--interval", "3"]}


def guest(outdir: str, pairs: int, device: str, modes: list[str]) -> int:
    """Runs in the lab guest: PAIRS x (with probes, without), one recorder process each.
    The 9p shares die at the first cycle (tests/lab/offline.py): run from a copy of the
    tree on tmpfs and hand the results back as a tar on DEVICE."""
    tree = offline.relocate(str(ROOT))
    # This process was started from the share: after the first cycle any lookup there
    # (a lazy import searching sys.path, a relative path) blocks for ever. Leave it.
    os.chdir(tree)
    sys.path[:] = [tree] + [p for p in sys.path if p and not p.startswith(str(ROOT))]
    os.makedirs(outdir, exist_ok=True)
    try:
        return _guest_pairs(outdir, pairs, tree, modes)
    finally:
        offline.pack(outdir, device)


def _guest_pairs(outdir: str, pairs: int, tree: str, modes: list[str]) -> int:
    env = dict(os.environ, PYTHONPATH=tree, PWD=tree)  # clang stats $PWD: not the dead 9p share
    rows = []
    plan = [("cold", 0, ["--no-probes"])]
    arms = [(m, MODES[m]) for m in modes] + [("without", ["--no-probes"])]
    for i in range(pairs):
        k = i % len(arms)  # rotate the order: no arm always runs after the same one
        plan += [(name, i, flags) for name, flags in arms[k:] + arms[:k]]
    for name, i, flags in plan:
        out = os.path.join(outdir, f"{name}-{i}.snap")
        t = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "snapprof", "record", "-o", out, "--runs", "1",
                              *flags], env=env, cwd=tree, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
        rows.append({"mode": name, "pair": i, "capture": os.path.basename(out),
                     "rc": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss,
                     "wall_s": time.monotonic() - t, "stderr": p.stderr.read().decode()[-1000:]})
        p.stderr.close()
        print(f"{name} {i}: rc {rows[-1]['rc']} maxrss {usage.ru_maxrss} kB", flush=True)
    with open(os.path.join(outdir, "overhead.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return 0


_FREEZE = re.compile(r"^(?:PM: )?Freezing (user space processes|remaining freezable tasks)( completed)?")


def printk_freeze_ms(records) -> dict[str, float]:
    """Freezing time from the printk timestamps (µs) of the kernel's "Freezing ..." line and
    its "... completed" line: both are printed by the freezing task, around the same work
    the kernel's own 1 ms figure covers, so the difference resolves what that figure rounds."""
    start: dict[str, int] = {}
    out: dict[str, float] = {}
    for _seq, ts_us, _level, text in records:
        m = _FREEZE.match(text.strip())
        if not m:
            continue
        stage = "user" if m.group(1).startswith("user") else "kernel"
        if m.group(2) is None:
            start.setdefault(stage, ts_us)
        elif stage in start and f"freeze_{stage}_printk_ms" not in out:
            out[f"freeze_{stage}_printk_ms"] = (ts_us - start[stage]) / 1000
    return out


def figures(path: Path) -> dict[str, float]:
    """The run's probe-free figures: kernel-log figures recomputed from its stored log lines,
    device and recorder figures as stored."""
    from snapprof.capture import CaptureReader
    from snapprof.record import kmsg

    with CaptureReader(path) as r:
        last = max((run["run_id"] for run in r.runs()), default=None)  # light-warm: its 2nd
        metrics = [m for m in r.table("metrics") if m["run_id"] == last]
        records = [(k["seq"], k["ts_us"], k["level"], k["text"]) for k in r.table("kmsg")
                   if k["run_id"] == last]
        meta = r.meta()
    out = {m["name"]: m["value"] for m in metrics if m["method"] in ("device", "recorder")}
    # With probes the capture keeps the probes' image_pages (one row per name, probes first);
    # tests/lab/test_probes_lab.py shows it equal to the device's figure in every cycle.
    out.update({m["name"]: m["value"] for m in metrics
                if m["name"] == "image_pages" and m["method"] == "probe"})
    for key in ("recorder_rss_kb", "recorder_rss_anon_kb", "probe_loader_peak_rss_kb"):
        if meta.get(key):
            out[key] = float(meta[key])
    out.update({name: v for name, v, *_ in kmsg.kernel_figures(records)})
    out.update(printk_freeze_ms(records))
    stable = meta.get("clocksource") == "tsc" or None
    window = kmsg.copy_window_from_printk(records, stable)
    if window:
        out["copy_window_ms"] = window[1]
    return out


def _meta(path: Path) -> dict:
    from snapprof.capture import CaptureReader

    with CaptureReader(path) as r:
        return r.meta()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distro", default="bookworm")
    ap.add_argument("--pairs", type=int, default=6, help="rounds: one cycle of each arm")
    ap.add_argument("--modes", default="light,light-warm",
                    help="probed arms, comma-separated: light, light-warm (the second cycle of "
                         "one recorder), fentry, kprobe (default light,light-warm)")
    ap.add_argument("--guest", metavar="OUTDIR", help=argparse.SUPPRESS)
    ap.add_argument("--pack", default="/dev/vdb", help=argparse.SUPPRESS)
    ap.add_argument("--out", metavar="DIR", help="keep the guest's captures here")
    ap.add_argument("--from", dest="source", metavar="DIR",
                    help="only summarise a guest run already made (its overhead.json folder)")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        ap.error(f"--modes: choose from {', '.join(MODES)}")
    if args.guest:
        return guest(args.guest, args.pairs, args.pack, modes)

    if args.source:
        ov, release = Path(args.source), "guest output " + args.source
    else:
        from snapprof.lab.qemu import create_disk, run_guest

        out = Path(args.out or f"/tmp/snapprof-overhead-{args.distro}")
        out.mkdir(parents=True, exist_ok=True)
        disk = create_disk(out / "results.img", "64M")
        res = run_guest(args.distro, ["python3", "benchmarks/overhead.py", "--guest", "/tmp/ov",
                                      "--pairs", str(args.pairs), "--modes", ",".join(modes)],
                        out, extra_disks=[disk], stream=None,
                        timeout=600 + 150 * (len(modes) + 1) * args.pairs)
        res.check()
        offline.unpack(str(disk.path), str(out / "ov"))
        ov, release = out / "ov", res.kernel_release
    rows = json.loads((ov / "overhead.json").read_text())
    return summarise(ov, rows, args.distro, release)


def summarise(ov: Path, rows: list[dict], distro: str, release: str) -> int:
    arms = [m for m in dict.fromkeys(r["mode"] for r in rows) if m not in ("cold", "without")]
    per: dict[str, dict[str, list[float]]] = {m: {} for m in [*arms, "without", "cold"]}
    rss: dict[str, list[int]] = {m: [] for m in per}
    methods: dict[str, set[str]] = {m: set() for m in arms}
    for row in rows:
        if row["rc"] != 0:
            print(f"{row['mode']} {row['pair']}: recorder failed: {row['stderr'].strip()}")
            continue
        rss[row["mode"]].append(row["maxrss_kb"])
        for name, v in figures(ov / row["capture"]).items():
            per[row["mode"]].setdefault(name, []).append(v)
        if row["mode"] in methods:
            methods[row["mode"]].add(_meta(ov / row["capture"]).get("probe_methods", "?"))
    rounds = len({r["pair"] for r in rows if r["mode"] == "without"})
    print(f"{distro} ({release}), {rounds} rounds of cycles ({', '.join(arms)}, without), medians:")
    for arm in arms:
        print(f"  {arm}: {'; '.join(sorted(methods[arm]))}")

    def med(mode, name):
        v = per[mode].get(name)
        return statistics.median(v) if v else None

    head = "".join(f" {a:>12}" for a in arms)
    print(f"  {'figure':32}{head} {'without':>12}" + "".join(f" {a + ' diff':>16}" for a in arms))
    for label, name, _methods in FIGURES:
        wo = per["without"].get(name)
        if not wo or not any(per[a].get(name) for a in arms):
            print(f"  {label:32} not measured ({'no probe-free measurement here' if not wo else 'missing'})")
            continue
        digits = 3 if name.endswith("printk_ms") else 1
        mwo = statistics.median(wo)
        cells, diffs = "", ""
        for a in arms:
            w = per[a].get(name)
            if not w:
                cells += f" {'-':>12}"
                diffs += f" {'-':>16}"
                continue
            mw = statistics.median(w)
            ratio = f"{(mw / mwo - 1) * 100:+.1f}%" if mwo else "n/a"
            cells += f" {mw:12.{digits}f}"
            diffs += f" {mw - mwo:+8.{digits}f} {ratio:>7}"
        spread = " / ".join(f"{min(per[a][name]):.{digits}f}-{max(per[a][name]):.{digits}f}"
                            for a in arms if per[a].get(name))
        print(f"  {label:32}{cells} {mwo:12.{digits}f}{diffs}   (ranges {spread} / "
              f"{min(wo):.{digits}f}-{max(wo):.{digits}f}; n={len(wo)})")
    print("  (kernel-log times have 1 ms resolution (freezer) or 10 ms (preallocation))")
    print("  targets: the probed freeze within +10 % of the probe-free one or within 0.1 ms per stage "
          "(printk timestamps); image pages within +0.5 %")
    for a in arms:
        verdicts = []
        for stage in ("user", "kernel"):
            w, wo = med(a, f"freeze_{stage}_printk_ms"), med("without", f"freeze_{stage}_printk_ms")
            if w is None or wo is None:
                verdicts.append(f"freeze {stage}: not measured")
                continue
            ok = w <= wo * 1.10 or w - wo <= 0.1
            verdicts.append(f"freeze {stage} {w - wo:+.3f} ms ({(w / wo - 1) * 100:+.0f} %): "
                            f"{'met' if ok else 'NOT met'}")
        w, wo = med(a, "image_pages"), med("without", "image_pages")
        if w is not None and wo:
            verdicts.append(f"image pages {(w / wo - 1) * 100:+.2f} %: "
                            f"{'met' if w <= wo * 1.005 else 'NOT met'}")
        print(f"  {a}: " + "; ".join(verdicts) + " (medians; TCG noise: see the ranges)")

    for mode in [*arms, "without"]:
        at_cycle, anon = med(mode, "recorder_rss_kb"), med(mode, "recorder_rss_anon_kb")
        if at_cycle:
            print(f"  recorder RSS at the cycle, {mode:10} {at_cycle / 1024:7.1f} MiB"
                  + (f" (private: {anon / 1024:.1f} MiB)" if anon else ""))
    bpf = [m for m in (_meta(ov / r["capture"]).get("probe_bpf_memlock_kb") for r in rows
                       if r["mode"] in arms and r["rc"] == 0) if m]
    if bpf:
        print(f"  BPF memory charged by the kernel (memlock, fdinfo): {bpf[0]}")
    for a in arms:
        loader_peak = med(a, "probe_loader_peak_rss_kb")
        if loader_peak:
            print(f"  probe loader peak RSS ({a}; child, gone before the cycle) {loader_peak / 1024:7.1f} MiB")
    for mode in [*arms, "without"]:
        if rss[mode]:
            print(f"  peak RSS of the recorder process tree, {mode:10} "
                  f"{statistics.median(rss[mode]) / 1024:7.1f} MiB")
    cold, warm = med("cold", "image_pages"), med("without", "image_pages")
    if cold and warm:
        print(f"  image pages before any compile in this boot: {cold:.0f}; later cycles without "
              f"probes: {warm:.0f} ({(warm / cold - 1) * 100:+.2f} %: page cache left by the compile)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
