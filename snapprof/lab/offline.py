"""Run a snapprof command in a lab guest without the 9p shares, for jobs that run cycles.

After the first snapshot cycle the 9p shares (/project, /output) hang: the THAW
callbacks reset every virtio device and virtio-9p has no PM restore (virtio-blk disks
come back). So a job that runs cycles
  1. copies the parts of the project tree it runs into the guest's tmpfs, before any cycle
     (``relocate``), and runs from there;
  2. writes its results under the guest's tmpfs;
  3. packs them as a tar onto an extra raw disk (``pack``, /dev/vdb), which the host reads
     back after the guest powered off (``unpack``).

Guest side, as a module (standard library only: it runs in the guest's python3):

    python3 -m snapprof.lab.offline --pack /dev/vdb --out /tmp/out -- record -o /tmp/out/x.snap --runs 3

runs ``python3 -m snapprof record ...`` from the tmpfs copy with /tmp/out as its working
directory, streams its output, packs /tmp/out onto /dev/vdb and exits with its status.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile

TREE_PARTS = ("snapprof", "probes", "tests/lab", "benchmarks")
GUEST_TREE = "/tmp/snapprof-tree"


def relocate(src: str, dst: str = GUEST_TREE) -> str:
    """Copy what a job runs from the project tree into dst (guest tmpfs); returns dst."""
    for part in TREE_PARTS:
        s = os.path.join(src, part)
        if os.path.isdir(s):
            shutil.copytree(s, os.path.join(dst, part), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


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


def unpack(disk: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Host side: extract the tar a job packed onto the raw disk into dest."""
    from snapprof.errors import SnapprofError

    try:
        with open(disk, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise SnapprofError(f"the guest left no results on {disk} ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m snapprof.lab.offline",
                                description="Run `snapprof ARGS` from a tmpfs copy of the tree "
                                "and pack --out onto a raw disk (lab guests only).")
    p.add_argument("--pack", required=True, metavar="DEVICE", help="raw disk for the results")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (on tmpfs)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- snapprof arguments")
    a = p.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tree = relocate(src)
    os.chdir("/")  # the job's working directory was /project, which dies at the first cycle
    os.makedirs(a.out, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=tree, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    rc = subprocess.call([sys.executable, "-m", "snapprof", *args], cwd=a.out, env=env)
    size = pack(a.out, a.pack)
    print(f"snapprof lab: results packed onto {a.pack} ({size} bytes); exit {rc}", flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
