"""Guest job for the image-composition lab tests: what is in the image, checked with memory
of known kinds and sizes put there on purpose. Captures plus a JSON summary go to OUTDIR.

    python3 tests/lab/composition_job.py [--pack DEVICE] OUTDIR

Steps, in one boot (no probes: the composition and the image's size come from /proc and
/dev/snapshot, and nothing is compiled):
  base     2 snapshot cycles as the guest is
  loaded   2 snapshot cycles with a process holding 100 MiB of touched anonymous memory and
           a 64 MiB file on a tmpfs mounted here: the process must lead the top processes
           with about 100 MiB, shmem must grow by about 64 MiB, and the image by about both
  scan_cost  the reading's own cost: a fresh process's RSS before and after importing
           snapprof.record.composition and after five readings, and their times
  sweep    CACHE_MIB of files read into the page cache, then --image-size-sweep default,0
           --runs 1 (the loaded state gone): two cycles, the first keeping the cache (the
           fast path), the second shrinking the image as far as it goes. Without the cache an
           idle guest's image is at its minimum already (6.1: 38,637 pages at 0 against
           38,623 at the default), and the two settings cannot be told apart
Standard library only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import record_job  # noqa: E402
from record_job import record  # noqa: E402

HOG_MIB = 100
TMPFS_MIB = 64
TMPFS = "/mnt/snapprof-tmpfs"
HOG = r"""
import mmap, sys, time
size = int(sys.argv[1]) << 20
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for off in range(0, size, 4096):
    m[off] = 1
print("ready", flush=True)
time.sleep(3600)
"""


def meminfo() -> dict:
    with open("/proc/meminfo") as f:
        return {ln.split(":")[0]: int(ln.split()[1]) for ln in f if ln.split()[1:2] and ln.split()[1].isdigit()}


def step_loaded(outdir: str) -> dict:
    res: dict = {"meminfo_before": meminfo()}
    os.makedirs(TMPFS, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "snapprof-tmpfs", TMPFS], check=True)
    # -I and cwd /: off the 9p share (it hangs after the first cycle)
    hog = subprocess.Popen([sys.executable, "-I", "-c", HOG, str(HOG_MIB)], stdout=subprocess.PIPE,
                           text=True, cwd="/")
    res["hog_pid"] = hog.pid
    try:
        res["hog_ready"] = hog.stdout.readline().strip() == "ready"
        with open(os.path.join(TMPFS, "data"), "wb") as f:
            chunk = os.urandom(1 << 20)  # not zero pages: the image keeps them
            for _ in range(TMPFS_MIB):
                f.write(chunk)
        res["meminfo_loaded"] = meminfo()
        res["loaded"] = record(os.path.join(outdir, "loaded.snap"), "--no-probes", "--runs", "2")
    finally:
        hog.kill()
        hog.wait()
        subprocess.run(["umount", TMPFS])
    return res


SCAN_COST = r"""
import json, resource
def rss():
    with open("/proc/self/status") as f:
        d = {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith(("VmRSS", "RssAnon", "VmHWM"))}
    return d
out = {"start": rss()}
from snapprof.record import composition
out["imported"] = rss()
import time
times = []
for _ in range(5):
    t = time.monotonic()
    composition.before_cycle()
    times.append((time.monotonic() - t) * 1000)
out["after_scans"] = rss()
out["scan_ms"] = times
print(json.dumps(out))
"""


def step_scan_cost() -> dict:
    """What the composition reading adds to the recorder (and so to the image): its RSS
    before and after importing the module and after five readings, in a fresh process."""
    p = subprocess.run([sys.executable, "-c", SCAN_COST], capture_output=True, text=True,
                       cwd="/", env=dict(os.environ, PYTHONPATH=record_job.TREE), timeout=300)
    if p.returncode != 0:
        return {"error": p.stderr[-2000:]}
    return json.loads(p.stdout)


CACHE_MIB = 200


def fill_cache(mib: int) -> float:
    """Read files of the guest's root disk (the biggest under /usr/lib first: LLVM, clang)
    until mib MiB have gone through the page cache; returns the MiB read."""
    files = []
    for root, _dirs, names in os.walk("/usr/lib"):
        for n in names:
            p = os.path.join(root, n)
            try:
                if os.path.isfile(p) and not os.path.islink(p):
                    files.append((os.path.getsize(p), p))
            except OSError:
                pass
    done = 0
    for _size, p in sorted(files, reverse=True):
        if done >= mib << 20:
            break
        try:
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    done += len(chunk)
        except OSError:
            pass
    return done / (1 << 20)


def main() -> int:
    args = sys.argv[1:]
    device = None
    if args[:1] == ["--pack"]:
        device, args = args[1], args[2:]
    if device:
        record_job.go_offline()
        sys.path.insert(0, record_job.TREE)
    outdir = args[0]
    os.makedirs(outdir, exist_ok=True)
    doc: dict = {"release": os.uname().release, "steps": {}}
    steps = {
        "base": lambda: {"base": record(os.path.join(outdir, "base.snap"), "--no-probes", "--runs", "2")},
        "loaded": lambda: step_loaded(outdir),
        "scan_cost": step_scan_cost,
        "sweep": lambda: {"cached_mib": fill_cache(CACHE_MIB),
                          "sweep": record(os.path.join(outdir, "sweep.snap"), "--no-probes", "--runs", "1",
                                          "--image-size-sweep", "default,0")},
    }
    try:
        for name, fn in steps.items():
            t = time.monotonic()
            try:
                res = fn()
            except (SystemExit, subprocess.CalledProcessError, OSError) as exc:
                res = {"error": str(exc)}
            res["step_s"] = time.monotonic() - t
            doc["steps"][name] = res
            print(f"step {name}: {res.get('error') or 'done'} in {res['step_s']:.1f} s", flush=True)
            with open(os.path.join(outdir, "composition_job.json"), "w") as f:
                json.dump(doc, f, indent=1)
    finally:
        if device:
            print(f"packed {record_job.offline.pack(outdir, device)} bytes onto {device}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
