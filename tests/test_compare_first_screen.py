"""What `snapprof compare` shows first (issue 17, deliverable 2), on the real lab captures:
the summary (one sentence per real change), the forest plot of every comparable figure, the
full table grouped by area with the rows that state no change kept quiet, not-comparable
figures in their own list, and ``--brief``.

Each side pools two copies of one real capture (6 complete runs a side), enough for real
verdicts at 95 %. Nothing here knows the figures in advance: what should be in the summary,
the plot and the quiet rows is worked out from ``Comparison.diffs`` itself.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from snapprof import cli
from snapprof import metrics as registry
from snapprof.analysis.compare import compare, group_captures, load_captures
from snapprof.analysis.compare_summary import area_of, real_changes
from snapprof.report.compare_forest import forest_figures
from snapprof.report.compare_html import render_html
from snapprof.report.compare_text import render_json, render_text

DATA = Path(__file__).parent / "data"
OLD = DATA / "bookworm-6.1-snapshot.snap"
NEW = DATA / "trixie-6.12-snapshot.snap"
REAL_WORDS = ("better", "worse", "changed (higher)", "changed (lower)")

pytestmark = pytest.mark.skipif(not (OLD.exists() and NEW.exists()),
                                reason=f"needs the real 6.1 and 6.12 captures in {DATA}")


def _real(verdict: str) -> bool:
    return verdict in REAL_WORDS


def _finding(r: dict) -> bool:
    """A real change: a real verdict on a figure that is no setting or machine fact (those
    are listed apart, as settings that differ: tests/test_compare_settings.py)."""
    return _real(r["verdict"]) and not (r["kind"] == "metric" and registry.get(r["name"]).setting)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    out = []
    for src, tag in ((OLD, "old"), (NEW, "new")):
        for i in (1, 2):
            out.append(shutil.copyfile(src, d / f"{tag}{i}.snap"))
    return out


@pytest.fixture(scope="module")
def cmp(paths):
    return compare(group_captures(load_captures([str(p) for p in paths])))


@pytest.fixture(scope="module")
def page(cmp):
    return render_html(cmp, [])


def _key(r: dict) -> tuple[str, str]:
    return r["kind"], r["name"]


def test_the_pool_gives_real_verdicts_of_both_kinds(cmp):
    lab = cmp.labels[1]
    assert cmp.groups[cmp.baseline].n_runs >= 4 and cmp.groups[lab].n_runs >= 4
    verdicts = set(cmp.diffs["verdict"])
    assert {"worse", "better"} <= verdicts          # real changes to summarise
    assert "no clear difference" in verdicts        # and quiet rows


def test_summary_lists_exactly_the_rows_with_a_real_verdict(cmp):
    expected = {_key(r) for r in cmp.diffs.to_dict("records") if _finding(r)}
    found = real_changes(cmp)
    assert {_key(r) for r in found.to_dict("records")} == expected
    assert len(found) == len(expected)  # each once
    # regressions first, then the others by size of the % change
    worse = [v == "worse" for v in found["verdict"]]
    assert worse == sorted(worse, reverse=True) and any(worse) and not all(worse)
    rest = [(abs(x), v) for x, v, w in zip(found["delta_pct"], found["verdict"], worse) if not w]
    assert [x for x, _ in rest] == sorted((x for x, _ in rest), reverse=True)
    assert {v.split(" ")[0] for _, v in rest} == {"better", "changed"}  # mixed, by size


def test_text_summary_comes_before_the_table_one_line_per_real_change(cmp):
    text = render_text(cmp, [])
    lines = text.splitlines()
    start = lines.index("summary:")
    table = next(i for i, line in enumerate(lines) if line.startswith("== "))
    assert start < table
    section = lines[start + 1: lines.index("", start)]
    settings_head = next(i for i, line in enumerate(section) if "that differ" in line)
    changes = [line for line in section[:settings_head] if line.startswith("    ")]
    real = [r for r in cmp.diffs.to_dict("records") if _finding(r)]
    assert len(changes) == len(real)
    for r in real:
        hit = [c for c in changes if (f"({r['name']})" if r["kind"] == "metric" else r["title"] + ",") in c]
        assert len(hit) == 1, r["name"]
        assert hit[0].rstrip().endswith(": " + r["verdict"])
        assert f"{cmp.labels[1]} vs {cmp.baseline}" in hit[0]
        assert f"{r['delta_pct']:+.1f}%" in hit[0] and "95 % interval" in hit[0]
    quiet = [r for r in cmp.diffs.to_dict("records") if not _finding(r) and r["kind"] == "metric"]
    for r in quiet:
        assert not any(f"({r['name']})" in c for c in changes), r["name"]
    assert f"{len(real)} real changes among {int((cmp.diffs['label'] == cmp.labels[1]).sum())}" in section[0]


def test_json_gains_the_real_changes_and_keeps_the_rest(cmp):
    data = json.loads(render_json(cmp, []))
    real = [r for r in cmp.diffs.to_dict("records") if _finding(r)]
    assert {(r["kind"], r["name"]) for r in data["real_changes"]} == {_key(r) for r in real}
    assert all(r["sentence"].endswith(r["verdict"]) for r in data["real_changes"])
    # the per-label statistics and all differences are still there
    assert len(data["differences"]) == len(cmp.diffs)
    assert len(data["summary"]) == len(cmp.summary)


def _run(monkeypatch, *argv):
    monkeypatch.setattr(cli, "COMMANDS", ["compare"])
    return cli.main(["compare", *map(str, argv)])


def test_brief_prints_only_the_header_and_the_summary(cmp, paths, monkeypatch, capsys):
    assert _run(monkeypatch, *paths, "--brief") == 0
    out = capsys.readouterr().out
    full = render_text(cmp, [])
    assert full.startswith(out.rstrip("\n"))  # the same header and summary, nothing after
    assert "summary:" in out
    assert "== " not in out and "not comparable:" not in out and "Mann-Whitney" not in out
    real = [r for r in cmp.diffs.to_dict("records") if _finding(r)]
    settings = json.loads(render_json(cmp, []))["settings_that_differ"]
    assert sum(line.startswith("    ") for line in out.splitlines()) == len(real) + len(settings)


def test_brief_is_for_text_only(paths, monkeypatch, capsys):
    assert _run(monkeypatch, *paths, "--brief", "--format", "json") == 2
    assert "--brief" in capsys.readouterr().err


def test_brief_shows_control_characters_in_a_label_never_obeys_them(paths, monkeypatch, capsys):
    labels = ["old", "old", "new\x1b]0;owned\x07", "new\x1b]0;owned\x07"]
    argv = [a for lab in labels for a in ("--label", lab)]
    assert _run(monkeypatch, *paths, *argv, "--brief") == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "new\\x1b]0;owned\\x07 vs old" in out


def test_identical_sides_have_no_real_change(paths, monkeypatch, capsys):
    assert _run(monkeypatch, paths[2], paths[3], "--label", "a", "--label", "b", "--brief") == 0
    out = capsys.readouterr().out
    assert "b vs a: 0 real changes among" in out
    assert not any(line.startswith("    ") for line in out.splitlines())


# --------------------------------------------------------------------------- forest plot

_ID = re.compile(r'id="forest-(\d+)-(\d+)-(sig|quiet)"')


def test_forest_has_one_row_per_comparable_figure_and_marks_the_significant(cmp):
    figures = forest_figures(cmp)
    assert len(figures) == 1
    svg = figures[0]
    ids = [(int(p), int(j), s) for p, j, s in _ID.findall(svg)]
    diffs = cmp.diffs[cmp.diffs["label"] == cmp.labels[1]]
    assert len(ids) == len(diffs)                      # one row per comparable figure
    assert {p for p, _, _ in ids} == {0}
    assert sorted(j for _, j, _ in ids) == list(range(len(diffs)))
    assert sum(s == "sig" for _, _, s in ids) == sum(_finding(r) for r in diffs.to_dict("records"))
    text = html.unescape(svg)
    for title in diffs["title"]:
        assert (title if len(title) <= 46 else title[:45] + "…") in text, title
    for area in ("Freezer", "Phases (durations)"):
        assert area in text
    # not-comparable figures are no rows of the plot
    nc_titles = set(cmp.not_comparable["title"]) - set(diffs["title"])
    assert nc_titles and not any(f">{t}<" in text for t in nc_titles)


def test_forest_marks_the_right_rows(cmp):
    from snapprof.analysis.compare_summary import forest_rows

    rows = forest_rows(cmp, cmp.labels[1])
    svg = forest_figures(cmp)[0]
    marks = {int(j): s for _, j, s in _ID.findall(svg)}
    for j, r in enumerate(rows.to_dict("records")):
        assert marks[j] == ("sig" if _finding(r) else "quiet"), r["name"]


def test_forest_has_one_panel_per_label_vs_the_baseline(paths):
    frames = load_captures([str(p) for p in paths])
    c = compare(group_captures(frames, ["a", "a", "b", "c"]))
    svg = forest_figures(c)[0]
    panels = {int(p) for p, _, _ in _ID.findall(svg)}
    assert panels == {0, 1}
    assert "b vs a" in svg and "c vs a" in svg


# --------------------------------------------------------------------------- HTML page


class _Rows(HTMLParser):
    """Table rows with a data-name (the full table), their class and area tbody; the
    not-comparable list's figure names (muted spans) and reasons (span.nm)."""

    def __init__(self):
        super().__init__()
        self.rows, self.area = [], None
        self.nc_names, self.nc_reasons, self._nc, self._span = [], [], False, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tbody" and (a.get("class") or "").startswith("area-"):
            self.area = a["class"][5:]
        if tag == "tr" and "data-name" in a:
            self.rows.append((a["data-name"], a.get("class"), self.area))
        if tag == "ul" and (a.get("id") or "").startswith("not-comparable-"):
            self._nc = True
        if tag == "span" and self._nc:
            self._span = a.get("class")

    def handle_endtag(self, tag):
        if tag == "ul":
            self._nc = False
        if tag == "span":
            self._span = None

    def handle_data(self, data):
        if self._nc and self._span == "nm":
            self.nc_reasons.append(data)
        elif self._nc and self._span == "muted" and not data.startswith("("):
            self.nc_names.append(data)


def test_first_screen_order_summary_then_forest_then_table(page):
    i_sum, i_forest = page.index('id="summary"'), page.index('id="forest"')
    i_table = page.index('<tr class="area">')
    assert page.index("</header>") < i_sum < i_forest < i_table
    assert page.index('id="userspace"') < page.index("</header>")


def test_html_summary_sentences_are_the_real_changes(cmp, page):
    items = re.findall(r'<li class="change-(\w+)" data-name="([^"]+)"', page)
    expected = {f"{r['kind']}:{r['name']}": r["verdict"].split(" ")[0]
                for r in cmp.diffs.to_dict("records") if _finding(r)}
    assert dict((n, v) for v, n in items) == expected
    assert len(items) == len(expected)


def test_quiet_rows_carry_the_class_and_rows_are_grouped_by_area(cmp, page):
    p = _Rows()
    p.feed(page)
    want = {f"{r['kind']}:{r['name']}": r for r in cmp.diffs.to_dict("records")}
    assert len(p.rows) == len(want)
    for name, cls, area in p.rows:
        r = want[name]
        assert cls == ("real" if _finding(r) else "quiet"), (name, r["verdict"])
        assert area == area_of(r["kind"], r["name"])
    quiet_verdicts = {want[n]["verdict"].split(" ")[0] for n, c, _ in p.rows if c == "quiet"}
    assert "no" in quiet_verdicts  # "no clear difference" is quiet
    assert "tr.quiet td { color: var(--muted); }" in page
    # each area is one block: once an area is left, it does not come back
    seen = [a for i, (_, _, a) in enumerate(p.rows) if i == 0 or p.rows[i - 1][2] != a]
    assert len(seen) == len(set(seen)) and seen[-1] == "phases"


def test_not_comparable_is_its_own_list_not_in_the_change_column(cmp, page):
    p = _Rows()
    p.feed(page)
    nc = cmp.not_comparable[cmp.not_comparable["label"] == cmp.labels[1]]
    assert not nc.empty
    table_names = {n for n, _, _ in p.rows}
    for r in nc.to_dict("records"):
        assert f"{r['kind']}:{r['name']}" not in table_names
    assert sorted(p.nc_names) == sorted(nc["name"])
    # a reason shared by several figures is said once
    assert sorted(p.nc_reasons) == sorted(set(nc["reason"]))
    assert (nc["reason"].value_counts() > 1).any()  # there is a shared one to say once


def test_text_not_comparable_rows_are_not_in_the_table(cmp):
    text = render_text(cmp, [])
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("== "))
    end = lines.index("not comparable:", start)
    table = lines[start:end]
    nc = cmp.not_comparable[cmp.not_comparable["label"] == cmp.labels[1]]
    for r in nc.to_dict("records"):
        name = r["name"] if r["kind"] == "metric" else "phase:" + r["name"]
        assert not any(line.split(" ")[0] == name for line in table), name
        assert any(line.startswith(f"  {name}: ") for line in lines[end:]), name
