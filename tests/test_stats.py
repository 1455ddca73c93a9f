"""snapprof.analysis.stats against hand-computed cases, brute force, and scipy when present."""

import itertools
import math

import numpy as np
import pytest

from snapprof.analysis import stats as st


def _brute_mw_p(a, b):
    """Two-sided permutation p of the rank sum of a, by enumerating every split."""
    pooled = np.concatenate([a, b])
    ranks = st.midranks(pooled)
    m, big_n = len(a), len(pooled)
    center = m * (big_n + 1) / 2
    obs = abs(ranks[:m].sum() - center)
    hits = total = 0
    for idx in itertools.combinations(range(big_n), m):
        total += 1
        hits += abs(ranks[list(idx)].sum() - center) >= obs - 1e-9
    return hits / total


# ------------------------------------------------------------------ median CI / summarize


def test_median_ci_needs_six_values_at_95():
    assert all(math.isnan(v) for v in st.median_ci([1, 2, 3, 4, 5]))
    # n=6: P(Bin(6,.5) = 0) = 1/64 ≤ 2.5 %, so [min, max] covers with 96.9 %
    assert st.median_ci([6, 1, 5, 2, 4, 3]) == (1.0, 6.0)


def test_median_ci_ranks_hand_computed():
    # n=10: P(X≤1) = 11/1024 ≤ .025 < P(X≤2) = 56/1024 → ranks 2 and 9
    assert st.median_ci_ranks(10) == (2, 9)
    assert st.median_ci(range(1, 11)) == (2.0, 9.0)
    # n=20: P(X≤5) = 21700/2^20 = .0207 ≤ .025 < P(X≤6) = .0577 → ranks 6 and 15
    assert st.median_ci_ranks(20) == (6, 15)
    # a lower level needs fewer values: n=5 at 90 % (1 - 2/32 = 93.75 %)
    assert st.median_ci([1, 2, 3, 4, 5], level=0.90) == (1.0, 5.0)


def test_median_ci_covers_at_least_the_level():
    rng = np.random.default_rng(7)
    n, trials, hits = 9, 4000, 0
    for _ in range(trials):
        lo, hi = st.median_ci(rng.exponential(size=n))
        hits += lo <= math.log(2) <= hi
    assert hits / trials >= 0.94  # nominal coverage for n=9 is 1 - 2·10/512 = 96.1 %


def test_summarize_ignores_nan_and_counts_measured_only():
    s = st.summarize([3.0, float("nan"), 1.0, 2.0, 10.0, 4.0, 5.0, float("nan")])
    assert s["n"] == 6
    assert s["median"] == 3.5
    assert (s["min"], s["max"]) == (1.0, 10.0)
    assert s["p95"] == pytest.approx(np.percentile([1, 2, 3, 4, 5, 10], 95))
    assert (s["ci_low"], s["ci_high"]) == (1.0, 10.0)


def test_summarize_empty_is_all_nan_not_zero():
    s = st.summarize([float("nan")])
    assert s["n"] == 0
    assert all(math.isnan(s[k]) for k in ("median", "p95", "min", "max", "ci_low", "ci_high"))


# ------------------------------------------------------------------ Mann–Whitney


def test_mann_whitney_hand_computed():
    r = st.mann_whitney([1, 2, 3], [4, 5, 6])
    assert (r.u, r.method) == (0.0, "exact")
    assert r.p == pytest.approx(2 / 20)  # both extreme splits out of C(6,3)
    assert st.mann_whitney([1, 2, 3, 4], [5, 6, 7, 8]).p == pytest.approx(2 / 70)
    assert st.mann_whitney([5, 6, 7, 8], [1, 2, 3, 4]).u == 16.0
    assert st.mann_whitney([1, 2], [1, 2]).p == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_mann_whitney_exact_with_ties_matches_enumeration(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, size=rng.integers(2, 7)).astype(float)
    b = rng.integers(1, 5, size=rng.integers(2, 7)).astype(float)
    r = st.mann_whitney(a, b)
    assert r.method == "exact"
    assert r.p == pytest.approx(_brute_mw_p(a, b), rel=1e-12)
    # the larger sample first gives the same p
    assert st.mann_whitney(b, a).p == pytest.approx(r.p, rel=1e-12)


def test_mann_whitney_drops_nan_and_handles_empty():
    r = st.mann_whitney([1, 2, float("nan"), 3], [4, 5, 6])
    assert (r.n_a, r.n_b) == (3, 3)
    e = st.mann_whitney([], [1, 2])
    assert math.isnan(e.p) and e.n_a == 0


def test_mann_whitney_against_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for m, n in [(3, 5), (7, 7), (10, 12), (3, 20), (25, 30)]:
        a, b = rng.normal(size=m), rng.normal(0.7, size=n)
        ours = st.mann_whitney(a, b)
        ref = scipy_stats.mannwhitneyu(a, b, method="exact")
        assert ours.u == ref.statistic
        assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)
    for m, n in [(40, 45), (12, 80)]:  # many ties: normal approximation, tie-corrected
        a = rng.integers(0, 6, size=m).astype(float)
        b = rng.integers(1, 7, size=n).astype(float)
        ours = st.mann_whitney(a, b)
        ref = scipy_stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=True)
        assert ours.method == "normal"
        assert ours.u == ref.statistic
        assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)


# ------------------------------------------------------------------ shift interval


def test_shift_ci_hand_computed():
    s = st.shift_ci([1, 2, 3, 4], [5, 6, 7, 8])
    # 16 differences 1..7; P(U=0) = 1/70 ≤ 2.5 % < P(U≤1) = 2/70 → k=1: [min, max]
    assert s.estimate == 4.0
    assert (s.ci_low, s.ci_high) == (1.0, 7.0)


def test_shift_ci_too_few_runs_is_nan():
    s = st.shift_ci([1, 2, 3], [4, 5, 6])  # best p is 2/20 = 10 %: 95 % unreachable
    assert s.estimate == 3.0
    assert math.isnan(s.ci_low) and math.isnan(s.ci_high)
    assert st.shift_ci_rank(3, 3) is None
    assert st.shift_ci_rank(4, 4) == 1


def test_shift_ci_rank_matches_tables():
    # Mann–Whitney critical values (two-sided 5 %): U ≤ 2 for 5/5, 8 for 8/8, 23 for 12/12, 127 for 20/20
    assert st.shift_ci_rank(5, 5) == 3
    assert st.shift_ci_rank(8, 8) == 14
    assert st.shift_ci_rank(12, 12) == 38
    assert st.shift_ci_rank(20, 20) == 128


def test_shift_ci_agrees_with_the_exact_test():
    """The interval excludes 0 exactly when the exact test rejects at 5 % (no ties)."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        m, n = rng.integers(4, 10, size=2)
        a = rng.normal(size=m)
        b = rng.normal(rng.uniform(0, 2), size=n)
        s, t = st.shift_ci(a, b), st.mann_whitney(a, b)
        assert (s.ci_low > 0 or s.ci_high < 0) == (t.p <= 0.05)


def test_shift_ci_recovers_a_known_shift():
    rng = np.random.default_rng(5)
    a = rng.exponential(size=200)
    s = st.shift_ci(a, a + 3.0)
    assert s.estimate == pytest.approx(3.0, abs=0.3)
    assert s.ci_low < 3.0 < s.ci_high or s.ci_low == s.ci_high == 3.0


def test_bootstrap_is_reproducible():
    a, b = [1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8]
    assert st.bootstrap_median_diff(a, b) == st.bootstrap_median_diff(a, b)
    lo, hi = st.bootstrap_median_diff(a, b)
    assert lo <= 2.0 <= hi
