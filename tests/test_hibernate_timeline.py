"""The time after the atomic copy of a real hibernation, on the real lab captures.

tests/data/*-trigger-hibernate.snap are real `snapprof lab record --trigger hibernate`
captures (QEMU TCG, Debian 6.1 and 6.12; one cycle each): the restored system's run joined
with the serial console of both boots (write and read figures from the writing and the
boot kernel's logs, lab_offline_ms from the lab host's clock). Checks are cross-checks
against the events and the kernels' own log lines, not copies of the numbers.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from snapprof.analysis.compare import compare, group_captures, load_captures
from snapprof.analysis.frames import load_capture
from snapprof.analysis.phases import CLOCK_JUMP, LESS_SLEEP, after_copy
from snapprof.report import plots
from snapprof.report.html import render_html
from snapprof.report.model import build_model

DATA = Path(__file__).parent / "data"
HIBERNATE = sorted(DATA.glob("*-trigger-hibernate.snap"))
SNAPSHOT = sorted(DATA.glob("*-snapshot.snap"))

pytestmark = pytest.mark.skipif(not HIBERNATE, reason="no real hibernate capture in tests/data")

_WROTE = re.compile(r"Wrote (\d+) kbytes in (\d+)\.(\d\d) seconds")
_READ = re.compile(r"Read (\d+) kbytes in (\d+)\.(\d\d) seconds")


def _event_ts(frames, run_id, name, kind):
    ev = frames.events
    hit = ev[(ev["run_id"] == run_id) & (ev["name"] == name) & (ev["kind"] == kind)]
    return float(hit["ts_ns"].iloc[0])


def _log_ms(frames, run_id, pattern):
    k = frames.kmsg[frames.kmsg["run_id"] == run_id]
    (m,) = [m for m in map(pattern.search, k["text"]) if m]
    return int(m.group(2)) * 1000 + int(m.group(3)) * 10


@pytest.mark.parametrize("path", HIBERNATE, ids=lambda p: p.stem)
def test_syscore_resume_holds_the_jump_and_has_no_duration(path):
    frames = load_capture(path)
    for rid in frames.run_ids("complete"):
        ph = frames.phases[frames.phases["run_id"] == rid].set_index("phase")
        assert not (frames.events["name"] == "sleep_time").any()  # no sleep-time report here
        jump = ph.loc["syscore_resume"]
        assert jump["method"].endswith(CLOCK_JUMP) and math.isnan(jump["duration_ms"])
        # its span really holds the time away: the clock moved on by far more than any phase
        assert jump["end_ns"] - jump["start_ns"] > 60e9
        others = ph.drop(index=["syscore_resume", "copy"])
        assert (others["duration_ms"] >= 0).all() and (others["duration_ms"] < 10_000).all()
        assert not others["method"].str.endswith(CLOCK_JUMP).any()


@pytest.mark.parametrize("path", HIBERNATE, ids=lambda p: p.stem)
def test_after_copy_from_the_capture(path):
    frames = load_capture(path)
    wide = frames.wide()
    for rid in frames.run_ids("complete"):
        a = after_copy(frames.phases[frames.phases["run_id"] == rid],
                       frames.metrics[frames.metrics["run_id"] == rid])
        # the window: copy's place (end of syscore_suspend) to the restored clock running
        start = _event_ts(frames, rid, "pm:syscore_suspend", "end")
        end = _event_ts(frames, rid, "pm:syscore_resume", "end")
        assert (a["start_ns"], a["end_ns"]) == (start, end)
        assert a["window_ms"] == pytest.approx((end - start) / 1e6)
        steps = {s["phase"]: s for s in a["steps"]}
        assert list(steps) == ["image_write", "power_off", "boot", "image_read", "restore"]
        # write and read: the metrics, which are the two kernels' own log lines
        assert steps["image_write"]["duration_ms"] == wide.loc[rid, "write_ms"] \
            == _log_ms(frames, rid, _WROTE)
        assert steps["image_read"]["duration_ms"] == wide.loc[rid, "read_ms"] \
            == _log_ms(frames, rid, _READ)
        assert "writing kernel" in steps["image_write"]["source"]
        assert "boot kernel" in steps["image_read"]["source"]
        for untimed in ("power_off", "boot", "restore"):  # no clock gives these: never a number
            assert steps[untimed]["duration_ms"] is None and steps[untimed]["method"] is None
        assert a["offline"]["duration_ms"] == wide.loc[rid, "lab_offline_ms"]
        assert a["rest_ms"] == pytest.approx(a["window_ms"] - wide.loc[rid, "write_ms"]
                                             - wide.loc[rid, "read_ms"])
        # the rest holds the powered-off gap (and the boot): it is longer than that gap
        assert a["rest_ms"] > a["offline"]["duration_ms"] > 0


@pytest.mark.parametrize("path", HIBERNATE, ids=lambda p: p.stem)
def test_timeline_draws_the_time_away(path):
    frames = load_capture(path)
    model = build_model(frames)
    t = model["timelines"]["runs"][0]
    after = t["after_copy"]
    rows = plots._after_copy_rows(after)
    assert [r["phase"] for r in rows] == ["image_write", "after_copy_rest", "image_read"]
    write, rest, read = (r["span"] for r in rows)
    # contiguous inside the window, lengths as measured, the hatched rest what is left
    assert write[0] == after["start_ms"] and read[1] == after["end_ms"]
    assert write[1] == rest[0] and rest[1] == pytest.approx(read[0])
    wide = frames.wide()
    assert write[1] - write[0] == pytest.approx(wide.loc[1, "write_ms"])
    assert read[1] - read[0] == pytest.approx(wide.loc[1, "read_ms"])
    assert rest[1] - rest[0] == pytest.approx(after["rest_ms"])
    assert rows[1]["label"] == "Power-off, boot, restore †"
    svg = plots.timeline(t)
    for text in ("Image write †", "Image read †", "not measured exactly",
                 "lab host", "length not measured (clock jump)"):
        assert text in svg, text
    jump = next(p for p in t["phases"] if p["phase"] == "syscore_resume")
    assert jump["duration_ms"] is None  # no bar with the time away passed off as syscore resume
    html = render_html(model)
    assert "Image write †" in html and "rows marked †" in html


def test_untimed_write_leaves_it_in_the_hatched_rest():
    """A run whose image write was not timed (e.g. the writer's log lost it): no write row;
    the hatched rest starts at the copy and names it."""
    after = {"start_ms": 100.0, "end_ms": 1100.0, "window_ms": 1000.0, "window_method": "x",
             "offline": None, "rest_ms": 700.0,
             "steps": [{"phase": p, "label": lab, "duration_ms": d, "method": m, "source": None}
                       for p, lab, d, m in (("image_write", "Image write", None, None),
                                            ("power_off", "Power-off", None, None),
                                            ("boot", "Boot", None, None),
                                            ("image_read", "Image read", 300.0, "kernel-log"),
                                            ("restore", "Restore", None, None))]}
    rows = plots._after_copy_rows(after)
    assert [r["phase"] for r in rows] == ["after_copy_rest", "image_read"]
    assert rows[0]["span"] == (100.0, 800.0) and rows[1]["span"] == (800.0, 1100.0)
    assert rows[0]["label"].startswith("Image write, power-off")
    note = plots._after_copy_note(after)
    assert "powered off is not measured" in note


@pytest.mark.skipif(not SNAPSHOT, reason="no real snapshot capture in tests/data")
def test_snapshot_runs_have_no_time_away():
    frames = load_capture(SNAPSHOT[0])
    model = build_model(frames)
    for t in model["timelines"]["runs"]:
        assert t["after_copy"] is None
        ph = {p["phase"]: p for p in t["phases"]}
        assert ph["syscore_resume"]["method"].endswith(LESS_SLEEP)
        assert "†" not in plots.timeline(t)


def test_compare_says_why_syscore_resume_is_not_compared():
    if len(HIBERNATE) < 2:
        pytest.skip("needs the hibernate captures of two kernels")
    c = compare(group_captures(load_captures(HIBERNATE[:2])))
    assert "syscore_resume" not in set(c.diffs["name"])
    nc = c.not_comparable.set_index("name")
    assert "clocks' jump after the atomic copy" in nc.loc["syscore_resume", "reason"]
