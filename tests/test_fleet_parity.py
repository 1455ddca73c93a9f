"""The pooled comparison (Parquet dataset, DuckDB) equals the in-memory one on the real captures."""

from __future__ import annotations

import glob
import os

import numpy as np
import pandas as pd
import pytest

from snapprof.analysis import stats
from snapprof.analysis.compare import compare, group_captures, load_captures
from snapprof.fleet import orderstats
from snapprof.fleet.duck import DuckEngine
from snapprof.fleet.pooled import compare_pooled
from snapprof.fleet.writer import pool

DATA = os.path.join(os.path.dirname(__file__), "data")
CAPTURES = sorted(glob.glob(os.path.join(DATA, "*.snap")))
FRAMES = ("summary", "diffs", "not_comparable", "devices", "tasks")


def assert_same(ref, got):
    """Every table of the Comparison equal, value for value (no tolerance), and the rest."""
    assert got.labels == ref.labels and got.baseline == ref.baseline
    for attr in FRAMES:
        a, b = getattr(ref, attr).reset_index(drop=True), getattr(got, attr).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_exact=True, check_dtype=False, obj=attr)
    for attr in ("setup_notes", "label_notes", "userspace", "failure_rates"):
        assert getattr(got, attr) == getattr(ref, attr), attr
    for lab in ref.labels:
        g1, g2 = ref.groups[lab], got.groups[lab]
        for f in ("sources", "runs_total", "excluded", "units", "methods", "nm_names",
                  "nm_reasons", "meta_differs", "compressor", "refused", "n_runs", "meta"):
            assert getattr(g2, f) == getattr(g1, f), (lab, f)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fleet") / "ds")
    res = pool(CAPTURES, root, jobs=1)
    assert len(res.added) == len(CAPTURES) and not res.skipped
    return root


@pytest.fixture(scope="module")
def reference():
    return load_captures(CAPTURES, for_compare=True)


def test_pooled_compare_equals_in_memory(dataset, reference):
    ref = compare(group_captures(reference))
    eng = DuckEngine(dataset)
    try:
        got = compare_pooled(eng)
    finally:
        eng.close()
    assert_same(ref, got)
    # the comparison has substance: verdicts, intervals, devices, not-comparable reasons
    assert len(got.diffs) > 100 and got.diffs["ci_low"].notna().any()
    assert len(got.devices) > 100 and len(got.not_comparable) > 10


def test_grouping_by_a_column_equals_labels(dataset, reference):
    """--by userspace: the same as labelling each capture with its userspace."""
    eng = DuckEngine(dataset)
    try:
        caps = eng.captures()
        got = compare_pooled(eng, by="userspace", level=0.9)
    finally:
        eng.close()
    by_source = dict(zip(caps["source"], caps["userspace"]))
    labels = [by_source[os.path.basename(p)] for p in CAPTURES]
    ref = compare(group_captures(reference, labels), level=0.9)
    assert_same(ref, got)
    assert len(got.labels) == 2 and "trixie" in got.labels[1]


def test_only_chooses_labels_and_baseline(dataset, reference):
    """--only A --only B: the in-memory comparison of those labels' captures, A the baseline."""
    eng = DuckEngine(dataset)
    try:
        labels = compare_pooled(eng).labels
        got = compare_pooled(eng, only=[labels[2], labels[0]])
    finally:
        eng.close()
    groups = group_captures(reference)
    ref = compare({labels[2]: groups[labels[2]], labels[0]: groups[labels[0]]})
    assert got.labels == [labels[2], labels[0]] and got.baseline == labels[2]
    for attr in FRAMES:
        pd.testing.assert_frame_equal(getattr(ref, attr).reset_index(drop=True),
                                      getattr(got, attr).reset_index(drop=True),
                                      check_exact=True, check_dtype=False, obj=attr)


def test_order_statistics_at_scale_equal_numpy():
    """Many runs, many ties, and the numpy fallback for the shift: the same figures as stats."""
    rng = np.random.default_rng(7)
    a = np.round(rng.gamma(2.0, 3.0, 700), 1)
    b = np.round(rng.gamma(2.0, 3.3, 900), 1)
    vals = pd.concat([pd.Series(x).value_counts().rename("cnt").rename_axis("value").reset_index()
                      .assign(kind="metric", k1="m", k2=None, label=lab)
                      for x, lab in ((a, "A"), (b, "B"))], ignore_index=True)
    from snapprof.fleet.duck import connect
    con = connect()
    con.register("vals", vals)
    summ = orderstats.summaries(con, "vals", 0.95).set_index("label")
    for x, lab in ((a, "A"), (b, "B")):
        want = stats.summarize(x, 0.95)
        assert {k: summ.loc[lab, k] for k in want} == want
    shift, mw = stats.shift_ci(a, b), stats.mann_whitney(a, b)
    for limit in (orderstats.PAIR_LIMIT, 10):  # SQL join, then the numpy bisection
        old, orderstats.PAIR_LIMIT = orderstats.PAIR_LIMIT, limit
        try:
            got = orderstats.pair_stats(con, "vals", [("A", "B")], 0.95).iloc[0]
        finally:
            orderstats.PAIR_LIMIT = old
        assert (got["shift"], got["ci_low"], got["ci_high"]) == (shift.estimate, shift.ci_low, shift.ci_high)
        assert got["p"] == mw.p and got["test"] == f"Mann-Whitney U ({mw.method})"
    con.close()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7, 19, 20, 21, 101, 999])
def test_p95_position_is_numpys(n):
    x = np.sort(np.random.default_rng(n).normal(size=n))
    lo, hi, g = orderstats.p95_position(n)
    a, b = x[lo], x[hi]
    lerp = b - (b - a) * (1 - g) if g >= 0.5 else a + (b - a) * g
    assert lerp == np.percentile(x, 95)


def test_failed_label_and_composition_captures_equal_in_memory(tmp_path):
    """A label whose every run failed (compared on its failure rate only), and the captures
    with the memory composition (6.1, 6.12, 7.3): the same comparison as in memory."""
    import shutil
    import sqlite3

    failed = tmp_path / "all-failed.snap"
    shutil.copyfile(os.path.join(DATA, "trixie-6.12-trigger-none.snap"), failed)
    con = sqlite3.connect(failed)
    with con:
        con.execute("UPDATE runs SET status = 'failed', error = 'Freezing of tasks failed'")
        con.execute("UPDATE meta SET value = '9.9.9-test' WHERE key = 'kernel_release'")
    con.close()
    paths = sorted(glob.glob(os.path.join(DATA, "composition", "*.snap"))) + [
        os.path.join(DATA, "bookworm-6.1-snapshot.snap"), str(failed)]
    root = str(tmp_path / "ds")
    assert len(pool(paths, root, jobs=1).added) == len(paths)
    ref = compare(group_captures(load_captures(paths, for_compare=True)))
    eng = DuckEngine(root)
    try:
        got = compare_pooled(eng)
    finally:
        eng.close()
    assert_same(ref, got)
    assert any("has no complete run" in n for n in got.label_notes)
    assert got.failure_rates["9.9.9-test"]["failed"] == 1
