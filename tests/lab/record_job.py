"""Guest job for the record lab tests: run `snapprof record` the ways a user would, in one
boot, and leave the captures plus a JSON summary in OUTDIR for the host-side asserts.

    python3 tests/lab/record_job.py [--pack DEVICE] OUTDIR [STEP ...]

With --pack (how the lab test runs it; see offline.py): the tree is first copied to the
guest's tmpfs and run from there, OUTDIR should be on tmpfs too, and at the end OUTDIR is
written as a tar onto DEVICE (an extra raw disk): the 9p shares die at the first cycle.

Steps (all by default, in this order):
  snapshot   --runs 3: three /dev/snapshot cycles (default image_size: the fast path)
  shrink     --image-size 100M: a cycle that must shrink to about 25,600 pages
  freezer    --trigger pm-test:freezer: freezer and preallocation, no copy
  none       --trigger none --runs 1 in the background; another process
             (`snapprof record --no-probes`) runs the cycle
  kill       --runs 3 in the background; after its first run is committed, SIGKILL it
             inside the next cycle's FREEZE ioctl; then a new cycle proves the system
             runs and /dev/snapshot was released
Standard library only.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TREE = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, TREE)
sys.path.insert(0, HERE)

import offline  # noqa: E402
from snapprof.capture import STOPPED_IN_CYCLE  # noqa: E402
from snapprof.record.kmsg import KmsgReader  # noqa: E402
from snapprof.record.triggers import read_power  # noqa: E402
def _codename() -> str:
    with open("/etc/os-release") as f:
        return next((ln.split("=", 1)[1].strip().strip('"') for ln in f
                     if ln.startswith("VERSION_CODENAME=")), "")


ENV = dict(os.environ, PYTHONPATH=TREE, PYTHONUNBUFFERED="1", SNAPPROF_LAB_DISTRO=_codename())


def record(out: str, *args: str, timeout: float = 900) -> dict:
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "snapprof", "record", "-o", out, *args],
                       capture_output=True, text=True, env=ENV, cwd=TREE, timeout=timeout)
    return {"args": list(args), "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr,
            "wall_s": time.monotonic() - t}


def spawn(out: str, *args: str, log: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "snapprof", "record", "-o", out, *args],
                            stdout=open(log + ".out", "w"), stderr=open(log, "w"), env=ENV,
                            cwd=TREE)


def wait_for(pred, timeout: float, step: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def runs_in(path: str) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            # a cycle's row is committed when it begins (status incomplete, "the recorder
            # stopped during this cycle ..."): count the cycles that ended
            return db.execute("SELECT count(*) FROM runs WHERE error IS NOT ?",
                              (STOPPED_IN_CYCLE,)).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def step_none(outdir: str) -> dict:
    log = os.path.join(outdir, "none.log")
    # the other process runs a /dev/snapshot cycle, not a real hibernation: all probe areas
    # are safe, so ask for them (--trigger none leaves shrink and copy out by default)
    p = spawn(os.path.join(outdir, "none.snap"), "--trigger", "none", "--runs", "1",
              "--area", "freezer,shrink,copy,devices,phases,io", log=log)
    ready = wait_for(lambda: "waiting for hibernation cycles" in open(log).read(), 300)
    other = record(os.path.join(outdir, "none-other.snap"), "--no-probes", "--runs", "1")
    try:
        rc = p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = "timeout"
    return {"ready": ready, "rc": rc, "stderr": open(log).read(), "other": other}


def in_freeze_ioctl(pid: int) -> bool:
    """Whether pid is inside ioctl(fd, SNAPSHOT_FREEZE): /proc/PID/syscall is
    "16 <fd> 0x3301 ..." (x86-64 ioctl) during the filesystem sync and the freezing."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return False
    return len(fields) > 2 and fields[0] == "16" and int(fields[2], 16) == 0x3301


def step_kill(outdir: str) -> dict:
    """SIGKILL the recorder inside a cycle. Once the user space is frozen only the
    recorder runs, so the kill is sent while it is in the FREEZE ioctl (syncing): the
    signal is pending while the kernel freezes user space and kills the recorder as the
    ioctl returns, with every other task frozen; closing /dev/snapshot must thaw them.
    Dirty page cache makes that sync long enough to be seen from here."""
    path = os.path.join(outdir, "kill.snap")
    log = os.path.join(outdir, "kill.log")
    p = spawn(path, "--runs", "3", "--interval", "20", log=log)  # time to dirty the cache
    res: dict = {"first_run": wait_for(lambda: runs_in(path) >= 1 or p.poll() is not None, 900)}
    reader = KmsgReader()
    reader.mark()  # the kernel's log of the cycle the recorder dies in
    # Dirty 300 MB of page cache: the next FREEZE's filesystem sync (before user space is
    # frozen) then takes long enough for this process to see the recorder inside it.
    with open("/var/tmp/snapprof-dirty", "wb") as f:
        block = b"\xa5" * (1 << 20)
        for _ in range(300):
            f.write(block)
    res["killed_in_freeze"] = False
    end = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < end:
        if in_freeze_ioctl(p.pid):
            os.kill(p.pid, 9)
            res["killed_in_freeze"] = True
            break
    t = time.monotonic()
    try:
        res["rc"] = p.wait(timeout=600)
    except subprocess.TimeoutExpired:
        p.kill()
        res["rc"] = "timeout"
    res["died_after_s"] = time.monotonic() - t
    os.unlink("/var/tmp/snapprof-dirty")
    time.sleep(1)
    res["killed_cycle_log"] = [rec[3] for rec in reader.read_new()]
    reader.close()
    res["stderr"] = open(log).read()
    res["runs_after_kill"] = runs_in(path)
    # the system runs on and /dev/snapshot is free again: one more cycle
    res["after"] = record(os.path.join(outdir, "after-kill.snap"), "--no-probes", "--runs", "1")
    return res


def go_offline() -> None:
    """Run the recorders from a tmpfs copy of the tree: the 9p shares die at the first cycle.
    PWD too: clang (bcc) stats $PWD, which would still name the dead 9p share."""
    global TREE
    TREE = offline.relocate(TREE)
    ENV.update(PYTHONPATH=TREE, PWD=TREE)


def main() -> int:
    args = sys.argv[1:]
    device = None
    if args[:1] == ["--pack"]:
        device, args = args[1], args[2:]
        go_offline()
    outdir, steps = args[0], args[1:] or ["snapshot", "shrink", "freezer", "none", "kill"]
    os.makedirs(outdir, exist_ok=True)
    try:
        return run_steps(outdir, steps)
    finally:
        if device:
            print(f"packed {offline.pack(outdir, device)} bytes onto {device}", flush=True)


def run_steps(outdir: str, steps: list[str]) -> int:
    doc: dict = {"release": os.uname().release, "steps": {}}
    for step in steps:
        t = time.monotonic()
        snap = os.path.join(outdir, f"{step}.snap")
        if step == "snapshot":
            res = record(snap, "--runs", "3", "--interval", "1")
        elif step == "shrink":
            res = record(snap, "--runs", "1", "--image-size", "100M")
        elif step == "freezer":
            res = record(snap, "--trigger", "pm-test:freezer", "--runs", "1")
        elif step == "none":
            res = step_none(outdir)
        elif step == "kill":
            res = step_kill(outdir)
        else:
            raise SystemExit(f"unknown step {step}")
        res["step_s"] = time.monotonic() - t
        res["power_after"] = {n: read_power(n) for n in ("pm_test", "image_size")}
        doc["steps"][step] = res
        print(f"step {step}: {res.get('rc')} in {res['step_s']:.1f} s", flush=True)
        with open(os.path.join(outdir, "record_job.json"), "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
