"""Distribution-free statistics for few runs: medians, their intervals, and two-sample tests.

Hibernation cycles are slow (seconds to minutes each), so a capture holds a handful of
runs, and run times are skewed (a slow device, a retried freezer pass). Nothing here
assumes normality:

* ``median_ci``       — confidence interval of a median from order statistics (binomial);
* ``shift_ci``        — Hodges–Lehmann estimate of the shift between two samples with its
                         exact distribution-free (Moses) interval;
* ``mann_whitney``    — Mann–Whitney U test: exact permutation distribution (ties handled
                         with mid-ranks) for small samples, normal approximation with tie
                         and continuity correction for larger ones.

numpy only (scipy is not a dependency). NaN means "not measured" and is dropped, never
treated as 0. When a sample is too small for an interval to reach the requested level the
result is NaN, not a narrower interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

#: Largest pooled sample (n_a + n_b) for which the exact permutation distribution is used.
#: Counts stay below C(60, 30) ≈ 1.2e17, exact in int64.
EXACT_MAX_N = 60


def clean(values) -> np.ndarray:
    """values as a float array without NaN (not measured) entries."""
    arr = np.asarray(values, dtype=float).ravel()
    return arr[~np.isnan(arr)]


# ---------------------------------------------------------------------------- one sample


def median_ci_ranks(n: int, level: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks (k, n-k+1) of the order statistics bounding the median at ``level``.

    The interval [x_(k), x_(n-k+1)] covers the population median with probability
    1 - 2·P(Bin(n, 1/2) ≤ k-1); k is the largest rank for which that is ≥ level.
    None when even [min, max] does not reach the level (n < 6 for 95 %).
    """
    if n < 1:
        return None
    tail = (1.0 - level) / 2.0
    cdf = 0.0
    k = 0
    for i in range(n // 2 + 1):
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                        - n * math.log(2.0))
        if cdf > tail + 1e-12:
            break
        k = i + 1
    if k < 1:
        return None
    return k, n - k + 1


def median_ci(values, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median; (nan, nan) when n is too small."""
    x = np.sort(clean(values))
    ranks = median_ci_ranks(len(x), level)
    if ranks is None:
        return (math.nan, math.nan)
    lo, hi = ranks
    return (float(x[lo - 1]), float(x[hi - 1]))


def summarize(values, level: float = 0.95) -> dict:
    """n, median, p95, min, max, ci_low, ci_high of the measured (non-NaN) values."""
    x = clean(values)
    n = len(x)
    if n == 0:
        nan = math.nan
        return {"n": 0, "median": nan, "p95": nan, "min": nan, "max": nan,
                "ci_low": nan, "ci_high": nan}
    lo, hi = median_ci(x, level)
    return {
        "n": n,
        "median": float(np.median(x)),
        "p95": float(np.percentile(x, 95)),
        "min": float(x.min()),
        "max": float(x.max()),
        "ci_low": lo,
        "ci_high": hi,
    }


# ---------------------------------------------------------------------------- two samples


def midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N, ties getting the mean of the ranks they span."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    sorted_vals = values[order]
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks


def _subset_sum_counts(weights: tuple[int, ...], m: int) -> np.ndarray:
    """counts[t] = number of m-element subsets of ``weights`` whose sum is t (int64, exact)."""
    total = sum(weights)
    table = np.zeros((m + 1, total + 1), dtype=np.int64)
    table[0, 0] = 1
    for w in weights:
        if w == 0:
            table[1:, :] = table[1:, :] + table[:-1, :]
        else:
            table[1:, w:] = table[1:, w:] + table[:-1, :-w]
    return table[m]


@lru_cache(maxsize=256)
def _rank_sum_counts(doubled_ranks: tuple[int, ...], m: int) -> np.ndarray:
    return _subset_sum_counts(doubled_ranks, m)


@lru_cache(maxsize=256)
def _u_counts_no_ties(m: int, n: int) -> np.ndarray:
    """Exact null distribution of U (no ties): counts[u], u = 0..m·n."""
    small = min(m, n)
    counts = _rank_sum_counts(tuple(range(2, 2 * (m + n) + 1, 2)), small)
    # doubled rank sums of the smaller group run from small(small+1) in steps of 2
    offset = small * (small + 1)
    return counts[offset::2].copy()


@dataclass(frozen=True)
class MannWhitney:
    u: float       # U statistic of the first sample (number of pairs a > b, ties ½)
    p: float       # two-sided p-value
    method: str    # "exact" (permutation distribution) or "normal" (tie- and continuity-corrected)
    n_a: int
    n_b: int


def mann_whitney(a, b, method: str = "auto") -> MannWhitney:
    """Two-sided Mann–Whitney U test of a against b (NaNs dropped).

    ``method``: "exact" enumerates the permutation distribution of the rank sum with the
    observed mid-ranks (so ties are handled exactly); "normal" uses the normal
    approximation with tie correction and continuity correction; "auto" is exact when
    n_a + n_b ≤ EXACT_MAX_N. The two-sided p-value is P(|T - E T| ≥ |t_obs - E T|).
    p is NaN when either sample is empty.
    """
    a, b = clean(a), clean(b)
    m, n = len(a), len(b)
    if m == 0 or n == 0:
        return MannWhitney(math.nan, math.nan, "none", m, n)
    big_n = m + n
    ranks = midranks(np.concatenate([a, b]))
    r_a = ranks[:m].sum()
    u = float(r_a - m * (m + 1) / 2.0)
    if method == "auto":
        method = "exact" if big_n <= EXACT_MAX_N else "normal"
    if method == "exact":
        doubled = tuple(sorted(int(round(2 * r)) for r in ranks))
        small = min(m, n)
        counts = _rank_sum_counts(doubled, small)
        t_obs = int(round(2 * (r_a if m <= n else ranks[m:].sum())))  # doubled rank sum
        center2 = small * (big_n + 1)  # 2·E[T], an integer
        dev = np.abs(np.arange(len(counts)) - center2)
        obs = abs(t_obs - center2)
        p = counts[dev >= obs].sum() / counts.sum()
        return MannWhitney(u, float(min(1.0, p)), "exact", m, n)
    if method != "normal":
        raise ValueError(f"unknown method {method!r}")
    _, tie_counts = np.unique(ranks, return_counts=True)
    tie_term = float((tie_counts ** 3 - tie_counts).sum()) / (big_n * (big_n - 1))
    var = m * n / 12.0 * ((big_n + 1) - tie_term)
    if var <= 0:
        return MannWhitney(u, 1.0, "normal", m, n)
    z = (abs(u - m * n / 2.0) - 0.5) / math.sqrt(var)
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return MannWhitney(u, float(min(1.0, p)), "normal", m, n)


def shift_ci_rank(m: int, n: int, level: float = 0.95) -> int | None:
    """1-based rank k so that [D_(k), D_(mn-k+1)] of the sorted pairwise differences is the
    exact distribution-free interval for the shift at ``level``; None when unreachable.

    k is the largest with P(U ≤ k-1) ≤ (1-level)/2 under the null (no-ties) distribution;
    exact for m + n ≤ EXACT_MAX_N, normal approximation beyond.
    """
    if m < 1 or n < 1:
        return None
    tail = (1.0 - level) / 2.0
    if m + n <= EXACT_MAX_N:
        counts = _u_counts_no_ties(m, n)
        cdf = np.cumsum(counts) / counts.sum()
        k = int(np.searchsorted(cdf, tail + 1e-12, side="right"))  # number of u with cdf ≤ tail
    else:
        z = NormalDist().inv_cdf(1.0 - tail)
        k = int(math.floor(m * n / 2.0 - z * math.sqrt(m * n * (m + n + 1) / 12.0)))
    if k < 1:
        return None
    return k


@dataclass(frozen=True)
class Shift:
    estimate: float  # Hodges–Lehmann: median of all pairwise differences b - a
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int


def shift_ci(a, b, level: float = 0.95) -> Shift:
    """Hodges–Lehmann shift b - a with its exact distribution-free (Moses) interval.

    The interval is the pair of order statistics of the m·n differences b_j - a_i chosen
    from the Mann–Whitney null distribution, so it excludes 0 exactly when the exact
    test rejects at 1 - level (up to ties). NaN bounds when the samples are too small to
    reach the level (e.g. 3 and 3 runs at 95 %); NaN everywhere when a sample is empty.
    """
    a, b = clean(a), clean(b)
    m, n = len(a), len(b)
    if m == 0 or n == 0:
        return Shift(math.nan, math.nan, math.nan, m, n)
    diffs = (b[None, :] - a[:, None]).ravel()
    mn = len(diffs)
    k = shift_ci_rank(m, n, level)
    mids = [(mn - 1) // 2, mn // 2]
    picks = sorted(set(mids + ([k - 1, mn - k] if k else [])))
    part = np.partition(diffs, picks)
    estimate = float((part[mids[0]] + part[mids[1]]) / 2.0)
    if k is None:
        return Shift(estimate, math.nan, math.nan, m, n)
    return Shift(estimate, float(part[k - 1]), float(part[mn - k]), m, n)


def bootstrap_median_diff(a, b, level: float = 0.95, n_boot: int = 2000,
                          seed: int = 20240601) -> tuple[float, float]:
    """Percentile bootstrap interval of median(b) - median(a), fixed seed (reproducible).

    Kept as a cross-check of ``shift_ci``; with few runs the bootstrap of a median is
    coarse and tends to be too narrow, which is why compare uses the exact interval.
    """
    a, b = clean(a), clean(b)
    if len(a) == 0 or len(b) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    ma = np.median(rng.choice(a, size=(n_boot, len(a)), replace=True), axis=1)
    mb = np.median(rng.choice(b, size=(n_boot, len(b)), replace=True), axis=1)
    d = mb - ma
    tail = (1.0 - level) / 2.0
    return (float(np.quantile(d, tail)), float(np.quantile(d, 1.0 - tail)))
