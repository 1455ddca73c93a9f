"""Guest job for the failure lab tests: make hibernation fail the ways users see it, record
it with `snapprof record`, and check the system comes back; captures plus a JSON summary
go to OUTDIR for the host-side asserts.

    python3 tests/lab/failure_job.py [--pack DEVICE] [--fs-dev DEVICE] OUTDIR [STEP ...]
    (steps: freeze fuse memory, all by default)

Steps:
  freeze   a user task that refuses to freeze: a writer (dd) blocked on a frozen ext4
           filesystem (fsfreeze -f on the spare disk --fs-dev, /dev/vdc by default, an ext4
           the host made: the guests have no loop devices, trixie's no mkfs) sleeps (D) in
           sb_start_write, so the freezer cannot stop it. One snapshot cycle with
           --freeze-timeout 2000 must fail naming it; then the filesystem is thawed, the
           writer finishes, and a next cycle must complete.
  fuse     user tasks waiting on a FUSE filesystem whose daemon never answers: the job
           mounts FUSE itself (/dev/fuse, mount(2); no libfuse in the guest) and never reads
           the kernel's requests, so a `stat` of a file in it waits for the connection's
           INIT, in the lookup, holding the directory's lock (i_rwsem, shared); then a
           `mkdir` in that directory waits for the lock (uninterruptible: never freezable).
           One cycle with --freeze-timeout 2000 must fail naming the mkdir (and, where the
           FUSE wait is not freezable, the stat); then the job closes /dev/fuse (the
           connection is aborted, both return ENOTCONN), unmounts, and a next cycle must
           complete.
  memory   preallocation that cannot get its memory: no swap, and between two cycles of
           one recording a process takes 60 % of RAM in touched anonymous memory, so the
           second cycle's image cannot fit beside it (image_size 0 does not help: every
           saveable page must be copied).
Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import record_job  # noqa: E402
from record_job import record, wait_for  # noqa: E402
from snapprof.record.triggers import read_power  # noqa: E402 (imported before any cycle)

POWER_FILES = ("pm_freeze_timeout", "image_size", "pm_test", "reserved_size")
MNT = "/mnt/snapprof-frozen"
WRITER = ["dd", "if=/dev/zero", f"of={MNT}/blocked-writer", "bs=4k", "count=1"]


def power() -> dict:
    return {n: (read_power(n) or "").strip() for n in POWER_FILES}


def state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def stack(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stack") as f:
            return f.read()
    except OSError:
        return ""


def blocked_in(pid: int, pattern: str) -> bool:
    """The task sleeps (D) where pattern says, not somewhere on its way there (a D state
    while exec faults its binary in is not the wait this job sets up)."""
    return state(pid) == "D" and re.search(pattern, stack(pid)) is not None


def sh(*cmd: str) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


FS_DEV = "/dev/vdc"


#: The cycle after a failure: the system runs on, its settings restored, /dev/snapshot free.
#: Without probes: what is checked is the cycle, not the figures (the failed cycle's own
#: recorder had them), and no second compile (~30 s under TCG) per step.
NEXT = ("--no-probes", "--runs", "1")
#: The refusing cycles record with the per-thread sweep hooks (fentry/fexit here): the stack
#: of a task still refusing, and a task frozen in place (7.3's blocked writer) seen as such.
DIAGNOSE = ("--freezer-probes", "sweep")


def step_freeze(outdir: str) -> dict:
    res: dict = {"power_before": power()}
    os.makedirs(MNT, exist_ok=True)  # FS_DEV holds an ext4 made by the host (no mkfs in trixie's minbase)
    sh("mount", FS_DEV, MNT)
    sh("fsfreeze", "-f", MNT)
    # cwd /: this job was started from the 9p share, which hangs after the first cycle
    writer = subprocess.Popen(WRITER, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
    res["writer_pid"] = writer.pid
    res["writer_cmdline"] = " ".join(WRITER)
    res["writer_blocked"] = wait_for(lambda: blocked_in(writer.pid, r"percpu_rwsem|sb_start|mnt_want_write"), 30)
    res["writer_stack_before"] = stack(writer.pid)
    try:
        res["failed"] = record(os.path.join(outdir, "freeze-fail.snap"), "--runs", "1",
                               "--freeze-timeout", "2000", *DIAGNOSE)
        res["power_after_fail"] = power()
        res["writer_state_after_fail"] = state(writer.pid)
    finally:
        sh("fsfreeze", "-u", MNT)
    try:
        res["writer_rc"] = writer.wait(timeout=60)
    except subprocess.TimeoutExpired:
        writer.kill()
        res["writer_rc"] = "timeout"
    res["next"] = record(os.path.join(outdir, "freeze-next.snap"), *NEXT)
    res["power_after"] = power()
    sh("umount", MNT)
    return res


FUSE_MNT = "/mnt/snapprof-fuse"
FUSE_READER = ["stat", f"{FUSE_MNT}/file"]
FUSE_LOCKED = ["mkdir", f"{FUSE_MNT}/dir"]


def mark(text: str) -> None:
    """A line in the kernel log (and so on the lab's console): where the job is."""
    try:
        with open("/dev/kmsg", "w") as f:
            f.write(f"failure_job: {text}\n")
    except OSError:
        pass


def step_fuse(outdir: str) -> dict:
    import ctypes  # noqa: PLC0415

    res: dict = {"power_before": power()}
    mark("fuse: mounting")
    if not os.path.exists("/dev/fuse"):  # a module on 6.1 (built in on 6.12 and later)
        subprocess.run(["modprobe", "fuse"], capture_output=True)
    os.makedirs(FUSE_MNT, exist_ok=True)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"snapprof-nodaemon", FUSE_MNT.encode(), b"fuse", 0, opts) != 0:
        os.close(fd)
        raise SystemExit(f"mount -t fuse {FUSE_MNT}: {os.strerror(ctypes.get_errno())}")
    mark("fuse: mounted; starting the reader")
    reader = subprocess.Popen(FUSE_READER, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd="/")
    res["reader_pid"] = reader.pid
    res["reader_cmdline"] = " ".join(FUSE_READER)
    locked = None
    try:
        res["reader_blocked"] = wait_for(lambda: blocked_in(reader.pid, r"fuse"), 30)
        res["reader_stack_before"] = stack(reader.pid)
        mark(f"fuse: reader blocked: {res['reader_blocked']}; starting the mkdir")
        locked = subprocess.Popen(FUSE_LOCKED, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  cwd="/")
        res["locked_pid"] = locked.pid
        res["locked_cmdline"] = " ".join(FUSE_LOCKED)
        res["locked_blocked"] = wait_for(
            lambda: blocked_in(locked.pid, r"filename_create|start_creating|down_write|rwsem"), 30)
        res["locked_stack_before"] = stack(locked.pid)
        mark(f"fuse: mkdir blocked: {res['locked_blocked']}; recording")
        res["failed"] = record(os.path.join(outdir, "fuse-fail.snap"), "--runs", "1",
                               "--freeze-timeout", "2000", *DIAGNOSE)
        mark("fuse: recorded")
        res["power_after_fail"] = power()
        res["reader_state_after_fail"] = state(reader.pid)
    finally:
        mark("fuse: aborting the connection")
        os.close(fd)  # the last /dev/fuse descriptor: the connection is aborted
        for name, proc in (("reader", reader), ("locked", locked)):
            if proc is None:
                continue
            try:
                res[f"{name}_rc"] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                res[f"{name}_rc"] = "timeout"
        subprocess.run(["umount", "-l", FUSE_MNT], capture_output=True)
    res["next"] = record(os.path.join(outdir, "fuse-next.snap"), *NEXT)
    res["power_after"] = power()
    return res


HOG = r"""
import mmap, sys, time
size = int(sys.argv[1]) << 20
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
chunk = b"\1" * (1 << 20)  # every page written, a MiB at a time: no Python loop per page
for _ in range(size >> 20):
    m.write(chunk)
print("ready", flush=True)
time.sleep(3600)
"""


def _meminfo_mb(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    return 0


def mem_available_mb() -> int:
    return _meminfo_mb("MemAvailable")


def mem_total_mb() -> int:
    return _meminfo_mb("MemTotal")


def step_memory(outdir: str) -> dict:
    """Run 1 completes; before run 2 (40 s later) a process takes 60 % of RAM in
    touched anonymous memory. The probes are compiled before run 1, so the compile (150 MB)
    does not compete with it. The hog's ready time is kept on CLOCK_BOOTTIME, the clock
    of a run's started_ns, so the test can check it came first."""
    res: dict = {"power_before": power()}
    sh("swapoff", "-a")
    path = os.path.join(outdir, "memory-fail.snap")
    log = os.path.join(outdir, "memory-fail.log")
    # the interval leaves room for the hog: 8-16 s with a second guest beside (page by page
    # or a MiB at a time alike: the page faults cost, not Python), once 33 s in CI (6.12),
    # past the 25 s there was then; the test checks the order, not the time
    rec = record_job.spawn(path, "--runs", "2", "--interval", "40", "--image-size", "0", log=log)
    res["first_run"] = wait_for(lambda: record_job.runs_in(path) >= 1 or rec.poll() is not None, 900)
    avail, total = mem_available_mb(), mem_total_mb()
    # with no swap none of it can be reclaimed, and the image (a copy of every saveable
    # page) cannot fit beside it
    size = min(total * 6 // 10, avail - 250)
    res["hog_mb"], res["available_mb_before"] = size, avail
    t = time.monotonic()
    # -I and cwd /: a process that looks in the 9p share (cwd, PYTHONPATH=/project) after a
    # cycle killed it hangs there, and refuses to freeze (seen: p9_client_rpc, 6.1)
    hog = subprocess.Popen([sys.executable, "-I", "-c", HOG, str(size)], stdout=subprocess.PIPE,
                           text=True, cwd="/")
    res["hog_pid"] = hog.pid
    try:
        res["hog_ready"] = hog.stdout.readline().strip() == "ready"
        res["hog_ready_s"] = time.monotonic() - t
        res["hog_ready_boot_ns"] = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        try:
            res["rc"] = rec.wait(timeout=900)
        except subprocess.TimeoutExpired:
            rec.kill()
            res["rc"] = "timeout"
        res["stderr"] = open(log).read()[-3000:]
        res["power_after_fail"] = power()
    finally:
        hog.kill()
        hog.wait()
    res["next"] = record(os.path.join(outdir, "memory-next.snap"), *NEXT)
    res["power_after"] = power()
    return res


def main() -> int:
    global FS_DEV
    args = sys.argv[1:]
    device = None
    if args[:1] == ["--pack"]:
        device, args = args[1], args[2:]
    if args[:1] == ["--fs-dev"]:
        FS_DEV, args = args[1], args[2:]
    if device:
        record_job.go_offline()
        sys.path.insert(0, record_job.TREE)
    outdir, steps = args[0], args[1:] or ["freeze", "fuse", "memory"]
    os.makedirs(outdir, exist_ok=True)
    doc: dict = {"release": os.uname().release, "steps": {}}
    try:
        for step in steps:
            t = time.monotonic()
            try:
                res = {"freeze": step_freeze, "fuse": step_fuse, "memory": step_memory}[step](outdir)
            except (SystemExit, OSError, subprocess.SubprocessError) as exc:
                res = {"error": f"{type(exc).__name__}: {exc}"}
            res["step_s"] = time.monotonic() - t
            doc["steps"][step] = res
            print(f"step {step}: {res.get('error') or 'done'} in {res['step_s']:.1f} s", flush=True)
            with open(os.path.join(outdir, "failure_job.json"), "w") as f:
                json.dump(doc, f, indent=1)
    finally:
        if device:
            print(f"packed {record_job.offline.pack(outdir, device)} bytes onto {device}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
