"""A pooled comparison: ``analysis.compare.Comparison`` from a dataset, through an engine.

The objects are the ones ``snapprof compare`` builds from capture files (``Comparison``,
``Group``), so the compare reporters are unchanged; the figures are the same too
(tests/test_fleet_parity.py): the rules are ``analysis.compare.assemble``'s, fed by
``PooledFigures`` — the engine's reduced samples, with the statistics from ``orderstats``
(DuckDB SQL) instead of numpy over every run.

Grouping: by default one label per kernel release (with the image compressor when the
captures of one release differ in it, as ``analysis.compare.default_labels`` does); or by
any column of the captures table (``GROUP_COLUMNS``). Labels come in order of first
appearance in the dataset (pool order) unless ``only`` names them (its first is the
baseline).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from snapprof import metrics as registry
from snapprof.analysis import compare as C
from snapprof.analysis.failures import RATE_METHOD, clopper_pearson
from snapprof.analysis.summary import NO_REASON
from snapprof.errors import SnapprofError
from snapprof.fleet import orderstats

#: --by NAME -> column of the captures table ("kernel": the default labels)
GROUP_COLUMNS = {"kernel": None, "kernel_release": "kernel_release", "userspace": "userspace",
                 "distro": "distro", "host": "host", "host_model": "host_model",
                 "machine": "machine", "compressor": "compressor", "trigger": "trigger",
                 "bcc": "bcc_version", "python": "python_version", "libc": "libc_version",
                 "snapprof": "snapprof_version", "batch": "batch"}
NOT_RECORDED = "(not recorded)"


@dataclass
class PooledCapture:
    """What the compare reporters read of a pooled capture (``Group.frames``)."""

    source: str
    meta: dict
    warnings: list = field(default_factory=list)
    capture_id: str = ""
    probes: list = field(default_factory=list)  # [name, area, target, attached, reason]


def _labels(caps: pd.DataFrame, by: str) -> tuple[list[str], list[str]]:
    """(label of each capture, notes), as analysis.compare.default_labels for "kernel"."""
    if by not in GROUP_COLUMNS:
        raise SnapprofError(f"--by {by!r}: group by one of {', '.join(GROUP_COLUMNS)}")
    col = GROUP_COLUMNS[by]
    if col is not None:
        return [NOT_RECORDED if v is None or (isinstance(v, float) and math.isnan(v)) or not str(v).strip()
                else str(v).strip() for v in caps[col]], []
    labels = []
    for src, rel in zip(caps["source"], caps["kernel_release"]):
        if rel is None or not str(rel).strip():
            raise SnapprofError(f"{src or 'capture'}: no kernel_release in its meta; group with --by")
        labels.append(str(rel).strip())
    comps = [(c, h) if isinstance(c, str) else None for c, h in zip(caps["compressor"], caps["compressor_how"])]
    notes = []
    for release in dict.fromkeys(labels):
        idx = [i for i, lab in enumerate(labels) if lab == release]
        if len({comps[i][0] if comps[i] else None for i in idx}) < 2:
            continue
        said = []
        for i in idx:
            labels[i] = f"{release} {comps[i][0] if comps[i] else C.UNKNOWN_COMPRESSOR}"
            said.append(f"{caps['source'].iloc[i] or 'capture'}: "
                        + (f"{comps[i][0]} ({comps[i][1]})" if comps[i] else "not named"))
        notes.append(f"captures of {release} differ in image compressor, so the label names it "
                     f"and they are not pooled ({'; '.join(said)}); --label overrides")
    return labels, notes


class _Side:
    """One label's reduced figures, looked up the way compare() looks at a Group."""

    def __init__(self, label, red, summ):
        self.label = label
        self.names = {(k, n) for k, n in zip(red.names["kind"], red.names["name"])}
        self.measured = {(k, n): row for (k, n), row in summ.items()}

    def series(self, kind, name):
        return self.measured.get((kind, name))


def compare_pooled(engine, by: str = "kernel", only: list[str] | None = None,
                   level: float = C.LEVEL, wide: bool = False) -> C.Comparison:
    """The Comparison of the dataset behind ``engine``. ``wide``: fill ``Group.values`` and
    ``Group.phases`` with every complete run's figures (the HTML page plots them)."""
    caps = engine.captures()
    if caps.empty:
        raise SnapprofError("the dataset holds no capture: add some with snapprof pool")
    labels_of, label_notes = _labels(caps, by)
    caps = caps.assign(label=labels_of)
    order = list(dict.fromkeys(labels_of))
    if only:
        missing = [lab for lab in only if lab not in order]
        if missing:
            raise SnapprofError(f"no capture in the dataset has the label {missing[0]!r} (--by {by}; "
                                f"labels: {', '.join(order[:12])}{' …' if len(order) > 12 else ''})")
        order = list(dict.fromkeys(only))
        caps = caps[caps["label"].isin(order)]
    n_captures = len(caps)
    if n_captures < 2:
        raise SnapprofError(f"compare needs at least two captures (got {n_captures})")
    if len(order) < 2:
        raise SnapprofError(f"all {n_captures} captures have the label {order[0]!r}: nothing to "
                            "compare against; group them with --by, or pool other kernels")
    caps = caps.assign(cap=caps.groupby("label", sort=False).cumcount())
    red = engine.reduce(caps[["capture_id", "label", "cap"]])
    counts = engine.run_counts()

    from snapprof.fleet.duck import connect
    con = connect()
    try:
        con.register("vals", red.vals[red.vals["value"].notna()])
        summ = orderstats.summaries(con, "vals", level)
        pairs = [(order[0], lab) for lab in order[1:]]
        pst = orderstats.pair_stats(con, "vals", pairs, level)
    finally:
        con.close()

    groups = {lab: _group(lab, caps[caps["label"] == lab], red, counts, summ, wide, engine)
              for lab in order}
    figures = PooledFigures(order[0], red, summ, pst, caps, counts, level)
    return C.assemble(order, groups, figures, level, label_notes)


def _group(label, caps, red, counts, summ, wide, engine) -> C.Group:
    stubs = [PooledCapture(source=s or "?", meta=json.loads(m), warnings=json.loads(w),
                           capture_id=cid, probes=json.loads(p))
             for s, m, w, cid, p in zip(caps["source"], caps["meta"], caps["warnings"],
                                        caps["capture_id"], caps["probes"])]
    excluded: dict[str, int] = {}
    by_cap = counts[counts["capture_id"].isin(set(caps["capture_id"]))]
    per = by_cap.groupby(["capture_id", "status"])["cnt"].sum().to_dict()
    for cid in caps["capture_id"]:
        for status in ("failed", "incomplete"):
            n = int(per.get((cid, status), 0))
            if n:
                excluded[status] = excluded.get(status, 0) + n
    n_complete = int(caps["runs_complete"].sum())
    sel = lambda df: df[df["label"] == label]  # noqa: E731
    units = dict(zip(sel(red.units)["name"], sel(red.units)["unit"]))
    methods = {}
    for (kind, name), m in sel(red.methods).groupby(["kind", "name"])["method"]:
        methods[(kind, name)] = ", ".join(sorted(set(m)))
    refused = {(k, str(n)): int(c) for k, n, c in sel(red.refused)[["kind", "name", "cnt"]].itertuples(index=False)}
    nm = sel(red.not_measured)
    nm_complete = nm[nm["in_complete"].fillna(False).astype(bool)]
    nm_reasons = {(int(cap), name): list(dict.fromkeys(r.astype(str)))
                  for (cap, name), r in nm_complete.groupby(["cap", "name"], sort=False)["reason"]}
    differs = sorted(k for k in ("kernel_release", *C.SETUP_KEYS)
                     if len({s.meta.get(k) for s in stubs}) > 1)
    comps = [(c, h) if isinstance(c, str) else None for c, h in zip(caps["compressor"], caps["compressor_how"])]
    if len({c[0] if c else None for c in comps}) > 1:
        differs.append("image compressor")
    named = list(dict.fromkeys(f"{c[0]} ({c[1]})" for c in comps if c))
    values, phases = _wide_tables(engine, caps, n_complete, wide)
    g = C.Group(
        label=label, sources=[s.source for s in stubs], meta=dict(stubs[0].meta),
        runs_total=int(caps["runs_total"].sum()), excluded=excluded, values=values, phases=phases,
        units=units, methods=methods, frames=stubs, nm_names=set(nm_complete["name"]),
        nm_reasons=nm_reasons, complete=[], devices=pd.DataFrame(columns=["cap", "run_id", "device", "driver", "ms"]),
        tasks=pd.DataFrame(columns=["cap", "run_id", "stage", "comm", "ms"]), meta_differs=differs,
        compressor=" / ".join(named) or None, refused=refused)
    # for the reasons (not a Group field): not_measured of captures without complete runs,
    # and the phases whose clocks jumped
    g._pooled_nm_all = nm
    g._pooled_clocks = sel(red.clocks)
    g._pooled_has_complete = [int(x) > 0 for x in caps["runs_complete"]]
    g._pooled_composition = [c for c in caps["composition_absent"] if isinstance(c, str) and c]
    return g


def _wide_tables(engine, caps, n_complete, wide):
    """Group.values / Group.phases: every complete run's figures (``wide``), else frames of
    the right length without columns (n_runs is len(values); only the HTML plots read them)."""
    if not wide or not hasattr(engine, "wide"):
        idx = pd.RangeIndex(n_complete)
        return pd.DataFrame(index=idx, dtype="float64"), pd.DataFrame(index=idx, dtype="float64")
    return engine.wide(caps[["capture_id", "label", "cap"]])


def _reason(g: C.Group, name: str) -> str:
    """analysis.compare.group_reason over pooled captures."""
    reasons = []
    cache: dict = {}
    nm_all = g._pooled_nm_all
    for i, f in enumerate(g.frames):
        own = g.nm_reasons.get((i, name))
        if own:
            reasons.append("; ".join(own))
            continue
        if not g._pooled_has_complete[i]:  # no complete run: the reasons of every run
            rows = nm_all[(nm_all["cap"] == i) & (nm_all["name"] == name)]["reason"]
            if len(rows):
                reasons.append("; ".join(dict.fromkeys(rows.astype(str))))
                continue
        key = json.dumps(f.probes)
        if key not in cache:
            cache[key] = _probe_reason(f.probes, name)
        reasons.append(cache[key])
    uniq = [r for r in dict.fromkeys(reasons) if r != NO_REASON]
    return "; ".join(uniq) if uniq else NO_REASON


def _probe_reason(probes: list, name: str) -> str:
    """summary.not_measured_reason's fallback: the probes of the figure's area, none attached."""
    area = registry.get(name).area
    same = [p for p in probes if p[1] == area]
    missing = [p for p in same if not p[3]]
    if missing and not any(p[3] for p in same):
        return "; ".join(f"probe {p[0]} not attached: {p[4] or 'no reason given'}" for p in missing)
    return NO_REASON


class PooledFigures(C.Figures):
    """compare's figures from the engine's reduced samples: per-label summaries and
    baseline-vs-label pair statistics computed in SQL (``orderstats``)."""

    def __init__(self, baseline, red, summ, pst, caps, counts, level):
        self.baseline, self.red, self.summ, self.pst = baseline, red, summ, pst
        self.caps, self.counts, self.level = caps, counts, level
        fig = summ[summ["kind"].isin(["metric", "phase"])]
        self._stat = {(k, n, lab): row for k, n, lab, row in zip(fig["kind"], fig["k1"], fig["label"],
                                                                 fig.to_dict("records"))}
        self._pairs = {(r["kind"], r["k1"], r["label"]): r for r in
                       pst[pst["kind"].isin(["metric", "phase"])].to_dict("records")} if len(pst) else {}

    def names(self):
        labels = set(self.caps["label"])
        return {(k, n) for k, n, lab in self.red.names[["kind", "name", "label"]].itertuples(index=False)
                if lab in labels}

    def summary(self, label, kind, name):
        s = self._stat.get((kind, name, label))
        if s is None:
            return None
        out = {"n": int(s["n"])}
        for c in ("median", "p95", "min", "max", "ci_low", "ci_high"):
            out[c] = float(s[c]) if s[c] is not None and not pd.isna(s[c]) else math.nan
        return out

    def difference(self, label, kind, name, lower_is_better):
        return _samples_row(self._stat[(kind, name, self.baseline)], self._stat[(kind, name, label)],
                            self._pairs[(kind, name, label)], lower_is_better, self.level)

    def reason(self, group, name):
        return _reason(group, name)

    def composition_absent(self, group):
        return next(iter(group._pooled_composition), None)

    def phase_clock(self, group, name):
        clk = group._pooled_clocks[group._pooled_clocks["phase"] == name].sort_values("cap")
        if not len(clk):
            return None
        return "jump" if bool(clk.iloc[0]["jump"]) else "back"

    def changes(self, label, kind):
        keys = ["device"] if kind == "device" else ["stage", "comm"]
        return _changes(self.red.vals, self.summ, self.pst, kind, keys, label, self.baseline, self.level)

    def failure_rate(self, label):
        return _rate(self.caps[self.caps["label"] == label], self.counts)


def _samples_row(sa: dict, sb: dict, pair: dict, lower_is_better, level: float) -> dict:
    """analysis.compare.compare_samples from the summaries and the pair statistics."""
    med_a, med_b = float(sa["median"]), float(sb["median"])
    delta = med_b - med_a

    def pct(x):
        return x / abs(med_a) * 100.0 if med_a != 0 and not math.isnan(x) else math.nan

    lo, hi = float(pair["ci_low"]), float(pair["ci_high"])
    return {
        "n_base": int(sa["n"]), "n": int(sb["n"]), "median_base": med_a, "median": med_b,
        "delta": delta, "delta_pct": pct(delta), "shift": float(pair["shift"]),
        "ci_low": lo, "ci_high": hi, "ci_low_pct": pct(lo), "ci_high_pct": pct(hi),
        "p": float(pair["p"]), "test": pair["test"],
        "verdict": C.verdict_of(lower_is_better, lo, hi, float(pair["p"]), level,
                              int(sa["n"]), int(sb["n"])),
    }


def _changes(vals, summ, pst, kind, keys, label, baseline, level) -> pd.DataFrame:
    """analysis.compare._changes from the reduced samples (devices, or tasks by stage+comm)."""
    v = vals[(vals["kind"] == kind) & vals["label"].isin([baseline, label])]
    present = {}
    for k1, k2, lab in v[["k1", "k2", "label"]].itertuples(index=False):
        present.setdefault((k1,) if len(keys) == 1 else (k1, k2), set()).add(lab)
    s = summ[summ["kind"] == kind]
    stat = {((k1,) if len(keys) == 1 else (k1, k2), lab): r
            for k1, k2, lab, r in zip(s["k1"], s["k2"], s["label"], s.to_dict("records"))}
    p = pst[(pst["kind"] == kind) & (pst["label"] == label)] if len(pst) else pst
    pair = {((k1,) if len(keys) == 1 else (k1, k2)): r
            for k1, k2, r in zip(p.get("k1", []), p.get("k2", []), p.to_dict("records"))}
    rows = []
    for kt in sorted(present, key=str):  # as pandas' groupby keys (tuples), by str
        if not ({baseline, label} & present[kt]):
            continue
        row = dict(zip(keys, kt), label=label, baseline=baseline)
        a, b = stat.get((kt, baseline)), stat.get((kt, label))
        row.update(runs_base=int(a["n"]) if a else 0, runs=int(b["n"]) if b else 0)
        if a is None or b is None:
            where = baseline if a else label
            row.update(median_base=float(a["median"]) if a else math.nan,
                       median=float(b["median"]) if b else math.nan,
                       delta=math.nan, delta_pct=math.nan, ci_low=math.nan, ci_high=math.nan,
                       p=math.nan, verdict=f"only in {where}" if a or b else "no timing")
        else:
            full = _samples_row(a, b, pair[kt], True, level)
            row.update({c: full[c] for c in ("median_base", "median", "delta", "delta_pct",
                                             "ci_low", "ci_high", "p", "verdict")})
        rows.append(row)
    cols = keys + ["label", "baseline", "runs_base", "runs", "median_base", "median", "delta",
                   "delta_pct", "ci_low", "ci_high", "p", "verdict"]
    out = pd.DataFrame(rows, columns=cols)
    if out.empty:
        return out
    out["abs_delta"] = out["delta"].abs()
    return out.sort_values(["abs_delta"], ascending=False, na_position="last").drop(
        columns="abs_delta").reset_index(drop=True)


def _rate(caps: pd.DataFrame, counts: pd.DataFrame) -> dict | None:
    """failures.rate_of over the label's captures, from the runs table's counts."""
    c = counts[counts["capture_id"].isin(set(caps["capture_id"]))]
    n = int(c["cnt"].sum())
    if n == 0:
        return None
    bad = c[c["status"] != "complete"]
    k = int(bad["cnt"].sum())
    # kinds in the order the in-memory path meets them: capture by capture
    kinds: dict[str, int] = {}
    pos = {cid: i for i, cid in enumerate(caps["capture_id"])}
    for _, r in bad.assign(_pos=bad["capture_id"].map(pos)).sort_values("_pos", kind="stable").iterrows():
        kinds[r["failure_kind"]] = kinds.get(r["failure_kind"], 0) + int(r["cnt"])
    low, high = clopper_pearson(k, n)
    return {"failed": k, "runs": n, "rate": k / n, "ci_low": low, "ci_high": high, "kinds": kinds,
            "method": RATE_METHOD}
