"""A Trend (snapprof.analysis.trend) as text, JSON and one self-contained HTML page.

Per headline figure a chart of each kernel's median with its 95 % interval against the
kernel version (a kernel without the figure is a gap labelled "not measured", never a
zero), the real steps between consecutive versions marked; then a table of the real steps
and links to each kernel's own report. Reporters take the Trend and names, never paths.
"""

from __future__ import annotations

import html
import json
import math

from matplotlib.figure import Figure

from snapprof import __version__
from snapprof import metrics as registry
from snapprof.analysis.trend import Trend, is_real
from snapprof.report import plots
from snapprof.report.compare_text import interval, p_value, pct, signed
from snapprof.report.fmt import number
from snapprof.report.text import table
from snapprof.termsafe import visible_text

VERDICT_COLORS = {"worse": "#c0392b", "better": "#1e8449", "changed": "#7d3c98"}


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _title(name: str) -> str:
    return registry.get(name).label if name in registry.REGISTRY else name


def _short(label: str) -> str:
    """"7.3.4+deb13-amd64" -> "7.3.4" for an axis."""
    return label.split("+")[0].split("-")[0] if label[:1].isdigit() else label


def steps_rows(trend: Trend, only_real: bool = True) -> list[list[str]]:
    rows = []
    for r in trend.steps.to_dict("records"):
        if only_real and not is_real(r["verdict"]):
            continue
        unit = r["unit"] or ""
        rows.append([_title(r["name"]), f"{_short(r['before'])} → {_short(r['after'])}",
                     number(r["median_before"], unit), number(r["median"], unit),
                     f"{signed(r['delta'], unit)} ({pct(r['delta_pct'])})",
                     interval(r["ci_low"], r["ci_high"], unit), p_value(r["p"]), r["verdict"]])
    return rows


STEP_HEADER = ["figure", "step", "before", "after", "change", "95 % CI of change", "p", "verdict"]


def render_text(trend: Trend, reports: dict[str, str] | None = None) -> str:
    lines = [f"snapprof trend: {len(trend.labels)} kernels, {trend.labels[0]} … {trend.labels[-1]}",
             "  " + trend.userspace.get("sentence", ""), ""]
    header = ["figure"] + [_short(x) for x in trend.labels]
    rows = []
    for name in trend.names:
        pts = trend.points[trend.points["name"] == name].set_index("label")
        row = [_title(name)]
        for lab in trend.labels:
            p = pts.loc[lab]
            row.append("–" if not p["n"] else number(p["median"], p["unit"]))
        rows.append(row)
    lines += ["Medians per kernel (– = not measured on that kernel; reasons in trend.json and the HTML):",
              table(header, rows), ""]
    real = steps_rows(trend)
    lines.append(f"Real steps between consecutive kernels ({len(real)}; a verdict needs the "
                 f"{trend.level * 100:g} % interval of the shift to exclude 0 and p <= 0.05):")
    lines.append(table(STEP_HEADER, real) if real else "  none: no step between consecutive kernels is "
                 "larger than the noise of these runs")
    if reports:
        lines += ["", "Per-kernel reports:"] + [f"  {lab}: {path}" for lab, path in reports.items()]
    return visible_text("\n".join(lines) + "\n")  # capture text: controls shown, not obeyed


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


def to_dict(trend: Trend, reports: dict[str, str] | None = None) -> dict:
    def recs(df):
        return [{k: _clean(v) for k, v in r.items()} for r in df.to_dict("records")]

    return {"labels": trend.labels, "figures": trend.names, "level": trend.level,
            "userspace": trend.userspace, "points": recs(trend.points), "steps": recs(trend.steps),
            "real_steps": recs(trend.real_steps()), "reports": reports or {}}


def render_json(trend: Trend, reports: dict[str, str] | None = None) -> str:
    return json.dumps(to_dict(trend, reports), indent=1, allow_nan=False) + "\n"


def figure_svg(trend: Trend, name: str) -> str:
    """Median and 95 % interval per kernel; a gap with 'not measured' where there is none;
    real steps drawn as coloured segments between the two kernels."""
    pts = trend.points[trend.points["name"] == name].set_index("label")
    unit = next((u for u in pts["unit"] if u), "")
    fig = Figure(figsize=(7.2, 2.6))
    ax = fig.add_subplot()
    xs = list(range(len(trend.labels)))
    have = [(x, pts.loc[lab]) for x, lab in zip(xs, trend.labels) if pts.loc[lab]["n"]]
    for x, p in have:
        lo, hi = p["ci_low"], p["ci_high"]
        if not _missing(lo) and not _missing(hi):
            ax.errorbar([x], [p["median"]], yerr=[[p["median"] - lo], [hi - p["median"]]], fmt="o",
                        color="#1f77b4", capsize=3, lw=1)
        else:  # no interval with so few runs: the median and the range of the runs
            ax.plot([x], [p["median"]], "o", color="#1f77b4", mfc="white")
            ax.vlines([x], p["min"], p["max"], color="#1f77b4", lw=0.8, linestyles="dotted")
    if have:
        ax.plot([x for x, _ in have], [p["median"] for _, p in have], color="#1f77b4", lw=0.6, alpha=0.5)
    steps = trend.steps[(trend.steps["name"] == name) & trend.steps["verdict"].map(is_real)]
    for s in steps.to_dict("records"):
        a, b = trend.labels.index(s["before"]), trend.labels.index(s["after"])
        color = VERDICT_COLORS[s["verdict"].split(" ")[0]]
        ax.plot([a, b], [s["median_before"], s["median"]], color=color, lw=2.5)
        ax.annotate(f"{pct(s['delta_pct'])} {s['verdict'].split(' ')[0]}",
                    ((a + b) / 2, (s["median_before"] + s["median"]) / 2), fontsize=7, color=color,
                    ha="center", va="bottom")
    ymin, ymax = ax.get_ylim() if have else (0, 1)
    for x, lab in zip(xs, trend.labels):
        if not pts.loc[lab]["n"]:
            ax.text(x, (ymin + ymax) / 2, "not\nmeasured", ha="center", va="center", fontsize=7,
                    color="#7f7f7f", rotation=90)
    ax.set_xticks(xs, [plots.literal(_short(x)) for x in trend.labels], fontsize=8)
    ax.set_ylabel(plots.literal(unit), fontsize=8)
    ax.set_title(plots.literal(_title(name)), fontsize=9, loc="left")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.88, bottom=0.14)
    return plots.to_svg(fig, f"trend-{name}")


def _reasons(trend: Trend, name: str) -> list[str]:
    pts = trend.points[(trend.points["name"] == name) & (trend.points["n"] == 0)]
    return [f"{r['label']}: {r['reason']}" for r in pts.to_dict("records")]


def render_html(trend: Trend, reports: dict[str, str] | None = None) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">",
        f"<title>snapprof trend: {e(trend.labels[0])} … {e(trend.labels[-1])}</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;border-bottom:1px solid #ddd;"
        "text-align:right}td:first-child,th:first-child,td:nth-child(2){text-align:left}"
        ".worse{color:#c0392b;font-weight:600}.better{color:#1e8449;font-weight:600}"
        ".changed{color:#7d3c98;font-weight:600}.note{color:#555}.warning{color:#a04000;font-weight:600}"
        ".fig{margin:0.5em 0 1.5em}.why{color:#777;font-size:12px}</style></head><body>",
        f"<h1>Hibernation across kernels: {e(_short(trend.labels[0]))} → {e(_short(trend.labels[-1]))}</h1>",
        f"<p class='{'warning' if trend.userspace.get('status') == 'differs' else 'note'}'>"
        f"{e(trend.userspace.get('sentence', ''))}</p>",
        f"<p class='note'>Each point is a kernel's median over its complete runs, with the exact "
        f"{trend.level * 100:g} % interval of the median (dotted: the runs' range, where too few runs give no "
        "interval). A coloured segment is a real step: the interval of the shift between the two "
        "kernels excludes 0 and p &le; 0.05. snapprof " + e(__version__) + "</p>",
    ]
    real = steps_rows(trend)
    parts.append(f"<h2>Real steps ({len(real)})</h2>")
    if real:
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in STEP_HEADER) + "</tr>")
        for row in real:
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row[:-1]) +
                         f"<td class='{e(row[-1].split(' ')[0])}'>{e(row[-1])}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>None: no step between consecutive kernels is larger than the noise of these runs.</p>")
    parts.append("<h2>Figures against kernel version</h2>")
    for name in trend.names:
        parts.append(f"<div class='fig'>{figure_svg(trend, name)}")
        for why in _reasons(trend, name):
            parts.append(f"<div class='why'>not measured on {e(why)}</div>")
        parts.append("</div>")
    if reports:
        parts.append("<h2>Per-kernel captures and reports</h2><ul>")
        for lab, path in reports.items():
            parts.append(f"<li><a href='{e(path, quote=True)}'>{e(lab)}</a></li>")
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
