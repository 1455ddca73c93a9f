"""The capture format: schema, per-run commits, version checks, refusal of non-captures."""

import sqlite3

import pytest

from snapprof import capture
from snapprof.capture import CaptureReader, CaptureWriter, Run
from snapprof.errors import SnapprofError


def _run(status="complete", **kw):
    run = Run(trigger="snapshot", status=status, started_ns=100, ended_ns=200, **kw)
    run.metric("freeze_user_ms", 12.5, "ms", "probe", "freeze_processes")
    run.metric("zero_pages", None, "pages", "kernel-log")  # not measured: no row
    run.missing("zero_pages", "kernel 6.1 does not count zero pages")
    run.events.append((150, 0, 42, "snapprof", "begin", "freeze_processes", None, None))
    run.tasks.append((42, 42, "sshd", 0, "user", 1500, 1))
    run.devices.append(("0000:00:01.0", "virtio-pci", "pci0000:00", "freeze", "suspend",
                        160, 20, 0, 7))
    run.kmsg.append((9, 1234, 6, "PM: hibernation: Allocated 100 pages for snapshot"))
    return run


def test_roundtrip(tmp_path):
    path = tmp_path / "a.snap"
    with CaptureWriter(path) as w:
        w.set_meta({"kernel_release": "6.1.0-50-amd64", "absent": None})
        w.set_probes([("freeze_processes", "freezer", "freeze_processes", True, None),
                      ("copy_data_pages", "copy", "copy_data_pages", False, "inlined")])
        assert w.add_run(_run()) == 1
        assert w.add_run(_run(status="failed", error="EBUSY")) == 2
    with CaptureReader(path) as r:
        assert r.version == capture.SCHEMA_VERSION
        assert r.meta() == {"kernel_release": "6.1.0-50-amd64"}
        assert [p["attached"] for p in r.probes()] == [0, 1]
        runs = r.runs()
        assert [(x["run_id"], x["status"], x["error"]) for x in runs] == [
            (1, "complete", None), (2, "failed", "EBUSY")]
        metrics = r.table("metrics")
        assert [(m["name"], m["value"], m["method"]) for m in metrics] == [
            ("freeze_user_ms", 12.5, "probe")] * 2
        assert r.table("not_measured")[0]["reason"].startswith("kernel 6.1")
        assert r.table("tasks")[0]["freeze_latency_ns"] == 1500
        assert r.table("devices")[0]["duration_ns"] == 20
        assert r.table("kmsg")[0]["text"].startswith("PM: hibernation")


def test_each_run_is_committed_when_added(tmp_path):
    """A reader sees run 1 while the writer is still open: a crash loses at most the run in flight."""
    path = tmp_path / "live.snap"
    w = CaptureWriter(path)
    w.add_run(_run())
    assert len(CaptureReader(path).runs()) == 1
    w.close()


def test_failed_run_insert_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "x.snap"
    w = CaptureWriter(path)
    bad = _run()
    bad.events.append((1, 0, 1, "x", "sideways", "n", None, None))  # violates the kind CHECK
    with pytest.raises(sqlite3.IntegrityError):
        w.add_run(bad)
    w.add_run(_run())
    w.close()
    r = CaptureReader(path)
    assert [x["run_id"] for x in r.runs()] == [1]
    assert len(r.table("events")) == 1


def test_existing_output_needs_force(tmp_path):
    path = tmp_path / "a.snap"
    CaptureWriter(path).close()
    with pytest.raises(SnapprofError, match="--force"):
        CaptureWriter(path)
    CaptureWriter(path, force=True).close()


def test_unwritable_directory(tmp_path):
    with pytest.raises(SnapprofError, match="does not exist"):
        CaptureWriter(tmp_path / "nope" / "a.snap")


def test_reader_refuses_newer_version(tmp_path):
    path = tmp_path / "new.snap"
    CaptureWriter(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {capture.SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(SnapprofError, match="newer than this snapprof"):
        CaptureReader(path)


def test_reader_refuses_other_sqlite_and_non_sqlite(tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.commit()
    with pytest.raises(SnapprofError, match="not a snapprof capture"):
        CaptureReader(other)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SnapprofError, match="not an SQLite file"):
        CaptureReader(text)
    with pytest.raises(SnapprofError, match="no such file"):
        CaptureReader(tmp_path / "missing.snap")
    with pytest.raises(SnapprofError, match="directory"):
        CaptureReader(tmp_path)


def test_bad_status_rejected(tmp_path):
    w = CaptureWriter(tmp_path / "a.snap")
    with pytest.raises(ValueError):
        w.add_run(Run(trigger="snapshot", status="done"))
