"""A capture whose writer was killed mid-transaction (a hot journal beside it) still reads:
every committed run, none of the run in flight, and the file is never modified.

The writer is a real process (``CaptureWriter``, as the recorder uses it) killed with
SIGKILL: once at a known point (inside the transaction of a run, after SQLite has already
spilled some of its pages into the database file), and at seeded random moments while it
commits run after run.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snapprof.analysis.frames import load_capture
from snapprof.capture import CaptureReader
from snapprof.cli import main

ROOT = Path(__file__).resolve().parent.parent
EVENTS_PER_RUN = 400

WRITER = r"""
import sys, time
from snapprof.capture import CaptureWriter, Run

path, committed, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
w = CaptureWriter(path)
w.set_meta({"kernel_release": "6.1.0-fuzz", "trigger": "snapshot"})
w.set_probes([("freeze_processes", "freezer", "freeze_processes", True, None)])
w.db.execute("PRAGMA cache_size = 2")  # small cache: uncommitted pages spill into the file

def run(i):
    r = Run(trigger="snapshot", status="complete", started_ns=i * 10**9, ended_ns=i * 10**9 + 5)
    r.metric("freeze_user_ms", float(i), "ms", "probe")
    r.events.extend((i * 10**9 + k, 0, 1, "w" * 40, "instant", f"e{k}", k, "x" * 200)
                    for k in range(EVENTS_PER_RUN))
    return r

for i in range(1, committed + 1):
    w.add_run(run(i))
if mode == "loop":
    print("ready", flush=True)
    i = committed
    while True:
        i += 1
        w.add_run(run(i))
# hang inside the transaction of the next run, after its rows went in
w.db.execute("BEGIN IMMEDIATE")
w.db.execute("INSERT INTO runs(trigger, status) VALUES ('snapshot', 'complete')")
rid = w.db.execute("SELECT max(run_id) FROM runs").fetchone()[0]
w.db.executemany("INSERT INTO events(run_id, ts_ns, kind, name, detail) VALUES (?, ?, 'instant', 'inflight', ?)",
                 [(rid, k, "y" * 300) for k in range(3000)])
print("ready", flush=True)
time.sleep(600)
""".replace("EVENTS_PER_RUN", str(EVENTS_PER_RUN))


def _writer(path: Path, committed: int, mode: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(committed), mode],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _digest(path: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in path.parent.iterdir() if p.name.startswith(path.name)}


def _check_whole_runs(path: Path) -> tuple[list[int], list[str]]:
    """(run ids read back, the reader's warnings); each run with all its rows."""
    with CaptureReader(path) as r:
        runs = [x["run_id"] for x in r.runs()]
        counts = dict(r.fetch("SELECT run_id, count(*) FROM events GROUP BY run_id"))
        metrics = dict(r.fetch("SELECT run_id, value FROM metrics"))
        warnings = r.warnings
    assert runs == list(range(1, len(runs) + 1))
    assert all(counts.get(rid) == EVENTS_PER_RUN for rid in runs), counts
    assert metrics == {rid: float(rid) for rid in runs}
    return runs, warnings


def test_killed_inside_a_transaction(tmp_path, capsys):
    path = tmp_path / "killed.snap"
    proc = _writer(path, committed=3, mode="hang")
    _kill(proc)
    journal = Path(str(path) + "-journal")
    assert journal.exists() and journal.stat().st_size > 0  # a hot journal
    # the case of the issue: a read-only connection cannot roll the journal back
    ro = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError):
        ro.execute("SELECT count(*) FROM runs").fetchone()
    ro.close()
    before = _digest(path)
    runs, warnings = _check_whole_runs(path)
    assert runs == [1, 2, 3]  # the run in flight is gone
    assert any("rolled back" in w for w in warnings), warnings
    frames = load_capture(path)
    assert list(frames.runs["run_id"]) == [1, 2, 3]
    assert main(["report", str(path), "--format", "text"]) == 0
    out, err = capsys.readouterr()
    assert "3 (3 complete, 0 failed, 0 incomplete)" in out
    assert "stopped in the middle of a transaction" in err and err.count("\n") == 1
    assert _digest(path) == before  # file and journal untouched


def test_killed_at_random_moments(tmp_path):
    rng = random.Random(20261130)
    seen = set()
    for i in range(4):
        path = tmp_path / f"loop{i}.snap"
        proc = _writer(path, committed=1, mode="loop")
        time.sleep(rng.uniform(0.05, 0.8))
        _kill(proc)
        before = _digest(path)
        runs, _ = _check_whole_runs(path)  # with or without a journal to roll back
        assert len(runs) >= 1
        seen.add(len(runs))
        assert _digest(path) == before
    assert len(seen) > 1  # killed at different points
