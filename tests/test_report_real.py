"""Analysis and report on the real lab captures in tests/data (Debian 6.1 and 6.12 kernels).

The captures hold /dev/snapshot cycles (3 runs each), a shrinking cycle (image_size=0) and a
pm_test=freezer cycle. Checks are properties the data must have, and cross-checks of probe
figures against the kernel's own log lines, not copies of the numbers.
"""

import json
import re
from pathlib import Path

import pytest

from snapprof.analysis.frames import load_capture
from snapprof.analysis.phases import LESS_SLEEP, PHASE_ORDER
from snapprof.report.html import render_html
from snapprof.report.json import render_json
from snapprof.report.model import build_model
from snapprof.report.text import render_text

DATA = Path(__file__).parent / "data"
SNAPSHOT = {"6.1": DATA / "bookworm-6.1-snapshot.snap", "6.12": DATA / "trixie-6.12-snapshot.snap"}
SHRINK = {"6.1": DATA / "bookworm-6.1-snapshot_image-size-0.snap",
          "6.12": DATA / "trixie-6.12-snapshot_image-size-0.snap"}
FREEZER = {"6.1": DATA / "bookworm-6.1-trigger-pm-test-freezer.snap",
           "6.12": DATA / "trixie-6.12-trigger-pm-test-freezer.snap"}
ALL = sorted(DATA.glob("*.snap"))

pytestmark = pytest.mark.skipif(not all(p.exists() for d in (SNAPSHOT, SHRINK, FREEZER)
                                        for p in d.values()), reason="lab captures missing")

_cache = {}


def loaded(path):
    if path not in _cache:
        frames = load_capture(path)
        _cache[path] = (frames, build_model(frames))
    return _cache[path]


@pytest.mark.parametrize("kernel", SNAPSHOT)
def test_phases_in_cycle_order(kernel):
    frames, _ = loaded(SNAPSHOT[kernel])
    assert frames.run_ids("complete") == [1, 2, 3]
    for run_id, ph in frames.phases.groupby("run_id"):
        names = list(ph["phase"])
        assert names == [p for p in PHASE_ORDER if p in names]
        assert {"sync", "freeze_user", "prealloc", "freeze_kernel", "dpm_suspend", "cpu_off",
                "syscore_suspend", "copy", "syscore_resume", "dpm_resume", "thaw"} <= set(names)
        assert (ph["duration_ms"] >= 0).all()


@pytest.mark.parametrize("kernel", SNAPSHOT)
def test_copy_length_is_the_sleep_time_and_syscore_resume_excludes_it(kernel):
    frames, _ = loaded(SNAPSHOT[kernel])
    wide = frames.wide()
    sleeps = frames.events[frames.events["name"] == "sleep_time"].set_index("run_id")["value"]
    for run_id in frames.run_ids("complete"):
        ph = frames.phases[frames.phases["run_id"] == run_id].set_index("phase")
        copy, resume = ph.loc["copy"], ph.loc["syscore_resume"]
        assert copy["method"] == "sleep-time"
        assert copy["duration_ms"] == wide.loc[run_id, "copy_window_ms"]
        assert copy["duration_ms"] == pytest.approx(sleeps[run_id] / 1e6)
        # BOOTTIME jumps by the injected sleep time: that jump is the copy's span on the clock
        assert copy["end_ns"] - copy["start_ns"] == pytest.approx(sleeps[run_id], abs=1e3)
        raw = (resume["end_ns"] - resume["start_ns"]) / 1e6
        assert raw > copy["duration_ms"]  # the raw span holds the jump ...
        assert resume["method"] == "tracepoint" + LESS_SLEEP
        assert resume["duration_ms"] == pytest.approx(raw - copy["duration_ms"])
        assert 0 <= resume["duration_ms"] < copy["duration_ms"] / 10  # ... the rest is short


@pytest.mark.parametrize("path", [*SNAPSHOT.values(), *SHRINK.values()], ids=lambda p: p.stem)
def test_probe_figures_match_the_kernel_log(path):
    """Pages copied, zero pages (6.12) and pages allocated, from probes, equal the kernel's
    own log lines of the same run; the check is independent (the probe is not the log)."""
    frames, model = loaded(path)
    checks = [c for c in model["kernel_log"]["checks"]
              if c["name"] in ("copy_pages", "zero_pages", "preallocated_pages")]
    names = {c["name"] for c in checks}
    assert {"copy_pages", "preallocated_pages"} <= names
    assert ("zero_pages" in names) == ("6.12" in path.name)
    assert len({c["run_id"] for c in checks}) == len(frames.runs)
    for c in checks:
        assert c["method"] == "probe", c
        assert c["measured"] == c["kernel"], c


def test_zero_pages_6_1_not_measured_with_reason_6_12_measured():
    _, m61 = loaded(SNAPSHOT["6.1"])
    _, m612 = loaded(SNAPSHOT["6.12"])
    z61 = next(m for m in m61["metrics"] if m["name"] == "zero_pages")
    z612 = next(m for m in m612["metrics"] if m["name"] == "zero_pages")
    assert z61["n"] == 0 and z61["median"] is None and "6.6" in z61["reason"]
    assert z612["n"] == 3 and z612["median"] > 0 and z612["method"] == "probe"


@pytest.mark.parametrize("kernel", FREEZER)
def test_pm_test_freezer_stops_before_devices_and_copy(kernel):
    frames, model = loaded(FREEZER[kernel])
    phases = set(frames.phases["phase"])
    assert {"freeze_user", "freeze_kernel", "thaw"} <= phases
    assert not phases & {"dpm_suspend", "copy", "syscore_resume"}
    image = next(c for c in model["headline"] if c["name"] == "image_bytes")
    assert image["n"] == 0 and "pm_test=freezer" in image["reason"]
    html = render_html(model)
    assert "not reached: pm_test=freezer" in html


@pytest.mark.parametrize("kernel", SHRINK)
def test_shrinking_cycle_nests_shrink_in_prealloc(kernel):
    frames, model = loaded(SHRINK[kernel])
    wide = frames.wide()
    assert wide.loc[1, "shrink_ms"] > 0 and wide.loc[1, "shrink_requested_pages"] > 0
    t = model["timelines"]["runs"][0]
    pre = next(p for p in t["phases"] if p["phase"] == "prealloc")
    (shrink,) = t["nested"]
    assert pre["start_ms"] <= shrink["start_ms"] <= shrink["end_ms"] <= pre["end_ms"]
    assert shrink["end_ms"] - shrink["start_ms"] == pytest.approx(wide.loc[1, "shrink_ms"], rel=1e-6)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_reports_render(path):
    frames, model = loaded(path)
    html = render_html(model)
    for section in ("header", "headline", "runs", "timeline", "time", "freezer", "memory",
                    "devices", "io", "kernel-log"):
        assert f'<section id="{section}">' in html
    assert "<script" not in html.lower()
    assert html.count("<svg") >= 1 + len(model["timelines"]["runs"])
    assert frames.meta["kernel_release"] in html
    text = render_text(model)
    assert frames.meta["kernel_release"] in text and "Kernel log beside" in text
    data = json.loads(render_json(model))
    # a figure is a number with a method, or null with a reason: never a bare 0 for "absent"
    for m in data["metrics"]:
        assert (m["n"] > 0 and m["median"] is not None and m["method"]) or \
               (m["n"] == 0 and m["median"] is None and m["reason"]), m


@pytest.mark.parametrize("kernel", SNAPSHOT)
def test_headline_spread_and_methods(kernel):
    _, model = loaded(SNAPSHOT[kernel])
    cards = {c["name"]: c for c in model["headline"]}
    for name in ("freeze_user_ms", "image_bytes", "cycle_ms"):
        c = cards[name]
        assert c["n"] == 3 and c["min"] <= c["median"] <= c["max"]
        assert c["ci_low"] is None  # 3 runs cannot give a 95 % interval of the median
    assert cards["image_bytes"]["method"] == "device"
    html = render_html(model)
    # these captures' probes timed the whole freeze_processes() call: the headline is the
    # kernel's own elapsed from their log (snapprof.analysis.upgrade)
    assert cards["freeze_user_ms"]["method"] == "kernel-log"
    assert re.search(r"method: kernel-log \(Freezing user space processes completed \(elapsed", html)
