"""Image write/read throughput, compression ratio and resume time of real hibernations
(tests/data/*-trigger-hibernate.snap, recorded in the lab on 6.1 and 6.12), in report and
compare, and compare keeping captures of one kernel written with different compressors apart.

Expected values are read from the capture files themselves with sqlite3 (the kernel-log
figures the recorder stored, the raw events), never written into the tests. Captures with
another compressor are copies of the real 6.12 one whose meta and log lines are altered in
tmp_path; tests/data is never written.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path

import pytest

from snapprof import cli
from snapprof.analysis.compare import (UNKNOWN_COMPRESSOR, compare, default_labels,
                                       group_captures, load_captures)
from snapprof.analysis.derived import image_compressor
from snapprof.analysis.frames import load_capture
from snapprof.analysis.phases import after_copy
from snapprof.analysis.summary import metric_summary
from snapprof.errors import SnapprofError
from snapprof.report.compare_text import render_text
from snapprof.report.model import build_model
from snapprof.report.text import render_text as render_report_text

DATA = Path(__file__).parent / "data"
OLD = DATA / "bookworm-6.1-trigger-hibernate.snap"
NEW = DATA / "trixie-6.12-trigger-hibernate.snap"
SNAPSHOTS = sorted(DATA.glob("*-snapshot.snap"))
FIGURES = ("write_mbps", "read_mbps", "compression_ratio", "resume_ms")

pytestmark = pytest.mark.skipif(not (OLD.exists() and NEW.exists()),
                                reason="real lab hibernate captures not in tests/data")


def _metric(path, name):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM metrics WHERE run_id = 1 AND name = ?",
                         (name,)).fetchone()
    return None if row is None else row[0]


def _event_ts(path, name, kind):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return [r[0] for r in db.execute(
            "SELECT ts_ns FROM events WHERE run_id = 1 AND name = ? AND kind = ? ORDER BY ts_ns",
            (name, kind))]


def _value(frames, name, run_id=1):
    m = frames.metrics
    hit = m[(m["run_id"] == run_id) & (m["name"] == name)]
    assert len(hit) <= 1
    return None if hit.empty else hit.iloc[0].to_dict()


def _reason(frames, name, run_id=1):
    nm = frames.not_measured
    hit = nm[(nm["run_id"] == run_id) & (nm["name"] == name)]
    return "; ".join(hit["reason"])


# --------------------------------------------------------------------------- derived figures


def test_compression_ratio_is_the_kernels_two_figures():
    f = load_capture(NEW)
    compressed, written = _metric(NEW, "write_compressed_kbytes"), _metric(NEW, "write_kbytes")
    assert compressed and written and compressed < written  # the 6.12 lab image compressed
    row = _value(f, "compression_ratio")
    assert row["value"] == pytest.approx(compressed / written, rel=1e-12)
    assert row["unit"] == "ratio"
    assert row["method"].startswith("kernel-log")
    assert "write_compressed_kbytes / write_kbytes" in row["method"]
    assert "Image size after compression" in row["source"]


def test_compression_ratio_absent_with_the_inputs_reason_on_6_1():
    f = load_capture(OLD)
    assert _metric(OLD, "write_compressed_kbytes") is None and _metric(OLD, "write_kbytes")
    assert _value(f, "compression_ratio") is None
    why = _reason(f, "compression_ratio")
    recorded = _reason(f, "write_compressed_kbytes")
    assert recorded and "write_compressed_kbytes" in why and recorded in why


@pytest.mark.parametrize("path", [OLD, NEW], ids=["6.1", "6.12"])
def test_resume_is_the_restored_kernels_clock_from_restart_to_thaw_end(path):
    f = load_capture(path)
    # no sleep-time report in these captures: the clock runs again at the end of syscore_resume
    assert not _event_ts(path, "sleep_time", "instant")
    restart = _event_ts(path, "pm:syscore_resume", "end")[-1]
    thaw_end = max(_event_ts(path, "thaw_processes", "end") or
                   _event_ts(path, "pm:thaw_processes", "end"))
    row = _value(f, "resume_ms")
    assert row["value"] == pytest.approx((thaw_end - restart) / 1e6, abs=1e-6)
    assert row["value"] > 0 and "derived" in row["method"]
    assert "syscore_resume" in row["source"]
    # it starts where the report's time away ends
    a = after_copy(f.phases[f.phases["run_id"] == 1], f.metrics[f.metrics["run_id"] == 1])
    assert a["end_ns"] == restart


@pytest.mark.parametrize("path", SNAPSHOTS, ids=[p.stem for p in SNAPSHOTS])
def test_snapshot_runs_have_no_hibernation_figures_and_say_why(path):
    f = load_capture(path)
    for rid in f.run_ids():
        for name in FIGURES:
            assert _value(f, name, rid) is None, name
        assert "not a real hibernation (trigger snapshot)" in _reason(f, "resume_ms", rid)
        assert "write_kbytes not measured" in _reason(f, "compression_ratio", rid)
    model = build_model(f)
    io = {m["name"]: m for m in model["io"]}
    for name in FIGURES:
        assert io[name]["n"] == 0 and io[name]["median"] is None and io[name]["reason"], name
    text = render_report_text(model)
    assert "Resume in the restored kernel" in text and "not a real hibernation" in text


@pytest.mark.parametrize("path", [OLD, NEW], ids=["6.1", "6.12"])
def test_report_shows_the_figures_of_a_real_hibernation(path):
    f = load_capture(path)
    model = json.loads(json.dumps(build_model(f)))
    io = {m["name"]: m for m in model["io"]}
    for name in ("write_mbps", "read_mbps", "resume_ms"):
        assert io[name]["median"] == pytest.approx(_value(f, name)["value"]), name
    ratio = _value(f, "compression_ratio")
    if ratio is None:
        assert io["compression_ratio"]["median"] is None and io["compression_ratio"]["reason"]
    else:
        assert io["compression_ratio"]["median"] == pytest.approx(ratio["value"])
    assert model["header"]["compressor"]["name"] == "lzo"


def test_compare_loader_derives_the_same_figures_as_load_capture():
    paths = sorted(DATA.glob("*.snap"))
    for loaded, path in zip(load_captures(paths, for_compare=True), paths):
        one = load_capture(path)
        seen = 0
        for table, cols in (("metrics", ["run_id", "name", "value", "unit", "method", "source"]),
                            ("not_measured", ["run_id", "name", "reason"])):
            def rows(f):
                t = getattr(f, table)
                t = t[t["name"].isin(FIGURES[2:])][cols]
                return sorted(map(tuple, t.astype(str).to_numpy()))
            assert rows(loaded) == rows(one), (path.name, table)
            seen += len(rows(one))
        assert seen == 2 * len(one.runs), path.name  # each run: a value or a reason, for both


# --------------------------------------------------------------------------- compare 6.1 vs 6.12


@pytest.fixture(scope="module")
def real_pair():
    frames = load_captures([OLD, NEW], for_compare=True)
    return frames, compare(group_captures(frames))


def test_compare_shows_each_kernels_own_figures(real_pair):
    frames, c = real_pair
    assert c.labels == [f.meta["kernel_release"] for f in frames]
    assert not c.label_notes  # different releases: no compressor in the label
    s = c.summary
    for lab, path in zip(c.labels, (OLD, NEW)):
        own = metric_summary(load_capture(path))
        for name in FIGURES:
            hit = s[(s["kind"] == "metric") & (s["name"] == name) & (s["label"] == lab)]
            if own.loc[name, "n"] == 0:
                assert hit.empty, (lab, name)
            else:
                assert hit.iloc[0]["median"] == pytest.approx(own.loc[name, "median"]), (lab, name)
    for name in ("write_mbps", "read_mbps", "resume_ms"):
        assert c.row("metric", name, c.labels[1]) is not None, name
    nc = c.not_comparable
    ratio = nc[nc["name"] == "compression_ratio"].iloc[0]
    assert ratio["measured_in"] == c.labels[1]
    assert ratio["median"] == pytest.approx(metric_summary(load_capture(NEW)).loc[
        "compression_ratio", "median"])
    assert "not in the serial console log" in ratio["reason"]
    text = render_text(c)
    assert f"measured in {c.labels[1]}: median {ratio['median']:.3f}" in text
    assert "resume_ms" in text and "write_mbps" in text and "read_mbps" in text


# --------------------------------------------------------------------------- compressors


def _copy(tmp_path, name, compressor=None, log=True, lab=None, cmdline=None):
    """A copy of the real 6.12 capture as if written with ``compressor``: the kernel's log
    lines and the recorder's sources name it (or, log=False, name none), meta as given."""
    path = tmp_path / name
    shutil.copyfile(NEW, path)
    with sqlite3.connect(path) as db:
        if compressor or not log:
            new = f"{compressor} " if log else ""
            for table, col in (("metrics", "source"), ("kmsg", "text")):
                db.execute(f"UPDATE {table} SET {col} = replace({col}, 'lzo ', ?) "
                           f"WHERE {col} LIKE '%lzo %compression%'", (new,))
        if lab is not None:
            db.execute("UPDATE meta SET value = ? WHERE key = 'lab_compressor'", (lab,))
        if cmdline is not None:
            db.execute("UPDATE meta SET value = value || ? WHERE key = 'cmdline'", (cmdline,))
    return path


def test_compressor_from_the_kernels_log_splits_the_default_label(tmp_path, monkeypatch, capsys):
    lzo = _copy(tmp_path, "lzo.snap")
    lz4 = _copy(tmp_path, "lz4.snap", "lz4", lab="lz4")
    frames = load_captures([lzo, lz4], for_compare=True)
    assert [image_compressor(f) for f in frames] == [("lzo", "the kernel's log"),
                                                     ("lz4", "the kernel's log")]
    release = frames[0].meta["kernel_release"]
    groups = group_captures(frames)
    assert list(groups) == [f"{release} lzo", f"{release} lz4"]
    assert len(groups.notes) == 1 and "lzo.snap: lzo" in groups.notes[0]
    c = compare(groups)
    assert c.label_notes == groups.notes
    # same figures on both sides (the copies differ in names only): compared, not pooled
    row = c.row("metric", "write_mbps", f"{release} lz4")
    assert row["n_base"] == 1 and row["n"] == 1 and row["delta"] == 0
    assert c.groups[f"{release} lz4"].compressor == "lz4 (the kernel's log)"
    assert any("wrote its image with lz4" in n for n in c.setup_notes)

    monkeypatch.setattr(cli, "COMMANDS", ["compare"])
    assert cli.main(["compare", str(lzo), str(lz4), "--format", "json", "-o",
                     str(tmp_path / "c.json")]) == 0
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["labels"] == [f"{release} lzo", f"{release} lz4"]
    assert out["label_notes"] == groups.notes
    assert out["groups"][f"{release} lz4"]["compressor"] == "lz4 (the kernel's log)"
    capsys.readouterr()
    assert cli.main(["compare", str(lzo), str(lz4)]) == 0
    text = capsys.readouterr().out
    assert f"{release} lz4: lz4.snap" in text and "differ in image compressor" in text


def test_compressor_from_the_settings_when_the_log_names_none(tmp_path):
    # the log line in its pre-6.9 wording (no name): lzo, the only compressor those kernels have
    plain = _copy(tmp_path, "default.snap", log=False)
    name, how = image_compressor(load_capture(plain))
    assert name == "lzo" and "before 6.9" in how
    lab = _copy(tmp_path, "lab.snap", lab="lz4")
    cmd = _copy(tmp_path, "cmd.snap", cmdline=" hibernate.compressor=lz4")
    frames = load_captures([lab, cmd])
    assert [image_compressor(f) for f in frames] == [("lzo", "the kernel's log")] * 2  # log wins
    nolog = [_copy(tmp_path, "nolog-lab.snap", lab="lz4"),
             _copy(tmp_path, "nolog-cmd.snap", cmdline=" hibernate.compressor=LZ4"),
             _copy(tmp_path, "nolog-none.snap")]
    sysfs = _copy(tmp_path, "nolog-sysfs.snap", lab="lz4")
    nolog.append(sysfs)
    with sqlite3.connect(sysfs) as db:  # a recorder's copy of the module parameter wins
        db.execute("INSERT INTO meta (key, value) VALUES ('hibernate_compressor', 'lzo')")
    for p in nolog:  # no log line about compression: the settings decide
        with sqlite3.connect(p) as db:
            db.execute("DELETE FROM metrics WHERE name IN ('compress_threads', 'decompress_threads')")
            db.execute("DELETE FROM kmsg WHERE text LIKE '%compression%'")
    frames = load_captures(nolog)
    assert image_compressor(frames.pop()) == ("lzo", "/sys/module/hibernate/parameters/compressor")
    assert [image_compressor(f) for f in frames] == [
        ("lz4", "snapprof lab --compressor"),
        ("lz4", "hibernate.compressor= on the kernel command line"),
        None]
    labels, notes = default_labels(frames)
    release = frames[0].meta["kernel_release"]
    assert labels == [f"{release} lz4", f"{release} lz4", f"{release} {UNKNOWN_COMPRESSOR}"]
    assert "nolog-none.snap: not named" in notes[0]


def test_same_compressor_pools_and_explicit_labels_win(tmp_path):
    a, b = _copy(tmp_path, "a.snap"), _copy(tmp_path, "b.snap", lab="lzo")
    lz4 = _copy(tmp_path, "c.snap", "lz4")
    frames = load_captures([a, b, lz4])
    release = frames[0].meta["kernel_release"]
    # a and b: lzo both (kernel default and --compressor lzo alike), c lz4
    groups = group_captures(frames)
    assert {k: len(v) for k, v in groups.items()} == {f"{release} lzo": 2, f"{release} lz4": 1}
    # only one compressor among the captures of a release: the label is the release alone
    assert list(group_captures(frames[:2])) == [release] and not group_captures(frames[:2]).notes
    # --label wins; a group pooling two compressors says so
    groups = group_captures(frames, ["x", "x", "y"])
    assert list(groups) == ["x", "y"] and not groups.notes
    groups = group_captures(frames, ["x", "y", "x"])
    c = compare(groups)
    assert "image compressor" in c.groups["x"].meta_differs
    assert c.groups["x"].compressor == "lzo (the kernel's log) / lz4 (the kernel's log)"
    assert not math.isnan(c.row("metric", "write_mbps", "y")["median"])
    with pytest.raises(SnapprofError, match="nothing to compare"):
        compare(group_captures(frames[:2]))


LZ4 = DATA / "trixie-6.12-trigger-hibernate-lz4.snap"


@pytest.mark.skipif(not LZ4.exists(), reason="real lab lz4 hibernate capture not in tests/data")
def test_real_lzo_and_lz4_hibernations_of_612_are_told_apart():
    # two real trixie hibernations in the lab, one with hibernate.compressor=lz4
    frames = load_captures([NEW, LZ4], for_compare=True)
    assert [image_compressor(f)[0] for f in frames] == ["lzo", "lz4"]
    groups = group_captures(frames)
    release = frames[0].meta["kernel_release"]
    assert list(groups) == [f"{release} lzo", f"{release} lz4"]
    c = compare(groups)
    with sqlite3.connect(LZ4) as db:
        stored = dict(db.execute("select name, value from metrics where run_id = 1"))
    row = c.row("metric", "compression_ratio", f"{release} lz4")
    assert row["median"] == pytest.approx(stored["write_compressed_kbytes"] / stored["write_kbytes"])
    assert c.row("metric", "write_mbps", f"{release} lz4")["median"] == stored["write_mbps"]
