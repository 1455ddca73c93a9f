"""snapprof compare on the real captures recorded in the lab (tests/data/*.snap).

Nothing here knows the figures in advance: the tests check that compare reproduces each
capture's own report figures, keeps what one kernel did not measure out of the
comparison, and that --fail-on trips on a difference the data shows with confidence and
stays quiet on an identical pair. They skip when the captures are not there.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from snapprof import cli
from snapprof.analysis.compare import compare, group_captures, load_captures
from snapprof.analysis.frames import load_capture
from snapprof.analysis.summary import metric_summary, phase_summary

DATA = Path(__file__).parent / "data"


def _captures():
    out = {}
    for path in sorted(DATA.glob("*.snap")):
        f = load_capture(path)
        if f.run_ids("complete"):
            out.setdefault(f.meta.get("kernel_release", ""), path)
    return out


@pytest.fixture(scope="module")
def pair():
    caps = _captures()
    releases = sorted(r for r in caps if r)
    old = [r for r in releases if r.startswith("6.1.")]
    new = [r for r in releases if r.startswith("6.12.")]
    if not old or not new:
        pytest.skip(f"needs real 6.1 and 6.12 captures with complete runs in {DATA} "
                    f"(found: {releases or 'none'})")
    return caps[old[0]], caps[new[0]]


@pytest.fixture(scope="module")
def comparison(pair):
    frames = load_captures(pair)
    return frames, compare(group_captures(frames))


def _run_cli(monkeypatch, *argv):
    monkeypatch.setattr(cli, "COMMANDS", ["compare"])
    return cli.main(["compare", *map(str, argv)])


def test_labels_are_the_kernel_releases(comparison):
    frames, c = comparison
    assert c.labels == [f.meta["kernel_release"] for f in frames]
    assert c.baseline == c.labels[0]
    for f, lab in zip(frames, c.labels):
        assert c.groups[lab].n_runs == len(f.run_ids("complete"))


def test_figures_equal_each_captures_own_report(comparison):
    frames, c = comparison
    for f, lab in zip(frames, c.labels):
        own, phases = metric_summary(f), phase_summary(f)
        mine = c.summary[c.summary["label"] == lab]
        assert len(mine) > 0
        for r in mine.to_dict("records"):
            ref = own.loc[r["name"]] if r["kind"] == "metric" else phases.loc[r["name"]]
            for col in ("n", "median", "p95", "min", "max", "ci_low", "ci_high"):
                a, b = r[col], ref[col]
                assert (math.isnan(a) and math.isnan(b)) or a == b, (lab, r["name"], col)
        measured = set(own.index[own["n"] > 0])
        assert measured == set(mine.loc[mine["kind"] == "metric", "name"])


def test_one_sided_metrics_are_not_compared(comparison):
    frames, c = comparison
    base, cand = c.groups[c.labels[0]], c.groups[c.labels[1]]
    one_sided = {n for n in set(base.values.columns) ^ set(cand.values.columns)}
    one_sided = {n for n in one_sided
                 if (n in base.values and base.values[n].notna().any())
                 or (n in cand.values and cand.values[n].notna().any())}
    compared = set(c.diffs.loc[c.diffs["kind"] == "metric", "name"])
    assert not (one_sided & compared)
    listed = set(c.not_comparable["name"])
    assert one_sided <= listed
    for r in c.not_comparable.to_dict("records"):
        assert r["reason"].startswith(("not measured in", "units differ"))


def test_fail_on_trips_on_a_confident_real_difference(pair, comparison, monkeypatch, capsys):
    frames, _ = comparison
    # 3 runs per kernel cannot reach 95 % (the best two-sided p of 3 vs 3 is 2/20); 90 % can
    for level in (0.95, 0.90):
        c = compare(group_captures(frames), level=level)
        sure = c.diffs[(c.diffs["ci_low"] > 0) | (c.diffs["ci_high"] < 0)]
        if not sure.empty:
            break
    else:
        pytest.skip("no figure differs with confidence between these captures "
                    f"(verdicts: {sorted(set(c.diffs['verdict']))})")
    r = sure.iloc[0]
    assert r["verdict"] in ("better", "worse", "changed (higher)", "changed (lower)")
    name = r["name"]  # a metric, or a phase (its duration)
    # half-way between 0 and the near end of the interval: crossed with confidence
    expr = (f"{name}>+{r['ci_low'] / 2:.6g}" if r["ci_low"] > 0 else f"{name}<{r['ci_high'] / 2:.6g}")
    assert _run_cli(monkeypatch, *pair, "--level", str(level), "--fail-on", expr) == 1, expr
    assert "crossed" in capsys.readouterr().err
    # the opposite direction is not crossed
    flip = expr.replace(">", "<") if ">" in expr else expr.replace("<", ">")
    assert _run_cli(monkeypatch, *pair, "--level", str(level), "--fail-on", flip) == 0


def test_fail_on_quiet_on_an_identical_real_pair(pair, comparison, monkeypatch, tmp_path, capsys):
    _, c = comparison
    copy = tmp_path / "copy.snap"
    shutil.copy(pair[1], copy)
    names = sorted(set(c.diffs.loc[c.diffs["kind"] == "metric", "name"]))
    args = []
    for n in names:
        args += ["--fail-on", f"{n}>+0", "--fail-on", f"{n}<-0"]
    rc = _run_cli(monkeypatch, pair[1], copy, "--label", "a", "--label", "b", *args)
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "CROSSED —" not in out.out


def test_html_on_real_captures(pair, monkeypatch, tmp_path):
    out = tmp_path / "compare.html"
    assert _run_cli(monkeypatch, *pair, "-o", out) == 0
    page = out.read_text()
    assert page.count("<svg") >= 3 and "<script" not in page


def test_compare_loading_gives_the_figures_of_full_loading():
    """load_captures(for_compare=True) (device callbacks summed in SQL, no kmsg rows) gives
    compare the same numbers as the frames of frames.load_capture, on every real capture."""
    import pandas as pd

    paths = sorted(DATA.glob("*.snap"))
    if not paths:
        pytest.skip(f"no real captures in {DATA}")
    light = load_captures(paths, for_compare=True)
    full = [load_capture(p) for p in paths]
    timed = 0
    for p, a, b in zip(paths, light, full):
        for attr in ("runs", "metrics", "not_measured", "phases", "events", "tasks", "probes"):
            pd.testing.assert_frame_equal(getattr(a, attr), getattr(b, attr), obj=f"{p.name} {attr}")
        pd.testing.assert_frame_equal(a.device_totals(), b.device_totals(), obj=f"{p.name} devices")
        # against the per-callback rows: the first driver named, the durations summed
        d = b.devices
        if d.empty:
            assert a.device_totals().empty
            continue
        g = d.groupby(["run_id", "device"])
        tot = a.device_totals().set_index(["run_id", "device"])
        assert tot.index.equals(g.size().index)
        assert tot["driver"].fillna("").equals(g["driver"].first().fillna(""))
        ms = g["duration_ms"].sum(min_count=1)
        assert (tot["duration_ns"] / 1e6 - ms).abs().max() < 1e-9  # float noise of summing ms
        timed += int(tot["duration_ns"].notna().sum())
    assert timed > 0  # the real captures do time device callbacks
    by_release = {}
    for a, b in zip(light, full):
        if a.run_ids("complete"):
            by_release.setdefault(a.meta["kernel_release"], (a, b))
    if len(by_release) < 2:
        pytest.skip("needs complete runs of two kernels")
    pairs = list(by_release.values())[:2]
    ca = compare(group_captures([x[0] for x in pairs]))
    cb = compare(group_captures([x[1] for x in pairs]))
    for attr in ("summary", "diffs", "not_comparable", "devices", "tasks"):
        pd.testing.assert_frame_equal(getattr(ca, attr), getattr(cb, attr), obj=attr)
    assert len(ca.devices) > 0
