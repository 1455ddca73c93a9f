"""The report's "what is in the image" section (snapprof.report.composition) in HTML, text
and JSON: rendered from synthetic captures (tests/test_composition.py), hostile command lines
escaped, the sweep chart with several settings, and absent with its reason on old captures."""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

import pytest

from test_composition import HOSTILE_CMD, capture, composition_run, load_capture, write
from snapprof.analysis import composition as comp
from snapprof.report.fmt import number
from snapprof.report.html import render_html
from snapprof.report.json import render_json
from snapprof.report.model import build_model
from snapprof.report.text import render_text

DATA = Path(__file__).parent / "data"
OLD = DATA / "trixie-6.12-snapshot.snap"


@pytest.fixture(scope="module")
def sweep_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comp")
    settings = [(0, 41_000, 9_000.0), (504_727_296, 52_000, 10_500.0), (809_549_824, 66_661, 12_400.0)]
    runs = [composition_run(i * 2 + j, setting=s, image=img + 10 * j, cycle_ms=ms, shrink=True)
            for i, (s, img, ms) in enumerate(settings) for j in range(2)]
    return build_model(load_capture(write(tmp / "s.snap", runs, {"image_size_sweep": "0,25%,default"})))


@pytest.fixture(scope="module")
def old_model():
    return build_model(load_capture(OLD))


def _section(html: str) -> str:
    return html[html.index('<div id="composition"'):html.index("<h3>Page accounting</h3>")]


def test_html_section_one_chart_one_table_processes_and_sweep(sweep_model):
    sec = _section(render_html(sweep_model))
    assert "What is in the image" in sec
    assert sec.count("<svg") == 2  # the composition chart and the sweep chart
    assert 'table class="composition"' in sec and "Unattributed" in sec
    assert 'table class="processes"' in sec and "python3 -m http.server 8000" in sec
    assert 'table class="sweep"' in sec and "0,25%,default" in sec
    assert "asked for 30,000 pages" in sec


def test_html_escapes_hostile_command_lines(sweep_model):
    html = render_html(sweep_model)
    assert "<script>alert(1)</script>" not in html
    assert "evil&lt;b&gt;" in _section(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in _section(html)


def test_text_section_is_terminal_safe(sweep_model):
    text = render_text(sweep_model)
    sec = text[text.index("Memory: what is in the image"):text.index("\nDevices")]
    assert "\x1b" not in text and "\u202e" not in text
    assert "evil\\x1b[2J<script>alert(1)</script>\\u202e --flag" in sec
    assert "Unattributed (MemTotal - MemFree - the kinds)" in sec
    assert re.search(r"Saveable pages before shrinking +80,502 ", sec)  # the kernel's count beside it
    assert "image_size" in sec and "no sweep" not in sec


def test_json_holds_the_section_strictly(sweep_model):
    data = json.loads(render_json(sweep_model))
    c = data["composition"]
    assert c["summary"]["present"] and len(c["sweep"]["rows"]) == 3
    assert any(p["cmdline"] == HOSTILE_CMD for p in c["processes"]["rows"])


def test_negative_unattributed_in_the_report(tmp_path):
    from test_composition import BEFORE, MEM_TOTAL
    m = build_model(capture(tmp_path, before={**BEFORE, "vmalloc": 40_000}, free=MEM_TOTAL - 340_000))
    sec = _section(render_html(m))
    from test_composition import ATTRIBUTED
    neg = number(340_000 - (ATTRIBUTED + 27_500), "kB")
    assert neg.startswith("-") and neg in sec and "counters overlap" in sec
    text = render_text(m)
    assert neg in text and "negative:" in text


def test_old_capture_says_why_once(old_model):
    html = render_html(old_model)
    sec = _section(html)
    assert "Memory composition not measured: " + escape(comp.NO_COMPOSITION) in sec
    assert "<svg" not in sec and 'table class="composition"' not in sec
    assert "no sweep: " not in sec and "No sweep: one image_size setting" in sec
    text = render_text(old_model)
    assert "not measured: " + comp.NO_COMPOSITION in text
    # the not-measured list: the composition's figures share that one reason
    reasons = {m["reason"] for m in old_model["header"]["not_measured"]
               if m["name"] in comp.COMPOSITION_METRICS}
    assert reasons == {comp.NO_COMPOSITION}
    assert json.loads(render_json(old_model))["composition"]["summary"]["present"] is False
