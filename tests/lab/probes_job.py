"""Guest-side job for the probe lab tests: attach every probe once, run three /dev/snapshot
snapshot-and-continue cycles (default image_size: fast path; image_size=0: shrinking;
pm_test=freezer: stops before the devices and the copy), collect after each, and print one
JSON document.

Run inside a lab guest as root:  python3 tests/lab/probes_job.py [--out FILE]
The JSON goes to stdout on one line "PROBES_JOB_JSON {...}" (and to FILE if given: not a
9p path in the lab, whose virtio-9p shares hang after a snapshot cycle). Every module is
imported before the first cycle. tests/lab/test_probes_lab.py runs it.

The cycle (hibernation-map.md §2.4): FREEZE -> CREATE_IMAGE -> GET_IMAGE_SIZE -> read the
image -> FREE -> UNFREEZE -> close. Everything the cycle needs is opened and imported
before FREEZE (the recorder's other threads are frozen until UNFREEZE), and the process
is mlocked. Whatever fails, the snapshot device is closed, which thaws the system.
This is a test helper, not the product trigger (snapprof/record/triggers.py).
"""

from __future__ import annotations

import array
import ctypes
import fcntl
import glob
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from snapprof.record.probeset import ProbeSet  # noqa: E402

SNAPSHOT_FREEZE = 0x3301
SNAPSHOT_UNFREEZE = 0x3302
SNAPSHOT_FREE = 0x3305
SNAPSHOT_GET_IMAGE_SIZE = 0x8008330E
SNAPSHOT_CREATE_IMAGE = 0x40043311


def kprobes_list() -> list[str]:
    """Registered kprobes (debugfs), one line each."""
    try:
        with open("/sys/kernel/debug/kprobes/list") as f:
            return [ln.strip() for ln in f if ln.strip()]
    except OSError as exc:
        return [f"unreadable: {exc}"]


def kmsg_lines() -> list[str]:
    """The kernel log so far (non-blocking read of /dev/kmsg)."""
    out = []
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:
                continue  # EPIPE: overwritten record
            head, _, text = rec.decode("utf-8", "replace").partition(";")
            ts_us = int(head.split(",")[2])
            out.append(f"[{ts_us / 1e6:.6f}] {text.splitlines()[0] if text else ''}")
    finally:
        os.close(fd)
    return out


def read_sysfs(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def write_sysfs(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def snapshot_cycle() -> dict:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mlockall(3)
    res: dict = {}
    fd = os.open("/dev/snapshot", os.O_RDONLY)
    try:
        t0 = time.monotonic()
        fcntl.ioctl(fd, SNAPSHOT_FREEZE)
        t1 = time.monotonic()
        flag = array.array("i", [0])
        fcntl.ioctl(fd, SNAPSHOT_CREATE_IMAGE, flag, True)
        t2 = time.monotonic()
        res["in_suspend"] = flag[0]
        size = array.array("q", [0])
        try:
            fcntl.ioctl(fd, SNAPSHOT_GET_IMAGE_SIZE, size, True)
        except OSError as exc:  # ENODATA: no image (pm_test=freezer)
            res["image_errno"] = exc.errno
        else:
            res["image_bytes"] = size[0]
            nread = 0
            while True:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                nread += len(chunk)
            res["read_bytes"] = nread
        fcntl.ioctl(fd, SNAPSHOT_FREE)
        fcntl.ioctl(fd, SNAPSHOT_UNFREEZE)
        t3 = time.monotonic()
        res.update(freeze_ioctl_s=t1 - t0, create_ioctl_s=t2 - t1, rest_s=t3 - t2)
    finally:
        os.close(fd)
    return res


def sysfs_devices() -> dict:
    """Device name -> [driver bound in sysfs or None, parent device or None], for every PM
    device under /sys/devices (a name seen twice is left out: it cannot be matched)."""
    out, seen = {}, set()
    for path, dirs, _files in os.walk("/sys/devices"):
        if "power" not in dirs:
            continue
        dirs.remove("power")
        name = os.path.basename(path)
        link = os.path.join(path, "driver")
        driver = os.path.basename(os.readlink(link)) if os.path.islink(link) else None
        up = os.path.dirname(path)
        # under system/ and virtual/ the folder above is a bus root or class, not the parent
        placed = path.startswith(("/sys/devices/system/", "/sys/devices/virtual/"))
        parent = os.path.basename(up) if os.path.isdir(os.path.join(up, "power")) and not placed else None
        if name in seen:
            out.pop(name, None)
        else:
            out[name] = [driver, parent]
        seen.add(name)
    return out


ORACLE_CHILD = """
import json, sys, time
import bcc
t = time.monotonic()
try:
    bcc.BPF(text=sys.stdin.read())
except Exception as exc:  # the compiler's message names the assertion that failed
    print(json.dumps({"ok": False, "error": str(exc)[-2000:], "compile_s": time.monotonic() - t}))
else:
    print(json.dumps({"ok": True, "compile_s": time.monotonic() - t}))
"""


def layout_oracle(defines: dict[str, int]) -> dict:
    """Compile <linux/sched.h> with bcc (as the probes did before they read the kernel's
    BTF) and check, at compile time, that every offset and flag the probes are given is
    the header's own. In a child, before the probes are attached and before any cycle:
    bcc stays out of this process, and nothing is read from the 9p shares after a cycle
    (they hang then)."""
    if not defines:
        return {"ok": False, "error": "no BTF defines to check"}
    lines = ["#include <linux/sched.h>", "#include <linux/stddef.h>"]
    for name, value in defines.items():
        what = name[len("TASK_OFF_"):] if name.startswith("TASK_OFF_") else None
        expr = f"offsetof(struct task_struct, {what})" if what else name
        lines.append(f'_Static_assert({expr} == {value:#x}, "{name}");')
    proc = subprocess.run([sys.executable, "-c", ORACLE_CHILD], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=900, cwd="/")
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    out["checked"] = sorted(defines)
    return out


def main() -> int:
    out_path = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
    doc: dict = {"release": os.uname().release}
    ps = ProbeSet()
    doc["status_before"] = ps.status()
    layout, doc["task_layout"] = ps.view.task_layout()
    doc["layout_oracle"] = layout_oracle(layout)
    t = time.monotonic()
    try:
        ps.attach()
    except Exception as exc:  # report, do not hide
        doc["attach_error"] = str(exc)
        doc["status"] = ps.status()
        print(json.dumps(doc))
        return 1
    doc["attach_wall_s"] = time.monotonic() - t
    doc["timings"] = ps.timings
    doc["sizes"] = ps.sizes
    doc["bcc_imported"] = "bcc" in sys.modules  # the loader child compiled; not this process
    doc["loader_alive"] = os.path.exists(f"/proc/{ps.loaded.loader_pid}")
    doc["kprobes_attached"] = len(kprobes_list())
    doc["status"] = ps.status()
    doc["sysfs_devices"] = sysfs_devices()
    ps.collect()  # discard anything before the cycle
    doc["cycles"] = []
    # 1: default image_size (2/5 of RAM): the fast path, no shrink_all_memory.
    # 2: image_size 0 ("as small as possible"): the slow path with shrink_all_memory.
    # 3: pm_test=freezer: CREATE_IMAGE stops after freezing kernel threads (5 s), no image.
    for label, knob, value in (("default", None, None), ("image_size=0", "image_size", "0"),
                               ("pm_test=freezer", "pm_test", "freezer")):
        path = f"/sys/power/{knob}" if knob else None
        saved = read_sysfs(path) if path else None
        if knob == "pm_test":
            saved = next(w[1:-1] for w in saved.split() if w.startswith("["))
        if path:
            write_sysfs(path, value)
        try:
            kmsg_before = len(kmsg_lines())
            threads = len(glob.glob("/proc/[0-9]*/task/[0-9]*"))
            cyc = {"label": label, "threads_before": threads, "cycle": snapshot_cycle()}
            data = ps.collect(timeout_ms=100)
            cyc["kmsg"] = kmsg_lines()[kmsg_before:]
        finally:
            if path:
                write_sysfs(path, saved)
        cyc["data"] = {k: getattr(data, k) for k in ("events", "tasks", "devices", "metrics",
                                                     "not_measured", "drops", "started", "ended",
                                                     "counters")}
        doc["cycles"].append(cyc)
    # a collect with no cycle in between must be empty: per-cycle state was reset
    again = ps.collect()
    doc["second_collect"] = {"events": len(again.events), "tasks": len(again.tasks),
                             "devices": len(again.devices), "metrics": len(again.metrics),
                             "started": again.started}
    ps.close()
    doc["kprobes_after_close"] = kprobes_list()  # closing the fds detached everything
    doc["task_layout_used"] = ps.task_layout_text
    text = json.dumps(doc)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
    # stdout is a serial port in the lab; /output (9p) hangs after a snapshot cycle
    sys.stdout.write("PROBES_JOB_JSON " + text + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
