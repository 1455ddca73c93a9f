"""The HTML report and the comparison in headless Chromium, network off.

The report: no console error, no request beyond the file itself, every section present,
hostile task/device names shown as text and never run. Two pages: the real 6.12 lab capture
with its slowest task and device renamed to ``<script>alert(1)</script>``, and the synthetic
capture with a failed and an incomplete run.

The first screen (issue 17), in a 1280x900 window: no horizontal scroll (also with every
collapsed section opened), and the top 900 px show what a reader needs first — for the
report of every real capture in tests/data (and the synthetic failed one, and a real one
with a long unbroken device name): kernel, trigger, runs, every headline figure and the
whole "Failures and anomalies" section; for the comparison of the real 6.1 and 6.12
captures (as recorded, and pooled twice for real verdicts): the summary (a sentence per real
change shown, the count of the others, the settings that differ) and the forest plot.

The docs' pictures (docs/img/*-first-screen.png) are made again on every run by
tests/screenshots.py, Chromium's own --screenshot at 1280x900; they are written into
docs/img only with SNAPPROF_WRITE_SCREENSHOTS=1.

Chromium is driven over the DevTools protocol through --remote-debugging-pipe (tests/chromium.py,
standard library only). The network is off twice over: Chromium runs in a new network
namespace when `unshare -n` is allowed (root), and the page is emulated offline. A
screenshot of the whole report page is saved (set SNAPPROF_SCREENSHOT_DIR to keep it).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

import pytest

import screenshots
from chromium import CHROMIUM, SKIP_REASON, Browser, Tab
from report_fixtures import HOSTILE, copy_with_hostile_names, write_capture
from snapprof.analysis.compare import compare, group_captures, load_captures
from snapprof.analysis.compare_summary import real_changes, settings_that_differ
from snapprof.analysis.frames import load_capture
from snapprof.report import compare_html
from snapprof.report.fmt import number
from snapprof.report.html import render_html
from snapprof.report.model import build_model

SECTIONS = ["header", "headline", "problems", "timeline", "runs", "time", "freezer", "memory",
            "devices", "io", "kernel-log", "details"]
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)

REAL = Path(__file__).parent / "data" / "trixie-6.12-snapshot.snap"


@pytest.fixture(scope="module", params=["real-6.12", "fixture-failed-incomplete"])
def page(request, tmp_path_factory):
    """Load a report in Chromium; collect what the page did."""
    tmp = tmp_path_factory.mktemp("browser")
    if request.param == "real-6.12":
        if not REAL.exists():
            pytest.skip(f"{REAL} missing")
        cap = copy_with_hostile_names(REAL, tmp / "hostile.snap")
    else:
        cap = write_capture(tmp / "hostile.snap", hostile=True)
    html_path = tmp / "report.html"
    html_path.write_text(render_html(build_model(load_capture(cap))), encoding="utf-8")
    url = html_path.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="snapprof-chromium-") as profile:
        b = Browser(profile)
        try:
            t = Tab(b)
            t.load(url, settle=0.5)  # let late console messages or requests arrive
            found = {"param": request.param,
                "sections": t.js("[...document.querySelectorAll('main > section')].map(s => s.id)"),
                "text": t.js("document.body.innerText"),
                "scripts": t.js("document.scripts.length"),
                "svgs": t.js("document.querySelectorAll('svg').length"),
                "height": t.js("document.documentElement.scrollHeight"),
            }
            t.size(1280, found["height"])
            png = tmp / "report.png"
            png.write_bytes(t.png())
            keep = os.environ.get("SNAPPROF_SCREENSHOT_DIR")
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(png, Path(keep) / f"report-{request.param}.png")
            found.update(events=list(b.events), url=url, png=png, netns=b.netns,
                         kind=request.param)
        finally:
            b.close()
    return found


def test_every_section_is_there(page):
    # a capture with a failed run opens with why it failed (snapprof.analysis.failures)
    lead = ["failure"] if page["param"] == "fixture-failed-incomplete" else []
    assert page["sections"] == lead + SECTIONS
    assert page["svgs"] >= 4  # timelines, stacked phases, memory, tasks/devices


def test_no_console_error_and_no_dialog(page):
    bad = [e for e in page["events"]
           if e["method"] in ("Runtime.exceptionThrown", "Page.javascriptDialogOpening")
           or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
           or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert bad == []


def test_no_request_but_the_file_itself(page):
    urls = [e["params"]["request"]["url"] for e in page["events"]
            if e["method"] == "Network.requestWillBeSent"]
    assert urls == [page["url"]]
    assert not [e for e in page["events"] if e["method"] == "Network.loadingFailed"]


def test_hostile_names_are_text_and_run_nothing(page):
    assert HOSTILE in page["text"]  # shown literally, as text
    assert page["scripts"] == 0  # and no <script> element came out of it


def test_run_statuses_shown(page):
    if page["kind"] == "real-6.12":
        assert "3: 3 complete, 0 failed, 0 incomplete" in page["text"]
    else:  # a failed and a stopped run are shown as such, with why
        assert "5: 3 complete, 1 failed, 1 incomplete" in page["text"]
        assert "freeze_processes returned -16 (EBUSY)" in page["text"]
        assert "(no end recorded)" in page["text"]


def test_screenshot_saved(page):
    data = page["png"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


# --------------------------------------------------------------------------- the first screen

WIDTH, HEIGHT = 1280, 900
DATA = Path(__file__).parent / "data"
CAPTURES = sorted(DATA.glob("*.snap"))
#: a device name as long as sysfs paths get, with no space to break at
LONG_NAME = "/".join(["pci0000:00", "0000:00:1c.4", "0000:3a:00.0", "0000:3b:04.0", "0000:3c:00.0",
                      "usb4", "4-1", "4-1.2", "4-1.2.3", "4-1.2.3:1.0", "host7", "target7:0:0",
                      "7:0:0:0", "block", "sdb", "sdb1"] * 2)
#: of the forest plot, at least this many pixels on the first screen
FOREST_PX = 250

#: What the top HEIGHT px show: the text of every text node drawn wholly inside the window
#: (nothing in a closed <details>, nothing cut at the bottom edge), the page's widths, and
#: the boxes (page coordinates) and text of the elements named in SELECTORS. OPEN_ALL opens every
#: <details> first (a reader who opens the collapsed sections must not get a scroll either).
PROBE_JS = """(() => {
  if (OPEN_ALL) document.querySelectorAll('details').forEach(d => d.open = true);
  const de = document.documentElement, W = de.clientWidth, H = innerHeight;
  const inside = r => r.width > 0 && r.height > 0 && r.top >= 0 && r.bottom <= H + 0.5
                      && r.left >= -0.5 && r.right <= W + 0.5;
  const text = [], range = document.createRange();
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    if (!n.data.trim()) continue;
    range.selectNodeContents(n);
    const rects = [...range.getClientRects()];
    if (rects.length && rects.every(inside)) text.push(n.data);
  }
  const boxes = {};
  for (const sel of SELECTORS) boxes[sel] = [...document.querySelectorAll(sel)].map(e => {
    const r = e.getBoundingClientRect();
    return {top: r.top + scrollY, bottom: r.bottom + scrollY, shown: r.width > 0 && r.height > 0,
            text: e.innerText || e.textContent};
  });
  return {scrollWidth: de.scrollWidth, clientWidth: W, innerWidth: innerWidth, innerHeight: H,
          text: text.join(' '), boxes: boxes};
})()"""


def _probe(tab: Tab, html: Path, selectors: list[str], open_all: bool = False) -> dict:
    tab.load(html.resolve().as_uri(), WIDTH, HEIGHT, settle=0.1)
    js = PROBE_JS.replace("OPEN_ALL", "true" if open_all else "false").replace(
        "SELECTORS", repr(list(selectors)))
    found = tab.js(js)
    found["text"] = _norm(found["text"])
    for boxes in found["boxes"].values():
        for b in boxes:
            b["text"] = _norm(b["text"])
    return found


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", (text or "").replace("\u00a0", " ")).strip()


def _no_horizontal_scroll(found: dict) -> None:
    assert found["innerWidth"] == WIDTH
    assert found["scrollWidth"] <= found["clientWidth"], (
        f"the page scrolls sideways: {found['scrollWidth']} px wide in a "
        f"{found['clientWidth']} px window")


def _on_first_screen(found: dict, selector: str, at_least: int = 1) -> list[dict]:
    boxes = [b for b in found["boxes"][selector] if b["shown"]]
    assert len(boxes) >= at_least, f"{selector}: {len(boxes)} shown"
    for b in boxes:
        assert b["bottom"] <= HEIGHT, f"{selector} ends at {b['bottom']:.0f} px, below {HEIGHT}"
    return boxes


@pytest.fixture(scope="module")
def tab():
    with tempfile.TemporaryDirectory(prefix="snapprof-chromium-") as profile:
        b = Browser(profile)
        try:
            yield Tab(b)
        finally:
            b.close()


REPORT_CASES = [p.stem for p in CAPTURES] + ["fixture-failed-incomplete", "real-6.12-long-names"]
REPORT_SELECTORS = ["#header dd", "#headline .card", "#problems", "#failure"]


@pytest.fixture(scope="module", params=REPORT_CASES)
def report_page(request, tmp_path_factory):
    """(the report's model, its HTML file) for one capture."""
    tmp = tmp_path_factory.mktemp("first-screen")
    if request.param == "fixture-failed-incomplete":
        cap = write_capture(tmp / "failed.snap")
    elif request.param == "real-6.12-long-names":
        if not REAL.exists():
            pytest.skip(f"{REAL} missing")
        cap = copy_with_hostile_names(REAL, tmp / "long.snap", name=LONG_NAME,
                                      meta={"cmdline": "root=/dev/vda " + "x" * 400})
    else:
        cap = DATA / f"{request.param}.snap"
    model = build_model(load_capture(cap))
    html = tmp / "report.html"
    html.write_text(render_html(model), encoding="utf-8")
    return model, html


def test_report_has_no_horizontal_scroll_at_1280(tab, report_page):
    _, html = report_page
    _no_horizontal_scroll(_probe(tab, html, []))
    _no_horizontal_scroll(_probe(tab, html, [], open_all=True))


def test_report_first_screen_shows_what_was_recorded_headline_and_anomalies(tab, report_page):
    model, html = report_page
    found = _probe(tab, html, REPORT_SELECTORS)
    text, h = found["text"], model["header"]
    meta, runs = h["meta"], h["runs_by_status"]
    # what was recorded: kernel, trigger, runs by status
    _on_first_screen(found, "#header dd", at_least=4)
    assert meta["kernel_release"] in text
    assert meta["trigger"] in text
    assert f"{h['runs_total']}: {runs['complete']} complete" in text
    assert f"{runs['failed']} failed" in text and f"{runs['incomplete']} incomplete" in text
    # every headline figure, with its value (or that it was not measured)
    cards = _on_first_screen(found, "#headline .card", at_least=len(model["headline"]))
    assert len(cards) == len(model["headline"]) >= 3
    for c in model["headline"]:
        assert c["label"] in text
        assert (number(c["median"], c["unit"]) if c["n"] else "not measured") in text, c["label"]
    # the failure, when a run failed: the failure section leads the page when there is one
    failure = [b for b in found["boxes"]["#failure"] if b["shown"]]
    if runs["failed"]:
        assert (failure and failure[0]["top"] < HEIGHT - 100) or f"{runs['failed']} failed run" in text
    # and, unless the failure section leads, the whole "Failures and anomalies" section
    if not failure:
        _on_first_screen(found, "#problems")
        assert "Failures and anomalies" in text
        for g in model.get("runs_not_complete", []):
            assert f"{g['n']} {g['status']} run" in text


COMPARE_CASES = ["6.1-vs-6.12", "6.1-vs-6.12-pooled"]
COMPARE_SELECTORS = ["#summary p.changes-head", "#summary ul.changes[id] > li",
                     "#summary details.more-changes > summary", "#summary p.settings",
                     "#forest svg"]
OLD, NEW = DATA / "bookworm-6.1-snapshot.snap", DATA / "trixie-6.12-snapshot.snap"


@pytest.fixture(scope="module", params=COMPARE_CASES)
def compare_page(request, tmp_path_factory):
    """(the Comparison, its HTML file): the real 6.1 and 6.12 captures as recorded (3 runs a
    side: no verdict), or each pooled twice (6 a side: real changes to summarise)."""
    if not (OLD.exists() and NEW.exists()):
        pytest.skip(f"needs {OLD.name} and {NEW.name} in {DATA}")
    tmp = tmp_path_factory.mktemp("compare")
    copies = 2 if request.param.endswith("pooled") else 1
    paths = [str(shutil.copyfile(src, tmp / f"{tag}{i}.snap"))
             for src, tag in ((OLD, "old"), (NEW, "new")) for i in range(copies)]
    cmp = compare(group_captures(load_captures(paths)))
    html = tmp / "compare.html"
    html.write_text(compare_html.render_html(cmp, []), encoding="utf-8")
    return cmp, html


def test_compare_has_no_horizontal_scroll_at_1280(tab, compare_page):
    _, html = compare_page
    _no_horizontal_scroll(_probe(tab, html, []))
    _no_horizontal_scroll(_probe(tab, html, [], open_all=True))


def test_compare_first_screen_shows_the_summary_and_the_forest_plot(tab, compare_page):
    cmp, html = compare_page
    found = _probe(tab, html, COMPARE_SELECTORS)
    text = found["text"]
    labels = cmp.labels[1:]
    # one summary line per label, each sentence shown, the count of the others
    _on_first_screen(found, "#summary p.changes-head", at_least=len(labels))
    shown = found["boxes"]["#summary ul.changes[id] > li"]
    more = found["boxes"]["#summary details.more-changes > summary"]
    heads = [b["text"] for b in found["boxes"]["#summary p.changes-head"]]
    for lab, head in zip(labels, heads):
        n = len(real_changes(cmp, lab))
        assert head.startswith(f"{lab} vs {cmp.baseline}: {n} real change")
    if len(real_changes(cmp)):
        _on_first_screen(found, "#summary ul.changes[id] > li")
    assert len(shown) <= len(real_changes(cmp))
    verdicts = {f"{r['kind']}:{r['name']}" for r in real_changes(cmp).to_dict("records")}
    assert len(verdicts) == len(real_changes(cmp))
    for li, r in zip(shown, real_changes(cmp).to_dict("records")):  # the first ones, in order
        assert li["text"].endswith(": " + r["verdict"]) and r["title"] in li["text"]
    if len(shown) < len(real_changes(cmp)):
        hidden = _on_first_screen(found, "#summary details.more-changes > summary")
        assert sum(int(b["text"].split(" ")[0]) for b in hidden) == len(real_changes(cmp)) - len(shown)
    else:
        assert not more
    # the settings that differ, apart from the changes
    if len(settings_that_differ(cmp)):
        settings = _on_first_screen(found, "#summary p.settings")
        assert all("that differ" in b["text"] for b in settings)
        for r in settings_that_differ(cmp).to_dict("records"):
            assert f"({r['name']})" in " ".join(b["text"] for b in settings)
    # the forest plot starts on the first screen, with room to read it
    forest = found["boxes"]["#forest svg"]
    assert forest and forest[0]["shown"]
    assert forest[0]["top"] <= HEIGHT - FOREST_PX, f"forest plot starts at {forest[0]['top']:.0f} px"
    assert "Every comparable figure" in text


# --------------------------------------------------------------------------- the docs' pictures


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_docs_pictures_are_made_by_the_test_run(tmp_path):
    """docs/img/{report,compare}-first-screen.png, made again from tests/data; written into
    docs/img when SNAPPROF_WRITE_SCREENSHOTS=1 (see docs/report.md)."""
    for p in (screenshots.REPORT_CAPTURE, *screenshots.COMPARE_CAPTURES):
        if not p.exists():
            pytest.skip(f"{p} missing")
    made = screenshots.make(tmp_path / "img", work=tmp_path)
    assert set(made) == {"report", "compare"}
    for png in made.values():
        assert _png_size(png) == (WIDTH, HEIGHT)
        assert png.stat().st_size > 30_000  # a page, not a blank window
    assert "Hibernation profile" in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="forest"' in (tmp_path / "compare.html").read_text(encoding="utf-8")
    if os.environ.get(screenshots.ENV_WRITE) == "1":
        for png in made.values():
            shutil.copyfile(png, screenshots.DOCS_IMG / png.name)
