"""Lab jobs that run snapshot cycles cannot use the 9p shares after the first cycle: the
THAW callbacks reset every virtio device, and virtio-9p has no PM restore, so /project and
/output hang from then on (virtio-blk disks come back). So a job
  1. copies the project tree to the guest's tmpfs before any cycle (``relocate``) and
     runs from there, with PWD set to the copy (clang, inside bcc, stats $PWD),
  2. writes its results under the guest's tmpfs,
  3. packs them into a tar written to an extra raw disk (``pack``: /dev/vdb),
and the host reads that tar back (``unpack``). Standard library only.
"""

from __future__ import annotations

import io
import os
import tarfile

from snapprof.lab.offline import TREE_PARTS, relocate  # noqa: E402,F401 (the product's copy step)


def pack(folder: str, device: str = "/dev/vdb") -> int:
    """Write folder as a tar stream onto the raw device; returns the bytes written."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder, arcname=".")
    data = buf.getvalue()
    fd = os.open(device, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(data)


def unpack(disk: str, dest: str) -> None:
    """Host side: extract the tar a job packed onto the raw disk into dest."""
    with open(disk, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        tar.extractall(dest, filter="data")
