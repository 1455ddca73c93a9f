"""Guest job for tests/lab/test_lab_guest.py: what the lab promises, seen from inside.

Run in a lab guest: python3 tests/lab/guest_checks.py OUT.json EXIT_STATUS
Writes one JSON document (kernel, mounts, environment, /sys/power, /dev/snapshot, bcc:
import, compile, kprobe on freeze_processes), then runs one /dev/snapshot cycle and leaves
after-cycle.json in $SNAPPROF_OUTBOX, and exits with EXIT_STATUS.
"""

import json
import os
import sys
import time


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        return f"error: {exc.strerror}"


def bcc_check():
    out = {}
    t0 = time.monotonic()
    try:
        import bcc
    except Exception as exc:  # report, do not hide
        out["import_error"] = repr(exc)
        return out
    out["version"] = getattr(bcc, "__version__", "")
    out["has_freeze_processes"] = bool(bcc.BPF.ksymname("freeze_processes") != -1)
    try:
        b = bcc.BPF(text="int on_freeze(void *ctx) { return 0; }")
        out["compile_s"] = round(time.monotonic() - t0, 2)
        b.attach_kprobe(event="freeze_processes", fn_name="on_freeze")
        out["open_kprobes"] = b.num_open_kprobes()
        b.cleanup()
    except Exception as exc:
        out["attach_error"] = repr(exc)
    return out


def snapshot_cycle():
    """One /dev/snapshot snapshot-and-continue cycle (freeze, create the image, free,
    thaw): afterwards every device has been through freeze/thaw."""
    import fcntl
    import struct

    fd = os.open("/dev/snapshot", os.O_RDONLY)
    try:
        fcntl.ioctl(fd, 0x3301)  # SNAPSHOT_FREEZE
        try:
            buf = bytearray(4)
            fcntl.ioctl(fd, 1 << 30 | 4 << 16 | 0x3311, buf, True)  # SNAPSHOT_CREATE_IMAGE
            fcntl.ioctl(fd, 0x3305)  # SNAPSHOT_FREE
        finally:
            fcntl.ioctl(fd, 0x3302)  # SNAPSHOT_UNFREEZE
    finally:
        os.close(fd)
    return struct.unpack("i", buf)[0]


def main():
    out_path, status = sys.argv[1], int(sys.argv[2])
    mounts = {}
    for line in read("/proc/mounts").splitlines():
        dev, mnt, fstype = line.split()[:3]
        mounts[mnt] = fstype
    try:
        with open("/project/.lab-write-probe", "w"):
            pass
        project_writable = True
    except OSError:
        project_writable = False
    doc = {
        "uname_r": os.uname().release,
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "env": {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "SNAPPROF_OUTPUT")},
        "mounts": mounts,
        "project_writable": project_writable,
        "power_state": read("/sys/power/state"),
        "power_disk": read("/sys/power/disk"),
        "dev_snapshot": os.path.exists("/dev/snapshot"),
        "snapprof_importable_from": __import__("snapprof").__file__,
        "bcc": bcc_check(),
    }
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=1)
    print("guest checks written", flush=True)
    # After a snapshot cycle /output (9p) is dead: the outbox must still bring files home.
    in_suspend = snapshot_cycle()
    with open(os.path.join(os.environ["SNAPPROF_OUTBOX"], "after-cycle.json"), "w") as f:
        json.dump({"in_suspend": in_suspend, "uptime": read("/proc/uptime")}, f)
    print("snapshot cycle done", flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
