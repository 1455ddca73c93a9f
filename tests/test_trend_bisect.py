"""Trend and bisection on real captures (tests/data), without the lab: the figures per
kernel, the steps the statistics call real, a step decision, and the bisection's search
with a fake recorder standing in for the guests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from snapprof.analysis.bisect import check_threshold_name, decide
from snapprof.analysis.compare import load_captures, parse_threshold
from snapprof.analysis.trend import build_trend
from snapprof.errors import SnapprofError
from snapprof.lab import bisect as lab_bisect_mod
from snapprof.report import trend as rt

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def frames():
    names = ["bookworm-6.1-snapshot.snap", "trixie-6.12-snapshot.snap", "trixie-6.12-trigger-pm-test-freezer.snap"]
    return dict(zip(["b", "t", "pm"], load_captures([str(DATA / n) for n in names])))


def test_points_are_each_kernels_median_and_gaps_keep_their_reason(frames):
    t = build_trend({"6.1": [frames["b"]], "6.12": [frames["t"]], "6.12 pm_test": [frames["pm"]]})
    pts = t.points.set_index(["name", "label"])
    img = frames["t"].metrics
    want = img[img["name"] == "image_pages"]["value"].median()
    assert pts.loc[("image_pages", "6.12"), "median"] == want
    gap = pts.loc[("image_pages", "6.12 pm_test")]
    assert gap["n"] == 0 and math.isnan(gap["median"]) and gap["reason"]  # a gap with a reason, not 0
    assert pts.loc[("zero_pages", "6.1"), "n"] == 0  # 6.1 stores zero pages: no figure
    # three runs a kernel give no interval and so no verdict on any step
    assert t.real_steps().empty
    assert set(t.steps["verdict"]) <= {"too few runs (n=3 vs 3)", "not comparable", "no clear difference"} | \
        {v for v in t.steps["verdict"] if v.startswith("too few")}


def test_a_real_step_is_found_and_drawn(frames):
    # pooled twice: six runs a side, enough for a 95 % interval of the shift
    t = build_trend({"6.12": [frames["t"], frames["t"]], "6.1": [frames["b"], frames["b"]]})
    real = t.real_steps().set_index("name")
    assert "image_pages" in real.index and real.loc["image_pages", "verdict"] == "worse"
    assert real.loc["image_pages", "ci_low"] > 0
    text = rt.render_text(t, {"6.12": "a.html"})
    assert "Real steps between consecutive kernels (" in text and "image" in text.lower()
    html = rt.render_html(t, {"6.12": "a.html"})
    assert html.count("<svg") == len(t.names) and "worse" in html
    doc = json.loads(rt.render_json(t))  # strict JSON: no NaN
    assert doc["real_steps"] and doc["labels"] == ["6.12", "6.1"]


def test_step_decisions(frames):
    t6 = [frames["t"], frames["t"]]
    b6 = [frames["b"], frames["b"]]
    assert decide(t6, b6, parse_threshold("image_pages>+5%")).decision == "bad"  # +13.5 %
    assert decide(t6, b6, parse_threshold("image_pages>+50%")).decision == "good"
    v = decide(t6, b6, parse_threshold("image_pages>+13.5%"))
    assert v.decision == "undecided" and "straddles" in v.detail
    v = decide([frames["t"]], [frames["b"]], parse_threshold("image_pages>+5%"))
    assert v.decision == "undecided" and "no 95 % interval" in v.detail  # 3 runs a side
    v = decide(t6, [frames["pm"]], parse_threshold("image_pages>+5%"))
    assert v.decision == "undecided" and "cannot be compared" in v.detail
    with pytest.raises(SnapprofError, match="names no figure"):
        check_threshold_name(parse_threshold("image_pagez>+5%"))


class _FakeBuild:
    def __init__(self, release):
        self.release = release


def _fake_bisect(monkeypatch, tmp_path, frames, first_bad: int, n: int = 8, undecided_at=None):
    """Builds 0..n-1; builds from first_bad on record like 6.1 (larger image), the rest like 6.12."""
    rels = [f"7.0.{i}+deb13-amd64" for i in range(n)]
    monkeypatch.setattr(lab_bisect_mod, "bisect_range", lambda *a, **k: [_FakeBuild(r) for r in rels])
    monkeypatch.setattr("snapprof.lab.build.validate_suite", lambda s: s)
    monkeypatch.setattr("snapprof.lab.build.resolve_key", lambda suite, r, *a, **k: f"{suite}:{r}")
    recorded = []

    def ensure(self, key, parts=1):
        have = self.parts.setdefault(key, [])
        while len(have) < parts:
            recorded.append(key)
            have.append(key)
        return have

    def frames_of(self, key):
        i = rels.index(key.split(":", 1)[1])
        if undecided_at is not None and i == undecided_at:
            return [frames["pm"]] * len(self.parts[key])  # no image figure: never decides
        return [frames["b"] if i >= first_bad else frames["t"]] * (2 * len(self.parts[key]))

    monkeypatch.setattr(lab_bisect_mod._Recorder, "ensure", ensure)
    monkeypatch.setattr(lab_bisect_mod._Recorder, "frames", frames_of)
    lines = []
    res = lab_bisect_mod.lab_bisect("trixie", "7.0", "7.1", "image_pages>+5%", tmp_path, runs=5, max_runs=15,
                                    progress=lambda m: None, echo=lines.append)
    return res, recorded, lines


@pytest.mark.parametrize("first_bad", [1, 3, 5, 7])
def test_bisection_finds_the_first_bad_build(monkeypatch, tmp_path, frames, first_bad):
    res, recorded, lines = _fake_bisect(monkeypatch, tmp_path, frames, first_bad)
    assert res.outcome == "found"
    assert res.first_bad == f"7.0.{first_bad}+deb13-amd64" and res.last_good == f"7.0.{first_bad - 1}+deb13-amd64"
    assert len(set(recorded)) <= 2 + 3  # the ends and log2(8) middles at most
    assert any(line.startswith("step ") and "BAD" in line for line in lines)
    log = json.loads((tmp_path / "bisect.json").read_text())
    assert log["first_bad"] == res.first_bad and (tmp_path / "bisect.txt").exists()


def test_an_undecided_step_gets_more_runs_then_stops_without_a_guess(monkeypatch, tmp_path, frames):
    res, recorded, lines = _fake_bisect(monkeypatch, tmp_path, frames, first_bad=6, undecided_at=3)
    assert res.outcome == "undecided" and res.first_bad is None
    assert recorded.count("trixie:7.0.3+deb13-amd64") == 3  # 5 + 5 + 5 runs = --max-runs 15
    assert "after 7.0.3" not in res.message and "at or before 7.0.7" in res.message
    assert any("recording 5 more" in line for line in lines)


def test_nothing_to_bisect_when_the_bad_build_is_not_past_the_threshold(monkeypatch, tmp_path, frames):
    res, _, _ = _fake_bisect(monkeypatch, tmp_path, frames, first_bad=99)
    assert res.outcome == "no change" and "nothing to bisect" in res.message


def test_a_change_of_a_figure_with_no_good_direction_is_a_real_step(frames):
    # zero pages have no better or worse: their verdict is "changed (higher)" / "(lower)"
    from snapprof.analysis.trend import is_real

    assert is_real("changed (higher)") and is_real("worse") and is_real("better")
    assert not is_real("no clear difference") and not is_real("too few runs (n=3 vs 3)")
    assert not is_real("not comparable") and not is_real(None)


def test_trend_text_shows_control_characters_of_capture_text(frames):
    t = build_trend({"6.12\x1b]0;pwned\x07": [frames["t"]], "6.1": [frames["b"]]})
    text = rt.render_text(t)
    assert "\x1b" not in text and "\x07" not in text and "\\x1b" in text
