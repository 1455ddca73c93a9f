"""Guest job: one /dev/snapshot snapshot-and-continue cycle, and the kernel log it left.

Runs inside a lab guest as root: ``python3 tests/lab/kmsg_cycle.py``. Prints, as one JSON
line after the marker ``KMSG_CYCLE_JSON``, what
snapprof.record.kmsg and .sysinfo make of the real kernel: the records read from /dev/kmsg
since just before the cycle, the kernel's figures, errors, the printk-time copy window, the
image size the device reports, and the machine facts. Standard library only.

Nothing is read from or written to a 9p share after the cycle: the lab's virtio-9p mounts
(/project, /output) hang once the devices went through freeze/thaw (virtio_9p has no PM
callbacks), so every module is imported before and the result goes to stdout (a serial port).
"""

import fcntl
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from snapprof.errors import SnapprofError  # noqa: E402
from snapprof.record import kmsg, sysinfo  # noqa: E402

# include/uapi/linux/suspend_ioctls.h, magic '3'
SNAPSHOT_FREEZE = 0x3301
SNAPSHOT_UNFREEZE = 0x3302
SNAPSHOT_FREE = 0x3305
SNAPSHOT_CREATE_IMAGE = 1 << 30 | 4 << 16 | 0x3311
SNAPSHOT_GET_IMAGE_SIZE = 2 << 30 | 8 << 16 | 0x330E


def cycle() -> dict:
    out = {}
    fd = os.open("/dev/snapshot", os.O_RDONLY)
    try:
        t0 = time.monotonic()
        fcntl.ioctl(fd, SNAPSHOT_FREEZE)
        try:
            t1 = time.monotonic()
            buf = bytearray(4)
            fcntl.ioctl(fd, SNAPSHOT_CREATE_IMAGE, buf, True)
            t2 = time.monotonic()
            out["in_suspend"] = struct.unpack("i", buf)[0]
            size = bytearray(8)
            fcntl.ioctl(fd, SNAPSHOT_GET_IMAGE_SIZE, size, True)
            out["image_bytes"] = struct.unpack("q", size)[0]
            fcntl.ioctl(fd, SNAPSHOT_FREE)
        finally:
            fcntl.ioctl(fd, SNAPSHOT_UNFREEZE)
        out["freeze_ioctl_s"] = t1 - t0
        out["create_image_ioctl_s"] = t2 - t1
    finally:
        os.close(fd)
    return out


def main() -> None:
    result = {"meta": sysinfo.collect_meta(), "support": sysinfo.hibernation_support(),
              "memory": sysinfo.memory_metrics(), "power": sysinfo.power_settings()}
    checks = {}
    for trigger in ("snapshot", "pm-test:core", "hibernate"):
        try:
            sysinfo.check_can_record(trigger)
            checks[trigger] = None
        except SnapprofError as e:
            checks[trigger] = str(e)
    result["checks"] = checks
    with kmsg.KmsgReader() as reader:
        reader.mark()
        result["cycle"] = cycle()
        records = reader.read_new()
        result["overruns"], result["lost"] = reader.overruns, reader.lost
    result["records"] = records
    result["figures"] = kmsg.kernel_figures(records)
    result["errors"] = kmsg.kernel_errors(records)
    result["sched_clock_stable"] = sysinfo.sched_clock_stable()
    result["copy_window"] = kmsg.copy_window_from_printk(records, result["sched_clock_stable"])
    result["copy_window_unchecked"] = kmsg.copy_window_from_printk(records, True)
    sys.stdout.write("KMSG_CYCLE_JSON " + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
