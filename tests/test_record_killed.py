"""A recorder killed (SIGKILL) in the middle of a failed cycle: the capture it leaves reads,
keeps every cycle that ended, and says that the cycle in flight began and never ended — the
reader, the text report and compare say what the capture knows, and nothing more.

The recorder is a real process running ``Recorder`` with a scripted trigger and kernel log
(as tests/test_record_loop.py): cycle 1 fails (a freeze failure, tasks named by the kernel),
cycle 2 hangs, as the freezer does while it waits for a task, and is killed there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from snapprof.capture import STOPPED_IN_CYCLE, CaptureReader
from snapprof.analysis.frames import load_capture
from snapprof.analysis.failures import failure_rate

ROOT = Path(__file__).resolve().parent.parent

RECORDER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from snapprof.record import kmsg, recorder, sysinfo, culprits
from snapprof.record import triggers as trg

LOG = [(1, 10, 6, "Freezing user space processes"),
       (2, 20, 3, "Freezing user space processes failed after 3.004 seconds "
                  "(1 tasks refusing to freeze, wq_busy=0):"),
       (3, 21, 6, "task:dd              state:D stack:0     pid:273   tgid:273   ppid:1      flags:0x00004006"),
       (4, 22, 6, "Call Trace:"),
       (5, 23, 6, " <TASK>"),
       (6, 24, 6, " percpu_rwsem_wait+0x10a/0x130"),
       (7, 25, 6, " ext4_buffered_write_iter+0x2f/0x110"),
       (8, 26, 6, " </TASK>"),
       (9, 30, 6, "Restarting tasks ... done.")]

class Reader:
    lost = 0
    def __init__(self, *a, **k): pass
    def mark(self): pass
    def read_new(self): return list(LOG)
    def close(self): pass

class Trigger:
    name = "snapshot"
    def __init__(self, *a, **k): self.n = 0
    def run(self, intr):
        self.n += 1
        if self.n == 2:
            print("in cycle 2", flush=True)
            time.sleep(600)  # frozen in the cycle, as a freezer waiting for a task
        out = trg.CycleOutcome(started_ns=100, ended_ns=3_100_000_100, pm_test="none")
        out.status, out.error = "failed", "SNAPSHOT_FREEZE failed: Device or resource busy (EBUSY)"
        return out
    def close(self): pass

sysinfo.check_can_record = lambda trigger: None
kmsg.KmsgReader = Reader
trg.SnapshotTrigger = Trigger
trg.lock_memory = lambda: None
culprits.memory_users = lambda *a, **k: []
opts = recorder.Options(output=sys.argv[1], probes=False, interval=0, runs=3)
recorder.Recorder(opts, log=lambda line: None).run()
"""


def test_recorder_killed_in_a_failed_cycle(tmp_path):
    path = tmp_path / "killed.snap"
    proc = subprocess.Popen([sys.executable, "-c", RECORDER, str(path), str(ROOT)],
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "in cycle 2"
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = path.read_bytes()

    with CaptureReader(path) as r:
        runs = r.runs()
        culprit_rows = r.table("culprits")
    assert [(x["run_id"], x["status"]) for x in runs] == [(1, "failed"), (2, "incomplete")]
    assert runs[1]["error"] == STOPPED_IN_CYCLE
    assert runs[1]["started_wall"]  # when the cycle began: the one thing known about it
    assert [(c["run_id"], c["pid"], c["comm"]) for c in culprit_rows] == [(1, 273, "dd")]

    frames = load_capture(path)
    rate = failure_rate(frames)
    assert (rate["failed"], rate["runs"]) == (2, 2)

    out = subprocess.run([sys.executable, "-m", "snapprof", "report", "--format", "text",
                          "-o", "-", str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "recorder stopped during this cycle" in out.stdout
    assert "273" in out.stdout and "dd" in out.stdout
    assert path.read_bytes() == before  # reading never writes
