"""`snapprof compare` as one self-contained HTML page: tables from the Comparison, plots as
inline SVG drawn with matplotlib's object API (no pyplot, no global state), laid out by the
Jinja2 template reports/templates/compare.html.j2.

Plots: distributions per label (ECDF per metric and per phase), median phase time stacked
per label, page accounting per label, and the devices and tasks that changed most.
"""

from __future__ import annotations

import math
import re

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from snapprof import __version__
from snapprof import metrics as registry
from snapprof.analysis.compare import PAGE_METRICS, Comparison, ThresholdResult
from snapprof.analysis.compare_summary import (area_of, area_title, by_area, is_real_change,
                                               is_setting)
from snapprof.analysis.phases import PHASE_LABELS
from snapprof.report import compare_text as ct
from snapprof.report import plots
from snapprof.report.compare_forest import forest_figures
from snapprof.report.fmt import number

TEMPLATE = "compare.html.j2"
PANEL_COLS = 4
ECDF_POINTS = 200
#: Above this many labels, a panel shows each label's median and min–max instead of ECDFs.
MAX_ECDF_LABELS = 8
#: Comparisons (labels after the baseline) that get device and task figures; beyond, tables only.
MAX_CHANGE_FIGURES = 4
NBSP = "\u00a0"
#: Summary sentences shown on the first screen, over all labels (each label at least
#: MIN_SHOWN); a label's other real changes are one click away, so the forest plot starts
#: within the first 900 px.
FIRST_SCREEN_CHANGES = 8
MIN_SHOWN = 3
VERDICT_COLORS = {"worse": "#c0392b", "better": "#1e8449", "changed": "#7d3c98"}
NEUTRAL = "#95a5a6"
_COMMENT = re.compile(r"<!--.*?-->", re.S)


def _colors(labels: list[str]) -> dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    return {lab: palette[i % len(palette)] for i, lab in enumerate(labels)}


def svg(fig: Figure, salt: str) -> str:
    """The figure as inline <svg>, through the report's own writer (text as text, escaped)."""
    return _COMMENT.sub("", plots.to_svg(fig, salt))


def _short(label: str, width: int = 24) -> str:
    """Capture text for a matplotlib label: shortened, literal (never mathtext)."""
    label = str(label)
    return plots.literal(label if len(label) <= width else label[: width - 1] + "…")


# --------------------------------------------------------------------------- plots


def ecdf_figure(cmp: Comparison, items: list[tuple[str, str]], title: str) -> str | None:
    """Small multiples: one ECDF panel per (kind, name), one step line per label (with more
    than MAX_ECDF_LABELS labels: each label's median and min–max, labels in order)."""
    items = [it for it in items if not _constant(cmp, *it)]
    if not items:
        return None
    colors = _colors(cmp.labels)
    cols = PANEL_COLS
    rows = math.ceil(len(items) / cols)
    height = 2.2 * rows + 1.0
    fig = Figure(figsize=(3.2 * cols, height))
    # fixed margins (in inches, as fractions): tight_layout on dozens of panels costs seconds
    fig.subplots_adjust(left=0.06, right=0.98, bottom=1.0 / height, top=1 - 0.65 / height,
                        hspace=0.8, wspace=0.35)
    axes = fig.subplots(rows, cols, squeeze=False)
    many = len(cmp.labels) > MAX_ECDF_LABELS
    for ax, (kind, name) in zip(axes.flat, items):
        unit = "ms" if kind == "phase" else _unit(cmp, name)
        if many:
            _ranges(ax, cmp, kind, name, unit)
            continue
        for lab in cmp.labels:
            v = _values(cmp, lab, kind, name)
            if v is None:
                continue
            x = np.sort(v)
            y = np.arange(1, len(x) + 1) / len(x)
            if len(x) > ECDF_POINTS:  # many runs: draw the ECDF through evenly spaced ranks
                keep = np.unique(np.linspace(0, len(x) - 1, ECDF_POINTS).astype(int))
                x, y = x[keep], y[keep]
            ax.step(np.r_[x[0], x], np.r_[0, y], where="post", color=colors[lab],
                    label=_short(lab, 40), linewidth=1.4)
            if len(v) <= 60:
                ax.plot(x, y, "o", color=colors[lab], markersize=2.5)
        ax.set_title(_short(PHASE_LABELS.get(name, name) if kind == "phase" else name, 40), fontsize=9)
        ax.set_xlabel(unit, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_yticks([0, 0.5, 1])
        ax.xaxis.set_major_locator(MaxNLocator(4))  # few ticks: tick layout is most of the cost
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_formatter().set_useOffset(False)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(items):]:
        ax.set_visible(False)
    legend = {}
    for ax in axes.flat[: len(items)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    names, handles = list(legend), list(legend.values())
    if names:
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 4), fontsize=8,
                   frameon=False)
    fig.suptitle(title, fontsize=11)
    return svg(fig, "ecdf-" + title.split(":")[0])


def _constant(cmp: Comparison, kind: str, name: str) -> bool:
    """True when every measured run of every label has the same value (nothing to draw)."""
    seen = set()
    for lab in cmp.labels:
        v = _values(cmp, lab, kind, name)
        if v is not None:
            seen.update(np.unique(v).tolist())
        if len(seen) > 1:
            return False
    return True


def _ranges(ax, cmp: Comparison, kind: str, name: str, unit: str) -> None:
    """One panel for many labels: a dot at each label's median, a line from min to max."""
    idx, med, lo, hi = [], [], [], []
    for i, lab in enumerate(cmp.labels):
        v = _values(cmp, lab, kind, name)
        if v is not None:
            idx.append(i)
            med.append(float(np.median(v)))
            lo.append(float(v.min()))
            hi.append(float(v.max()))
    ax.vlines(idx, lo, hi, color="#555555", linewidth=0.8)
    ax.scatter(idx, med, s=8, color="#1f77b4", zorder=3)
    ax.set_title(_short(PHASE_LABELS.get(name, name) if kind == "phase" else name, 40), fontsize=9)
    ax.set_xlabel("label (in order, baseline = 0)", fontsize=8)
    ax.set_ylabel(unit, fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def phases_figure(cmp: Comparison) -> str | None:
    """Median duration of each phase, stacked in cycle order, one bar per label (the report's
    stacked-phase plot; a phase not measured in a label is left out, not drawn as 0)."""
    s = cmp.summary[(cmp.summary["kind"] == "phase") & (cmp.summary["n"] > 0)]
    if s.empty:
        return None
    order = list(dict.fromkeys(s["name"]))
    rows = []
    for lab in cmp.labels:
        sub = s[s["label"] == lab].set_index("name")["median"]
        rows.append((f"{lab} (median)", {p: float(sub[p]) if p in sub.index else None for p in order}))
    return plots.stacked(rows, order, PHASE_LABELS)


def pages_figure(cmp: Comparison) -> str | None:
    """Median page figures per label, grouped: what the image is made of."""
    s = cmp.summary[(cmp.summary["kind"] == "metric") & cmp.summary["name"].isin(PAGE_METRICS)
                    & (cmp.summary["n"] > 0)]
    if s.empty:
        return None
    names = [n for n in PAGE_METRICS if n in set(s["name"])]
    colors = _colors(cmp.labels)
    fig = Figure(figsize=(10, 0.6 + 0.45 * len(names) * max(1, len(cmp.labels)) / 2),
                 layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(cmp.labels)
    for i, lab in enumerate(cmp.labels):
        sub = s[s["label"] == lab].set_index("name")
        ys, widths, err_ys, err_x, lo, hi = [], [], [], [], [], []
        for j, n in enumerate(names):
            if n not in sub.index:
                continue  # not measured in this label: no bar (never a zero-length one)
            r = sub.loc[n]
            ys.append(j + i * height)
            widths.append(r["median"])
            if not (math.isnan(r["ci_low"]) or math.isnan(r["ci_high"])):
                # an interval only where there is one: too few runs draw no error bar, not
                # a zero-width one that would look exact
                err_ys.append(ys[-1])
                err_x.append(r["median"])
                lo.append(r["median"] - r["ci_low"])
                hi.append(r["ci_high"] - r["median"])
        ax.barh(ys, widths, height=height, color=colors[lab], label=_short(lab, 30))
        if err_ys:
            ax.errorbar(err_x, err_ys, xerr=[lo, hi], fmt="none", ecolor="black",
                        elinewidth=0.8, capsize=2)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(names))],
                  [_short(f"{registry.get(n).label} ({n})", 60) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"pages (median, {cmp.level * 100:g} % CI of the median where there are enough runs)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return svg(fig, "pages")


def changes_figure(cmp: Comparison, frame, keys: list[str], label: str, title: str) -> str | None:
    """Top changes (label - baseline, ms) with their intervals, coloured by verdict."""
    d = frame[(frame["label"] == label) & frame["delta"].notna()].head(ct.TOP) if not frame.empty else frame
    if d.empty:
        return None
    names = [_short(" ".join(str(r[k]) for k in keys), 40) for r in d.to_dict("records")]
    delta = d["delta"].to_numpy(dtype=float)
    lo = d["ci_low"].to_numpy(dtype=float)
    hi = d["ci_high"].to_numpy(dtype=float)
    err = np.array([np.where(np.isnan(lo), 0, delta - lo), np.where(np.isnan(hi), 0, hi - delta)])
    colors = [VERDICT_COLORS.get(_vclass(v), NEUTRAL) for v in d["verdict"]]
    fig = Figure(figsize=(9, 0.8 + 0.32 * len(d)), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(d)), delta, color=colors, xerr=np.clip(err, 0, None),
            error_kw={"elinewidth": 0.8, "capsize": 2})
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(d)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(_short(f"change of the median, ms ({label} - {cmp.baseline}); red worse, green better", 120))
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return svg(fig, f"changes-{keys[0]}-{label}")


def _values(cmp: Comparison, label: str, kind: str, name: str):
    g = cmp.groups[label]
    table = g.values if kind == "metric" else g.phases
    if name not in table.columns:
        return None
    v = table[name].dropna().to_numpy(dtype=float)
    return v if len(v) else None


def _unit(cmp: Comparison, name: str) -> str:
    for g in cmp.groups.values():
        if name in g.units:
            return g.units[name]
    return registry.get(name).unit


# --------------------------------------------------------------------------- page


def _area_rows(cmp: Comparison, label: str) -> list[dict]:
    """The full table of one label vs the baseline, grouped by area (phases their own)."""
    return [{"area": area, "title": area_title(area), "rows": _diff_rows(cmp, d)}
            for area, d in by_area(cmp.diffs[cmp.diffs["label"] == label])]


def _not_comparable(cmp: Comparison, label: str) -> list[dict]:
    """Not-comparable figures of one label, grouped by reason: a reason said once."""
    nc = cmp.not_comparable[cmp.not_comparable["label"] == label]
    groups: dict[str, list[dict]] = {}
    memory: dict[tuple, list[str]] = {}  # the composition's figures: one entry per reason
    for r in nc.to_dict("records"):
        if area_of(r["kind"], r["name"]) == "memory":
            where = r["measured_in"] if isinstance(r.get("measured_in"), str) else None
            memory.setdefault((r["reason"], where), []).append(r["name"])
            continue
        groups.setdefault(r["reason"], []).append(
            {"title": r["title"], "name": r["name"], "kind": r["kind"],
             "measured": ct.measured_note(r).strip(" ()")})
    for (reason, where), names in memory.items():
        groups.setdefault(reason, []).append(
            {"title": f"Memory composition, {len(names)} figure{'' if len(names) == 1 else 's'}",
             "name": ct.short_names(names), "kind": "group",
             "measured": f"measured in {where}" if where else ""})
    return [{"reason": reason, "figures": figs} for reason, figs in groups.items()]


def _summary(cmp: Comparison) -> dict[str, list[dict]]:
    """Label -> its real changes, each a sentence with its verdict's class."""
    out: dict[str, list[dict]] = {lab: [] for lab in cmp.labels[1:]}
    for r in ct.summary_records(cmp):
        parts = ct.change_parts(cmp, r)
        parts["medians"] = parts["medians"].replace(" -> ", " → ")
        out[r["label"]].append({**parts, "sentence": r["sentence"], "vclass": _vclass(r["verdict"]),
                                "name": r["name"], "kind": r["kind"]})
    return out


def _settings(cmp: Comparison) -> dict[str, list[dict]]:
    """Label -> its settings that differ, each in parts."""
    out: dict[str, list[dict]] = {lab: [] for lab in cmp.labels[1:]}
    for r in ct.settings_records(cmp):
        parts = ct.setting_parts(r)
        parts["medians"] = parts["medians"].replace(" -> ", " → ")
        out[r["label"]].append({**parts, "sentence": r["sentence"], "name": r["name"],
                                "kind": r["kind"]})
    return out


def _nobreak(text: str) -> str:
    """A table cell's figures: a number stays with its unit and sign, but the line may break
    after an interval's dash or dots and before a parenthesis (the table fits the page)."""
    t = text.replace(" ", NBSP)
    return (t.replace(f"{NBSP}–{NBSP}", f"{NBSP}– ").replace(f"{NBSP}..{NBSP}", f"{NBSP}.. ")
            .replace(f"{NBSP}(", " ("))


def _diff_rows(cmp: Comparison, diffs) -> list[dict]:
    summ = ct.summary_lookup(cmp)
    out = []
    for r in diffs.to_dict("records"):
        label = r["label"]
        u = r["unit"]
        out.append({
            "kind": r["kind"], "name": r["name"], "title": r["title"],
            "n": f"{r['n_base']} / {r['n']}",
            "base": _median(summ.get((r["kind"], r["name"], cmp.baseline)), u),
            "cand": _median(summ.get((r["kind"], r["name"], label)), u),
            "change": _nobreak(f"{ct.signed(r['delta'], u)} ({ct.pct(r['delta_pct'])})"),
            "ci": _nobreak(ct.interval(r["ci_low"], r["ci_high"], u)),
            "ci_pct": ("" if math.isnan(r["ci_low_pct"]) else
                       _nobreak(f"{ct.pct(r['ci_low_pct'])} .. {ct.pct(r['ci_high_pct'])}")),
            "p": ct.p_value(r["p"]), "test": r["test"],
            "verdict": r["verdict"], "vclass": _vclass(r["verdict"]), "note": r["note"],
            "quiet": not is_real_change(r), "setting": is_setting(r["kind"], r["name"]),
        })
    return out


def _median(stats: dict | None, unit: str) -> dict:
    """The median and, on its own line, its CI (or why there is none)."""
    if not stats or not stats.get("n"):
        return {"median": "not measured", "ci": ""}
    if math.isnan(stats["ci_low"]):
        return {"median": _nobreak(number(stats["median"], unit)),
                "ci": f"CI: too few runs (n={stats['n']})"}
    return {"median": _nobreak(number(stats["median"], unit)),
            "ci": _nobreak(f"{number(stats['ci_low'], unit)} – {number(stats['ci_high'], unit)}")}


def _vclass(verdict: str) -> str:
    return re.sub(r"[^a-z]", "", verdict.split(" ")[0]) if verdict else ""


def _change_rows(frame, label: str, keys: list[str]) -> list[dict]:
    if frame.empty:
        return []
    d = frame[frame["label"] == label]
    d = d[d["delta"].notna() | d["verdict"].str.startswith("only in")].head(ct.TOP)
    return [{"name": " ".join(str(r[k]) for k in keys), "runs": f"{r['runs_base']} / {r['runs']}",
             "base": number(r["median_base"], "ms"), "cand": number(r["median"], "ms"),
             "change": ct.signed(r["delta"], "ms"), "ci": ct.interval(r["ci_low"], r["ci_high"], "ms"),
             "verdict": r["verdict"], "vclass": _vclass(r["verdict"])}
            for r in d.to_dict("records")]


def build_context(cmp: Comparison, thresholds: list[ThresholdResult] | None = None) -> dict:
    metric_items = [("metric", n) for n in dict.fromkeys(cmp.diffs.loc[cmp.diffs["kind"] == "metric", "name"])]
    phase_items = [("phase", n) for n in dict.fromkeys(cmp.diffs.loc[cmp.diffs["kind"] == "phase", "name"])]
    by_area: dict[str, list] = {}
    for it in metric_items:
        by_area.setdefault(registry.get(it[1]).area, []).append(it)
    distributions = [f for f in (ecdf_figure(cmp, items, f"{area}: distribution per label (ECDF)")
                                 for area, items in by_area.items()) if f]
    phase_ecdf = ecdf_figure(cmp, phase_items, "phase durations: distribution per label (ECDF)")
    if phase_ecdf:
        distributions.append(phase_ecdf)
    comparisons = []
    summary = _summary(cmp)
    settings = _settings(cmp)
    shown = max(MIN_SHOWN, FIRST_SCREEN_CHANGES // max(1, len(cmp.labels) - 1))
    for i, lab in enumerate(cmp.labels[1:]):
        draw = i < MAX_CHANGE_FIGURES
        comparisons.append({
            "label": lab,
            "summary": summary[lab],
            "shown": summary[lab][:shown],
            "more": summary[lab][shown:],
            "settings": settings[lab],
            "compared": int((cmp.diffs["label"] == lab).sum()),
            "areas": _area_rows(cmp, lab),
            "not_comparable": _not_comparable(cmp, lab),
            "devices": _change_rows(cmp.devices, lab, ["device"]),
            "tasks": _change_rows(cmp.tasks, lab, ["stage", "comm"]),
            "devices_svg": changes_figure(cmp, cmp.devices, ["device"], lab,
                                          "devices: PM callback time per run, changed most")
            if draw else None,
            "tasks_svg": changes_figure(cmp, cmp.tasks, ["stage", "comm"], lab,
                                        "tasks: slowest freeze latency per name, changed most")
            if draw else None,
            "figures_left_out": not draw,
        })
    return {
        "version": __version__,
        "baseline": cmp.baseline,
        "labels": cmp.labels,
        "groups": [{"label": lab, "line": ct.group_line(cmp, lab),
                    "failures": ct.failure_line(cmp, lab),
                    "failed": (cmp.failure_rates.get(lab) or {}).get("failed", 0),
                    "kernel": cmp.groups[lab].meta.get("kernel_release", ""),
                    "differs": cmp.groups[lab].meta_differs} for lab in cmp.labels],
        "method": ct.method_note(cmp),
        "setup_notes": cmp.setup_notes,
        "settings_note": ct.SETTINGS_NOTE,
        "label_notes": cmp.label_notes,
        "userspace": cmp.userspace,
        "level": f"{cmp.level * 100:g}",
        "max_change_figures": MAX_CHANGE_FIGURES,
        "comparisons": comparisons,
        "thresholds": [{"expr": t.threshold.expr, "label": t.label, "status": t.status,
                        "detail": t.detail} for t in thresholds or []],
        "forest_svgs": forest_figures(cmp),
        "phases_svg": phases_figure(cmp),
        "pages_svg": pages_figure(cmp),
        "distributions": distributions,
    }


def render_html(cmp: Comparison, thresholds: list[ThresholdResult] | None = None) -> str:
    """The page, rendered with the report's own Jinja2 environment, macros and CSS."""
    from snapprof.paths import reports_dir
    from snapprof.report import html as report_html

    css = (reports_dir() / "report.css").read_text(encoding="utf-8")
    template = report_html.environment().get_template(TEMPLATE)
    return template.render(css=css, **build_context(cmp, thresholds))
