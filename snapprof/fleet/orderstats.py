"""The per-label statistics of ``snapprof.analysis.stats``, in DuckDB SQL over reduced samples.

Input: samples reduced to their distinct values with counts, ``(kind, k1, k2, label, value,
cnt)`` (an engine makes them from the dataset: ``snapprof.fleet.duck``,
``snapprof.fleet.dask_engine``). Every statistic snapprof uses is an order statistic, a
rank sum or a count, so the counts are all it needs, whatever the number of runs:

- summary per key and label: n, median, p95, min, max and the distribution-free interval
  of the median — order statistics picked by cumulative counts (``SUM() OVER``); the ranks
  depend on n only (``stats.median_ci_ranks``; numpy's percentile index for p95);
- per key, label against the baseline: the Hodges-Lehmann shift and its exact interval —
  order statistics of the pairwise differences, each distinct pair weighted by the product
  of its counts (a join of the two sides' distinct values); and the Mann-Whitney rank sums
  and tie term from mid-ranks of the pooled distinct values. The p-value is
  ``stats.mann_whitney``'s: exact from the mid-ranks up to ``stats.EXACT_MAX_N`` runs,
  normal beyond.

Results equal ``stats.summarize`` / ``analysis.compare.compare_samples`` on the same values
(tests/test_fleet_parity.py). When the pairwise join of a key would exceed ``PAIR_LIMIT``
distinct pairs (a fleet of continuous values), that key's shift is selected in numpy
instead (``_kth_pairwise``: bisection on the values, counting pairs by binary search), with
the same result.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from snapprof.analysis import stats

#: Distinct pairs (over all keys of one comparison) the SQL join may make; beyond, numpy.
PAIR_LIMIT = 20_000_000

KEYS = ["kind", "k1", "k2"]


def p95_position(n: int) -> tuple[int, int, float]:
    """0-based (previous, next) indexes and gamma of ``np.percentile(x, 95)`` for n values,
    as numpy's linear method computes them."""
    q = np.float64(95) / np.float64(100)
    v = np.float64(n - 1) * q  # the linear method's virtual index
    prev = float(np.floor(v))
    gamma = float(v - np.float64(prev))
    prev_i, next_i = int(prev), int(prev) + 1
    if v >= n - 1:
        prev_i = next_i = n - 1
    if v < 0:
        prev_i = next_i = 0
    return prev_i, next_i, gamma


def _pick(con, table: str, group: list[str], want: pd.DataFrame) -> pd.DataFrame:
    """Order statistics: ``want`` has the group columns, ``which`` and a 1-based rank ``r``;
    returns it with ``x``, the r-th smallest value of the group in ``table``."""
    con.register("_want", want)
    cols = ", ".join(group)
    on = " AND ".join(f"w.{c} IS NOT DISTINCT FROM c.{c}" for c in group)
    out = con.execute(f"""
        WITH c AS (
            SELECT {cols}, value, SUM(cnt) OVER (PARTITION BY {cols} ORDER BY value
                                               ROWS UNBOUNDED PRECEDING) AS upto, cnt
            FROM {table})
        SELECT w.*, c.value AS x
        FROM _want w JOIN c ON {on} AND w.r > c.upto - c.cnt AND w.r <= c.upto
    """).df()
    con.unregister("_want")
    return out


def summaries(con, vals: str, level: float) -> pd.DataFrame:
    """Per (kind, k1, k2, label) of the reduced samples in table ``vals``: the columns of
    ``stats.summarize`` (n, median, p95, min, max, ci_low, ci_high)."""
    g = KEYS + ["label"]
    cols = ", ".join(g)
    base = con.execute(f"""
        SELECT {cols}, CAST(SUM(cnt) AS BIGINT) AS n, MIN(value) AS min, MAX(value) AS max
        FROM {vals} GROUP BY {cols}""").df()
    if base.empty:
        return pd.DataFrame(columns=g + ["n", "median", "p95", "min", "max", "ci_low", "ci_high"])
    want, gammas = [], {}
    for n in sorted(set(int(x) for x in base["n"])):
        prev_i, next_i, gamma = p95_position(n)
        gammas[n] = gamma
        ranks = {"m1": (n + 1) // 2 if n % 2 else n // 2, "m2": (n + 1) // 2 if n % 2 else n // 2 + 1,
                 "pa": prev_i + 1, "pb": next_i + 1}
        ci = stats.median_ci_ranks(n, level)
        if ci:
            ranks.update(lo=ci[0], hi=ci[1])
        want += [(n, w, r) for w, r in ranks.items()]
    ranks = pd.DataFrame(want, columns=["n", "which", "r"])
    con.register("_base", base)
    con.register("_ranks", ranks)
    con.register("_gamma", pd.DataFrame({"n": list(gammas), "gamma": list(gammas.values())}))
    want_df = con.execute(f"SELECT {cols}, which, r FROM _base JOIN _ranks USING (n)").df()
    picked = _pick(con, vals, g, want_df)
    con.register("_picked", picked)
    on = " AND ".join(f"b.{c} IS NOT DISTINCT FROM p.{c}" for c in g)
    out = con.execute(f"""
        WITH p AS (
            SELECT {cols},
                   MAX(x) FILTER (WHERE which = 'm1') AS m1, MAX(x) FILTER (WHERE which = 'm2') AS m2,
                   MAX(x) FILTER (WHERE which = 'pa') AS pa, MAX(x) FILTER (WHERE which = 'pb') AS pb,
                   MAX(x) FILTER (WHERE which = 'lo') AS lo, MAX(x) FILTER (WHERE which = 'hi') AS hi
            FROM _picked GROUP BY {cols})
        SELECT {", ".join("b." + c for c in g)}, b.n,
               (p.m1 + p.m2) / 2 AS median,
               CASE WHEN gm.gamma >= 0.5 THEN p.pb - (p.pb - p.pa) * (1 - gm.gamma)
                    ELSE p.pa + (p.pb - p.pa) * gm.gamma END AS p95,
               b.min, b.max, p.lo AS ci_low, p.hi AS ci_high
        FROM _base b JOIN p ON {on} JOIN _gamma gm ON gm.n = b.n
    """).df()
    for t in ("_base", "_ranks", "_gamma", "_picked"):
        con.unregister(t)
    return out


def pair_stats(con, vals: str, pairs: list[tuple[str, str]], level: float) -> pd.DataFrame:
    """Per (kind, k1, k2) and (baseline, label) pair measured on both sides: the columns of
    ``compare_samples`` that are not medians (shift, ci_low, ci_high, p, test) and n_base, n."""
    con.register("_pairs", pd.DataFrame(pairs, columns=["base", "label"]))
    keys = ", ".join(KEYS)
    on_keys = " AND ".join(f"a.{c} IS NOT DISTINCT FROM b.{c}" for c in KEYS)
    sizes = con.execute(f"""
        WITH d AS (SELECT {keys}, label, COUNT(*) AS d, CAST(SUM(cnt) AS BIGINT) AS n
                   FROM {vals} GROUP BY {keys}, label)
        SELECT {", ".join("a." + c for c in KEYS)}, p.base, p.label, a.n AS n_base, b.n AS n,
               a.d * b.d AS dpairs
        FROM _pairs p JOIN d a ON a.label = p.base JOIN d b ON b.label = p.label AND {on_keys}
    """).df()
    if sizes.empty:
        con.unregister("_pairs")
        return pd.DataFrame(columns=KEYS + ["base", "label", "n_base", "n", "shift", "ci_low",
                                            "ci_high", "p", "test"])
    # ranks of the pairwise differences wanted (1-based), per key and pair
    want = []
    for row in sizes.itertuples(index=False):
        mn = int(row.n_base) * int(row.n)
        k = stats.shift_ci_rank(int(row.n_base), int(row.n), level)
        ranks = {"s1": (mn - 1) // 2 + 1, "s2": mn // 2 + 1}
        if k:
            ranks.update(lo=k, hi=mn - k + 1)
        want += [(row.kind, row.k1, row.k2, row.base, row.label, w, r) for w, r in ranks.items()]
    want = pd.DataFrame(want, columns=KEYS + ["base", "label", "which", "r"])
    big = sizes["dpairs"].sum() > PAIR_LIMIT
    sizes["sql"] = ~big | (sizes["dpairs"] <= PAIR_LIMIT // max(1, len(sizes)))
    sql_keys = sizes[sizes["sql"]][KEYS + ["base", "label"]]
    picked = _pick_pairs(con, vals, want.merge(sql_keys, on=KEYS + ["base", "label"]))
    for row in sizes[~sizes["sql"]].itertuples(index=False):
        picked = pd.concat([picked, _pick_pairs_numpy(con, vals, row, want)], ignore_index=True)
    ranks_sums = _rank_sums(con, vals)
    con.unregister("_pairs")

    out = []
    by_key = {_key(k): g for k, g in picked.groupby(KEYS + ["base", "label"], dropna=False)}
    for row in sizes.itertuples(index=False):
        key = (row.kind, row.k1, row.k2, row.base, row.label)
        got = by_key.get(_key(key))
        x = dict(zip(got["which"], got["x"])) if got is not None else {}
        shift = float((x["s1"] + x["s2"]) / 2.0)
        mw = _mann_whitney(ranks_sums, key, int(row.n_base), int(row.n))
        out.append({"kind": row.kind, "k1": row.k1, "k2": row.k2, "base": row.base,
                    "label": row.label, "n_base": int(row.n_base), "n": int(row.n),
                    "shift": shift, "ci_low": float(x["lo"]) if "lo" in x else math.nan,
                    "ci_high": float(x["hi"]) if "hi" in x else math.nan,
                    "p": mw.p, "test": f"Mann-Whitney U ({mw.method})"})
    return pd.DataFrame(out)


def _key(values) -> tuple:
    """A key tuple with NULL as None (pandas gives None or NaN for SQL's NULL)."""
    return tuple(None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values)


def _pick_pairs(con, vals: str, want: pd.DataFrame) -> pd.DataFrame:
    """Order statistics of the weighted pairwise differences b - a, in SQL."""
    if want.empty:
        return want.assign(x=pd.Series(dtype="float64"))
    con.register("_wantp", want)
    con.register("_wkeys", want[KEYS + ["base", "label"]].drop_duplicates())
    on_a = " AND ".join(f"a.{c} IS NOT DISTINCT FROM w.{c}" for c in KEYS)
    on_b = " AND ".join(f"b.{c} IS NOT DISTINCT FROM w.{c}" for c in KEYS)
    on_w = " AND ".join(f"d.{c} IS NOT DISTINCT FROM q.{c}" for c in KEYS)
    out = con.execute(f"""
        WITH diffs AS (
            SELECT {", ".join("w." + c for c in KEYS)}, w.base, w.label,
                   b.value - a.value AS d, a.cnt * b.cnt AS wt
            FROM _wkeys w JOIN {vals} a ON a.label = w.base AND {on_a}
                          JOIN {vals} b ON b.label = w.label AND {on_b}),
        c AS (SELECT *, SUM(wt) OVER (PARTITION BY {", ".join(KEYS)}, base, label ORDER BY d
                                     ROWS UNBOUNDED PRECEDING) AS upto FROM diffs)
        SELECT q.*, d.d AS x FROM _wantp q JOIN c d ON {on_w} AND d.base = q.base
            AND d.label = q.label AND q.r > d.upto - d.wt AND q.r <= d.upto
    """).df()
    con.unregister("_wantp")
    con.unregister("_wkeys")
    return out


def _side(con, vals: str, key, label) -> tuple[np.ndarray, np.ndarray]:
    kind, k1, k2 = key
    df = con.execute(f"SELECT value, cnt FROM {vals} WHERE kind = ? AND k1 IS NOT DISTINCT FROM ? "
                     "AND k2 IS NOT DISTINCT FROM ? AND label = ? ORDER BY value",
                     [kind, k1, k2, label]).df()
    return df["value"].to_numpy(float), df["cnt"].to_numpy(np.int64)


def _pick_pairs_numpy(con, vals: str, row, want: pd.DataFrame) -> pd.DataFrame:
    key = (row.kind, row.k1, row.k2)
    va, ca = _side(con, vals, key, row.base)
    vb, cb = _side(con, vals, key, row.label)
    mine = _key((row.kind, row.k1, row.k2, row.base, row.label))
    w = want[[_key(k) == mine for k in want[KEYS + ["base", "label"]].itertuples(index=False)]]
    return w.assign(x=[_kth_pairwise(va, ca, vb, cb, int(r)) for r in w["r"]])


def _count_le(va, ca, vb, cum_b, t: float) -> int:
    """Weighted number of pairs with fl(b - a) <= t (va, vb sorted ascending)."""
    # for each a, the b with fl(b - a) <= t form a prefix of vb: find its end by binary search
    lo = np.zeros(len(va), dtype=np.int64)
    hi = np.full(len(va), len(vb), dtype=np.int64)
    while True:
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) // 2
        ok = (vb[np.minimum(mid, len(vb) - 1)] - va) <= t
        lo = np.where(active & ok, mid + 1, lo)
        hi = np.where(active & ~ok, mid, hi)
    total = np.concatenate([[0], cum_b])[lo]
    return int((total * ca).sum())


def _kth_pairwise(va, ca, vb, cb, r: int) -> float:
    """The r-th smallest (1-based, weighted) of fl(b - a): bisection over the doubles in
    their bit order (monotone for the non-NaN values), at most 64 steps."""
    cum_b = np.cumsum(cb)

    def key(x: float) -> int:
        i = int(np.float64(x).view(np.int64))
        return i if i >= 0 else -(i & 0x7FFFFFFFFFFFFFFF)

    def val(k: int) -> float:
        i = k if k >= 0 else (-k) | np.int64(-0x8000000000000000).item()
        return float(np.int64(i).view(np.float64))

    lo, hi = key(float(vb[0] - va[-1])), key(float(vb[-1] - va[0]))
    while lo < hi:
        mid = (lo + hi) // 2
        if _count_le(va, ca, vb, cum_b, val(mid)) >= r:
            hi = mid
        else:
            lo = mid + 1
    return val(lo)


def _rank_sums(con, vals: str) -> pd.DataFrame:
    """Per key and pair: the distinct pooled values with their counts on each side and
    mid-rank (for the Mann-Whitney statistic)."""
    keys = ", ".join(KEYS)
    return con.execute(f"""
        WITH s AS (
            SELECT {", ".join("v." + c for c in KEYS)}, p.base, p.label AS cand, v.value,
                   SUM(CASE WHEN v.label = p.base THEN v.cnt ELSE 0 END) AS ca,
                   SUM(CASE WHEN v.label = p.label THEN v.cnt ELSE 0 END) AS cb
            FROM _pairs p JOIN {vals} v ON v.label IN (p.base, p.label)
            GROUP BY {", ".join("v." + c for c in KEYS)}, p.base, p.label, v.value),
        r AS (SELECT *, SUM(ca + cb) OVER (PARTITION BY {keys}, base, cand ORDER BY value
                                          ROWS UNBOUNDED PRECEDING) - (ca + cb) AS before FROM s)
        SELECT {keys}, base, cand AS label,
               SUM(ca * (before + (ca + cb + 1) / 2.0)) AS r_a,
               SUM(cb * (before + (ca + cb + 1) / 2.0)) AS r_b,
               SUM(CAST(ca + cb AS DOUBLE) ** 3 - (ca + cb)) AS tie_term_sum,
               LIST(before + (ca + cb + 1) / 2.0 ORDER BY value) AS midranks,
               LIST(ca + cb ORDER BY value) AS counts
        FROM r GROUP BY {keys}, base, cand
    """).df().set_index(KEYS + ["base", "label"]).sort_index()


def _mann_whitney(rank_sums: pd.DataFrame, key, m: int, n: int) -> stats.MannWhitney:
    """``stats.mann_whitney`` from the pooled mid-ranks (same formulas, same figures)."""
    row = rank_sums.loc[key]
    if isinstance(row, pd.DataFrame):
        row = row.iloc[0]
    big_n = m + n
    r_a = float(row["r_a"])
    u = float(r_a - m * (m + 1) / 2.0)
    if big_n <= stats.EXACT_MAX_N:
        ranks = [float(r) for r, c in zip(row["midranks"], row["counts"]) for _ in range(int(c))]
        doubled = tuple(sorted(int(round(2 * r)) for r in ranks))
        small = min(m, n)
        counts = stats._rank_sum_counts(doubled, small)
        t_obs = int(round(2 * (r_a if m <= n else float(row["r_b"]))))
        center2 = small * (big_n + 1)
        dev = np.abs(np.arange(len(counts)) - center2)
        obs = abs(t_obs - center2)
        p = counts[dev >= obs].sum() / counts.sum()
        return stats.MannWhitney(u, float(min(1.0, p)), "exact", m, n)
    tie_term = float(row["tie_term_sum"]) / (big_n * (big_n - 1))
    var = m * n / 12.0 * ((big_n + 1) - tie_term)
    if var <= 0:
        return stats.MannWhitney(u, 1.0, "normal", m, n)
    z = (abs(u - m * n / 2.0) - 0.5) / math.sqrt(var)
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return stats.MannWhitney(u, float(min(1.0, p)), "normal", m, n)
