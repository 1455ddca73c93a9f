"""The forest plot of ``snapprof compare``: the % change of every comparable figure with its
interval, one row per figure (grouped by area), one panel per label vs the baseline.

Input is a ``Comparison``; the rows are ``analysis.compare_summary.forest_rows`` (nothing is
computed here). A figure with a real verdict is drawn in its verdict's colour with a filled
marker; the others in grey, hollow. A change without an interval (too few runs) is a point
alone; a figure whose baseline median is 0 has no % change and says so in its row. Every
row's artist carries an SVG id ``forest-<panel>-<row>-<sig|quiet>`` (tests and styles can
find it); the figure's title rows and ticks are text.
"""

from __future__ import annotations

import math
import re

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from snapprof.analysis.compare import Comparison
from snapprof.analysis.compare_summary import area_title, by_area, forest_rows
from snapprof.report import plots

#: Panels (labels vs the baseline) per figure; more labels get more figures.
PANELS = 3
ROW_IN = 0.2            # inches per row
LEFT_IN, PANEL_IN = 3.4, 3.6
TOP_IN, BOTTOM_IN = 0.55, 0.55
#: Below this |%|, the axis is linear; beyond, logarithmic (a +348 % beside a -2 %).
LINEAR_PCT = 10.0
COLORS = {"worse": "#c0392b", "better": "#1e8449", "changed": "#7d3c98"}
QUIET = "#95a5a6"
_COMMENT = re.compile(r"<!--.*?-->", re.S)


def _short(text: str, width: int = 46) -> str:
    text = str(text)
    return plots.literal(text if len(text) <= width else text[: width - 1] + "…")


def layout(cmp: Comparison) -> list[tuple[str, str, str] | tuple[str, None, str]]:
    """The y rows, top to bottom: ("area", None, title) headers and ("metric"|"phase", name,
    title) figures, every figure compared in any label, grouped by area."""
    rows = []
    for area, d in by_area(cmp.diffs.drop_duplicates(["kind", "name"])):
        rows.append(("area", None, area_title(area)))
        rows += [(k, n, t) for k, n, t in zip(d["kind"], d["name"], d["title"])]
    return rows


def _pct(x: float) -> str:
    return f"{x:+.0f}%" if abs(x) >= 1 or x == 0 else f"{x:+.1g}%"


def forest_figures(cmp: Comparison) -> list[str]:
    """The forest plot as inline SVG, one figure per PANELS labels (none without a diff row)."""
    rows = layout(cmp)
    if not any(r[0] != "area" for r in rows):
        return []
    labels = cmp.labels[1:]
    out = []
    for start in range(0, len(labels), PANELS):
        out.append(_figure(cmp, rows, labels[start:start + PANELS], start))
    return out


def _figure(cmp: Comparison, rows, labels: list[str], first: int) -> str:
    n = len(rows)
    height = n * ROW_IN + TOP_IN + BOTTOM_IN
    width = LEFT_IN + PANEL_IN * len(labels)
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=LEFT_IN / width, right=1 - 0.15 / width, bottom=BOTTOM_IN / height,
                        top=1 - TOP_IN / height, wspace=0.12)
    axes = fig.subplots(1, len(labels), squeeze=False, sharey=True)[0]
    ypos = {(k, nm): i for i, (k, nm, _) in enumerate(rows) if k != "area"}
    lv = f"{cmp.level * 100:g}"
    for p, (ax, lab) in enumerate(zip(axes, labels), start=first):
        d = forest_rows(cmp, lab)
        finite = [v for col in ("delta_pct", "ci_low_pct", "ci_high_pct") for v in d[col]
                  if not math.isnan(v)]
        lim = max([abs(v) for v in finite] + [LINEAR_PCT]) * 1.15
        for j, r in enumerate(d.to_dict("records")):
            y = ypos[(r["kind"], r["name"])]
            sig = bool(r["significant"])
            gid = f"forest-{p}-{j}-{'sig' if sig else 'quiet'}"
            color = COLORS.get(r["verdict"].split(" ")[0], QUIET) if sig else QUIET
            if math.isnan(r["delta_pct"]):
                ax.text(0, y, "  no % change (baseline median 0)", fontsize=6.5, color=QUIET,
                        va="center", ha="left", gid=gid)
                continue
            if not (math.isnan(r["ci_low_pct"]) or math.isnan(r["ci_high_pct"])):
                ax.hlines(y, r["ci_low_pct"], r["ci_high_pct"], color=color,
                          linewidth=2.0 if sig else 1.0)
            ax.plot([r["delta_pct"]], [y], "o", color=color, markersize=5 if sig else 3.5,
                    markerfacecolor=color if sig else "white", gid=gid, zorder=3)
        ax.axvline(0, color="#333333", linewidth=0.8, zorder=1)
        for i, (k, _, _) in enumerate(rows):
            if k == "area" and i:
                ax.axhline(i - 0.5, color="#dddddd", linewidth=0.6)
        ax.set_xscale("symlog", linthresh=LINEAR_PCT)
        ax.set_xlim(-lim, lim)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: _pct(x)))
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(_short(f"{lab} vs {cmp.baseline}", 60), fontsize=9)
        ax.set_xlabel(f"change, % of the baseline median ({lv} % interval)", fontsize=7.5)
    ax0 = axes[0]
    ax0.set_ylim(n - 0.5, -0.5)
    ax0.set_yticks(range(n))
    ax0.set_yticklabels([_short(t) for _, _, t in rows], fontsize=7.5)
    for tick, (k, _, _) in zip(ax0.get_yticklabels(), rows):
        if k == "area":
            tick.set_fontweight("bold")
    for ax in axes:
        ax.tick_params(axis="y", length=0)
    return _svg(fig, f"forest-{first}")


def _svg(fig: Figure, salt: str) -> str:
    """As compare_html.svg: the report's own writer, without XML comments."""
    return _COMMENT.sub("", plots.to_svg(fig, salt))
