"""Image write/read throughput, compression ratio and resume time of real hibernations
(tests/data/*-trigger-hibernate.snap, recorded in the lab on 6.1 and 6.12), in report and
compare.

Expected values are read from the capture files themselves with sqlite3 (the kernel-log
figures the recorder stored, the raw events), never written into the tests.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from snapprof.analysis.compare import compare, group_captures, load_captures
from snapprof.analysis.frames import load_capture
from snapprof.analysis.phases import after_copy
from snapprof.analysis.summary import metric_summary
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


# --------------------------------------------------------------------------- compare 6.1 vs 6.12


@pytest.fixture(scope="module")
def real_pair():
    frames = load_captures([OLD, NEW], for_compare=True)
    return frames, compare(group_captures(frames))


def test_compare_shows_each_kernels_own_figures(real_pair):
    frames, c = real_pair
    assert c.labels == [f.meta["kernel_release"] for f in frames]
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
