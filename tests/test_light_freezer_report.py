"""The light freezer probes (the default) cannot see a task frozen in place: the report says
so instead of counting 0, while a capture whose probes could see them (the sweep hooks, or a
capture from before the light probes) keeps its count."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from snapprof.analysis.frames import load_capture
from snapprof.report.model import build_model, in_place_seen
from snapprof.report.text import render_text

DATA = Path(__file__).parent / "data"


def _probes(**attached):
    return pd.DataFrame([{"name": n, "area": "freezer", "target": "", "attached": a, "reason": None}
                         for n, a in attached.items()])


def test_which_probes_see_tasks_frozen_in_place():
    assert not in_place_seen(_probes(freezer_passes=True, freezer_wakeups=True, freezer_sweep=False))
    assert in_place_seen(_probes(freezer_passes=True, freezer_wakeups=True, freezer_sweep=True))
    # before the light probes, freezer_passes itself hooked freeze_task()
    assert in_place_seen(_probes(freezer_passes=True))
    assert not in_place_seen(_probes(freezer_passes=False))
    assert not in_place_seen(pd.DataFrame())


def test_the_report_says_frozen_in_place_tasks_are_not_seen_with_light_probes():
    frames = load_capture(DATA / "trixie-6.12-snapshot.snap")
    old = build_model(frames)["freezer"]
    assert isinstance(old["in_place"], int)  # recorded with freeze_task hooked
    p = frames.probes.copy()
    p.loc[p["name"] == "freezer_passes", "attached"] = True
    extra = _probes(freezer_wakeups=True, freezer_sweep=False)
    frames.probes = pd.concat([p, extra], ignore_index=True)
    model = build_model(frames)
    assert model["freezer"]["in_place"] is None
    text = render_text(model)
    assert "tasks frozen in place not seen: light freezer probes" in text
    assert "task records frozen without a request timed" not in text
