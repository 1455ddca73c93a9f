"""Rotating captures (snapprof record --rotate DIR, what `snapprof service` runs): a new
capture past a size or an age, only between cycles, each a whole capture with the meta and
probes, the newest N kept, and every file readable while the recorder writes."""

from __future__ import annotations

import pytest

from snapprof.capture import CaptureReader, Run
from snapprof.errors import SnapprofError
from snapprof.record.rotate import RotatingWriter


class Clock:
    def __init__(self):
        self.t = 1_790_000_000.0

    def __call__(self):
        return self.t


def _run(i, events=0):
    r = Run(trigger="none", status="complete", started_ns=i, ended_ns=i + 1)
    r.metric("cycle_ms", float(i), "ms", "recorder")
    r.events.extend((i, 0, 1, "x", "instant", f"e{k}", k, "d" * 200) for k in range(events))
    return r


def test_rotates_by_age_between_cycles_and_keeps_the_newest(tmp_path):
    clock = Clock()
    (tmp_path / "notes.txt").write_text("not ours")
    w = RotatingWriter(tmp_path, max_bytes=None, max_age_s=3600, keep=2, clock=clock)
    w.set_meta({"kernel_release": "6.12.0-test"})
    w.set_probes([("freeze_processes", "freezer", "freeze_processes", True, None)])
    first = w.current
    w.add_run(_run(1))
    clock.t += 3000
    begun = w.begin_run("none", None)  # not due yet
    clock.t += 1000  # due now, but a begun run ends in its own file
    w.add_run(_run(2), begun)
    assert w.current == first and w.rotations == 0
    w.add_run(_run(3))  # due: a new file first
    second = w.current
    assert second != first and w.rotations == 1
    clock.t += 4000
    w.add_run(_run(4))
    third = w.current
    w.close()
    # keep=2: the oldest went; a file that is not ours stayed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["notes.txt", second.name, third.name])
    for path, ids in ((second, [1]), (third, [1])):
        with CaptureReader(path) as r:
            assert [x["run_id"] for x in r.runs()] == ids
            assert r.meta()["kernel_release"] == "6.12.0-test"  # every file is whole
            assert r.probes()[0]["name"] == "freeze_processes"


def test_rotates_by_size_and_the_live_file_reads(tmp_path):
    w = RotatingWriter(tmp_path, max_bytes=64 << 10, max_age_s=None, keep=10)
    w.set_meta({"kernel_release": "k"})
    for i in range(6):
        w.add_run(_run(i, events=100))  # ~25 kB a run
        with CaptureReader(w.current) as r:  # readable while it is written
            assert r.runs()
    assert w.rotations >= 1 and len(w.files()) == w.rotations + 1
    w.close()


def test_bad_folders_are_one_line(tmp_path):
    with pytest.raises(SnapprofError, match="not a directory"):
        RotatingWriter(tmp_path / "missing")
    with pytest.raises(SnapprofError, match="keep at least one"):
        RotatingWriter(tmp_path, keep=0)


def test_record_rotate_on_the_command_line(tmp_path, capsys):
    from snapprof.cli import main

    assert main(["record", "--rotate", str(tmp_path), "-o", str(tmp_path / "x.snap")]) == 2
    assert "give either -o FILE or --rotate DIR" in capsys.readouterr().err
    assert main(["record", "--trigger", "none"]) == 2
    assert "give either -o FILE or --rotate DIR" in capsys.readouterr().err
