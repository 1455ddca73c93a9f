"""Run a snapprof command in a lab guest from a tmpfs copy of the tree, for jobs that run cycles.

After the first snapshot cycle the 9p shares (/project, /output) hang: the THAW callbacks
reset every virtio device and virtio-9p has no PM restore (virtio-blk disks come back).
A recorder started from /project would hang at its first lazy import after a cycle. So

    python3 -m snapprof.lab.offline -- record -o "$SNAPPROF_OUTBOX/x.snap" --runs 3

copies the parts of the tree it runs into the guest's tmpfs before any cycle (``relocate``)
and runs ``python3 -m snapprof ARGS`` from there, with "/" as its working directory. Its
results go to the outbox ($SNAPPROF_OUTBOX, see snapprof.lab.qemu), which the guest init
packs onto a spare virtio disk and the host unpacks into the output folder.
Standard library only: it runs in the guest's python3.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

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


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python3 -m snapprof.lab.offline -- SNAPPROF-ARGS...", file=sys.stderr)
        return 2
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tree = relocate(src)
    os.chdir("/")  # the job's working directory was /project, which dies at the first cycle
    # PWD too: clang inside bcc stats $PWD, which would hang on the dead 9p share
    env = dict(os.environ, PYTHONPATH=tree, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", PWD="/")
    return subprocess.call([sys.executable, "-m", "snapprof", *args], env=env)


if __name__ == "__main__":
    raise SystemExit(main())
