"""Compare with the memory composition: its figures grouped under one heading, largest change
first, and a capture without it said once for the whole group (text, HTML, JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_composition import BEFORE, composition_run, load_capture, write
from snapprof.analysis import composition as comp
from snapprof.analysis.compare import compare, group_captures
from snapprof.analysis.compare_summary import by_area
from snapprof.report import compare_html, compare_text

OLD = Path(__file__).parent / "data" / "trixie-6.12-snapshot.snap"


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmpcomp")
    base = [composition_run(i) for i in range(6)]
    # the new kernel: more unreclaimable slab (+40 %), a little more anon (+2 %)
    grown = {**BEFORE, "slab_unreclaimable": 38_500, "anon": 100_000}
    cand = [composition_run(i, before=grown, free=1_683_852 - 13_000) for i in range(6)]
    return (load_capture(write(tmp / "base.snap", base)), load_capture(write(tmp / "cand.snap", cand)))


def test_memory_composition_rows_grouped_largest_change_first(captures):
    cmp = compare(group_captures(list(captures), ["base", "cand"]))
    areas = dict(by_area(cmp.diffs[cmp.diffs["label"] == "cand"]))
    memory = areas["memory"]
    assert set(memory["name"]) <= set(comp.COMPOSITION_METRICS)
    pct = memory["delta_pct"].abs().tolist()
    assert pct == sorted(pct, reverse=True)
    assert memory.iloc[0]["name"] == "mem_slab_unreclaimable_kb"
    text = compare_text.render_text(cmp)
    head = text.index("Memory composition (what is in the image; largest change first):")
    assert text.index("mem_slab_unreclaimable_kb", head) < text.index("mem_anon_kb ", head)
    html = compare_html.render_html(cmp)
    assert 'class="area-memory"' in html and "Memory composition (what is in the image" in html


def test_old_against_new_says_not_measured_once_for_the_group(captures):
    old = load_capture(OLD)
    cmp = compare(group_captures([old, captures[1]], ["old", "new"]))
    nc = cmp.not_comparable
    mem = nc[nc["name"].isin(comp.COMPOSITION_METRICS)]
    assert len(mem) >= 20 and set(mem["reason"]) == {f"not measured in old: {comp.NO_COMPOSITION}"}
    text = compare_text.render_text(cmp)
    assert text.count(comp.NO_COMPOSITION) == 1
    assert f"memory composition, {len(mem)} figures (" in text
    assert "mem_anon_kb: not measured" not in text
    html = compare_html.render_html(cmp)
    assert html.count("this capture holds no memory composition") == 1
    assert f"Memory composition, {len(mem)} figures" in html
    # JSON keeps one row per figure, for scripts
    rows = json.loads(compare_text.render_json(cmp))["not_comparable"]
    assert sum(r["name"] in comp.COMPOSITION_METRICS for r in rows) == len(mem)
