"""What `snapprof report` shows first (issue 17, deliverable 1): what was recorded, the
headline figures, failures and anomalies, one timeline; the probe table and the full
not-measured list collapsed near the end, a reason shared by many rows said once.

On the real lab captures (tests/data) and the fixture with a failed and an incomplete run.
What should be listed is worked out from the report model, never known in advance.
"""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from report_fixtures import write_capture
from snapprof.analysis.frames import load_capture
from snapprof.report.first_screen import first_screen
from snapprof.report.html import render_html
from snapprof.report.model import build_model

DATA = Path(__file__).parent / "data"
SNAPSHOT = DATA / "bookworm-6.1-snapshot.snap"
PM_TEST = DATA / "bookworm-6.1-trigger-pm-test-freezer.snap"
HIBERNATE = DATA / "trixie-6.12-trigger-hibernate.snap"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path


def _page(path):
    model = build_model(load_capture(path))
    return model, render_html(model)


class _Sections(HTMLParser):
    """main > section ids in order, and per section its text and <details> depth of text."""

    def __init__(self):
        super().__init__()
        self.order, self.text, self.cur, self.details, self.open_text = [], {}, None, 0, {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.cur = a.get("id")
            self.order.append(self.cur)
            self.text[self.cur], self.open_text[self.cur] = [], []
        if tag == "details":
            self.details += 1

    def handle_endtag(self, tag):
        if tag == "details":
            self.details -= 1

    def handle_data(self, data):
        if self.cur and data.strip():
            self.text[self.cur].append(data.strip())
            if not self.details:
                self.open_text[self.cur].append(data.strip())


def _parse(html: str) -> _Sections:
    p = _Sections()
    p.feed(html)
    return p


def test_first_screen_order_and_the_lists_at_the_end():
    _, html = _page(_need(SNAPSHOT))
    p = _parse(html)
    assert p.order[:4] == ["header", "headline", "problems", "timeline"]
    assert p.order[-1] == "details"
    # the probe table and the not-measured list are in the last section, collapsed
    assert html.index('<details id="probes"') > html.index('<section id="kernel-log">')
    assert html.index('<details id="not-measured">') > html.index('<section id="kernel-log">')
    assert "<th>probe</th>" not in html[:html.index('<section id="details">')]


def test_what_was_recorded_is_said_up_front():
    model, html = _page(_need(SNAPSHOT))
    text = " ".join(_parse(html).open_text["header"])
    meta = model["header"]["meta"]
    for part in (meta["kernel_release"], meta["machine"], meta["trigger"],
                 f"{model['header']['runs_total']}: {model['header']['runs_by_status']['complete']} complete"):
        assert part in text


def test_a_reason_shared_by_many_not_measured_rows_is_said_once():
    model, html = _page(_need(SNAPSHOT))
    nm = model["header"]["not_measured"]
    reasons = [x["reason"] for x in nm]
    shared = {r for r in reasons if reasons.count(r) > 1}
    assert shared  # the capture has such a reason
    block = html[html.index('<details id="not-measured">'):html.index("</details>", html.index('<details id="not-measured">'))]
    listed = re.findall(r'<li><span class="nm">(.*?)</span>', block)
    listed = [unescape(x) for x in listed]
    assert sorted(listed) == sorted(set(reasons))  # each reason once
    for x in nm:  # and every figure is still named
        assert f'<span class="muted">{x["name"]}</span>' in block


def test_failed_and_incomplete_runs_are_in_the_first_screen(tmp_path):
    cap = write_capture(tmp_path / "f.snap")
    model, html = _page(cap)
    problems = " ".join(_parse(html).open_text["problems"])
    assert "1 failed run" in problems and "1 incomplete run" in problems
    assert "freeze_processes returned -16 (EBUSY)" in problems
    assert "(no end recorded)" in problems
    assert "None:" not in problems


def test_headline_figure_not_measured_is_an_anomaly_with_its_reason():
    model, html = _page(_need(PM_TEST))
    missing = [c for c in model["headline"] if not c["n"]]
    assert missing  # pm_test=freezer never makes an image
    problems = " ".join(_parse(html).open_text["problems"])
    for c in missing:
        assert c["label"] in problems and c["reason"] in problems
    fs = first_screen(model)
    others = len(model["header"]["not_measured"]) - len(missing)
    assert fs["other_not_measured"] == others
    assert f"{others} other figures not measured" in problems


def test_coarse_resolution_is_an_anomaly():
    model, html = _page(_need(SNAPSHOT))
    coarse = [m for m in model["metrics"] if m["n"] and "sleep-time" in (m["method"] or "")]
    assert coarse  # the copy window comes from the kernel's sleep-time report
    problems = " ".join(_parse(html).open_text["problems"])
    assert "coarse resolution" in problems
    for m in coarse:
        assert m["label"] in problems


def test_a_sound_capture_says_none_and_shows_one_timeline():
    model, html = _page(_need(HIBERNATE))
    fs = first_screen(model)
    if fs["runs_not_complete"] or fs["drops"] or fs["coarse"] or fs["headline_missing"]:
        pytest.skip("this capture has anomalies")
    assert "None: every run completed" in html
    timeline = html[html.index('<section id="timeline">'):html.index('<section id="runs">')]
    first_details = timeline.find("<details")
    assert timeline[:first_details].count("<svg") == 1


def test_only_one_timeline_is_open_when_there_are_several():
    model, html = _page(_need(SNAPSHOT))
    n = len(model["timelines"]["runs"])
    assert n > 1
    timeline = html[html.index('<section id="timeline">'):html.index('<section id="runs">')]
    head, rest = timeline.split("<details>", 1)
    assert head.count("<svg") == 1
    assert rest.count("<svg") == n - 1
    assert f"Timelines of {n - 1} other runs" in rest


def test_an_unknown_drop_count_is_an_anomaly_not_a_zero():
    from snapprof.report.first_screen import first_screen, has_problems

    model = {"header": {"ringbuf_drops": None, "runs_with_drops": [], "runs_drops_unknown": [1, 2],
                        "not_measured": [], "probes": [], "runs_total": 2},
             "headline": [], "metrics": []}
    fs = first_screen(model)
    assert fs["drops"] is None and fs["runs_drops_unknown"] == [1, 2]
    assert has_problems(fs)  # never "no record was lost"
