"""A guest's QEMU dies with the snapprof process that started it, even on SIGKILL."""

import os
import signal
import subprocess
import sys
import time

SUPERVISOR = """
import subprocess, sys, time
from snapprof.lab.qemu import _die_with_parent
child = subprocess.Popen(["sleep", "300"], preexec_fn=_die_with_parent, start_new_session=True)
print(child.pid, flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_child_is_killed_when_supervisor_is_sigkilled():
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE, text=True)
    child = int(sup.stdout.readline())
    assert _alive(child)
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
