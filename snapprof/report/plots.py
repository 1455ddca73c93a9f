"""Figures for the HTML report, drawn with matplotlib's object API and returned as inline SVG.

No pyplot and no global state: each figure is a ``matplotlib.figure.Figure`` rendered by
the SVG backend inside an ``rc_context`` (text kept as text, fixed hash salt so the output
is reproducible). Input is the report model (plain data), never frames or paths.
Text from the capture (task and device names) is drawn literally: ``$`` is escaped so
matplotlib never parses it as mathtext, and the SVG writer escapes markup.
"""

from __future__ import annotations

import io
import math
import re
import textwrap

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from snapprof.analysis.phases import CLOCK_JUMP, LESS_SLEEP
from snapprof.termsafe import visible

GROUP_COLORS = {
    "sync": "#8c8c8c", "freeze_user": "#1f77b4", "prealloc": "#ff7f0e", "freeze_kernel": "#17becf",
    "dpm_prepare": "#9467bd", "dpm_suspend": "#9467bd", "dpm_suspend_late": "#b19cd9",
    "dpm_suspend_noirq": "#c5b0d5", "cpu_off": "#7f7f7f", "syscore_suspend": "#bcbd22",
    "copy": "#d62728", "syscore_resume": "#bcbd22", "cpu_on": "#7f7f7f",
    "dpm_resume_noirq": "#c5b0d5", "dpm_resume_early": "#b19cd9", "dpm_resume": "#2ca02c",
    "dpm_complete": "#98df8a", "thaw": "#e377c2", "image_write": "#8c564b",
    "image_read": "#c49c94", "restore": "#dbdb8d",
    # systemd's part (the journal): one colour, its spans above the kernel's phases
    **{f"systemd:{n}": "#4c72b0" for n in ("logind", "sleep_pre", "slice_freeze", "sleep", "slice_thaw",
                                            "sleep_post")},
}
COPY_NOTE = ("copy length from the kernel's sleep-time report: the clocks stand still during the copy\n"
             "and CLOCK_BOOTTIME jumps by that much when they restart (hatched)")
UNTIMED = "#7f7f7f"


def literal(text) -> str:
    """Capture text for a matplotlib label: literal, never mathtext, its control characters
    shown as escapes (no font has a glyph for them: matplotlib would warn, quoting them)."""
    return visible(text).replace("$", r"\$")


def to_svg(fig: Figure, salt: str) -> str:
    """The figure as an inline ``<svg>`` element: text kept as text, ids hashed with ``salt``
    (reproducible output), no date or creator, no RDF metadata."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        FigureCanvasSVG(fig)
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # the RDF metadata block only names vocabularies; a report page does not need it
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)


def _margins(fig: Figure, labels, right: float = 0.2, top: float = 0.3,
             bottom: float = 0.55) -> None:
    """Fixed margins in inches (left from the longest y label): one draw per figure instead
    of the two a constrained layout needs."""
    width, height = fig.get_size_inches()
    longest = max((len(str(x)) for x in labels), default=4)
    left = min(0.5 * width, 0.3 + 0.085 * longest)
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height,
                        bottom=bottom / height)


def _scale(max_ms: float) -> tuple[float, str]:
    return (1000.0, "s") if max_ms >= 2000 else (1.0, "ms")


def _fmt_ms(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "?"
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.3g} ms"


def timeline(run: dict) -> str:
    """One run's phases as a Gantt chart on the BOOTTIME clock (ms from the cycle start).

    Phases without an end are drawn hatched up to the last time seen in the run. The atomic
    copy is a marker at its place (end of syscore_suspend) labelled with its length, which
    comes from the sleep-time report, not from this time axis. A phase that holds the
    clocks' unmeasured jump after the copy is only a mark at its end.

    A real hibernation (``run["after_copy"]``, see model._after_copy) gets rows for the time
    away after the copy, inside the window the restored kernel's clock jumped over: the
    image write and read with their lengths from the two kernels' logs, placed at the
    window's two ends (where they lie in it is not measured), and between them, hatched,
    the rest that no clock split up (power-off, powered off, boot, restore).
    """
    phases = [p for p in run["phases"] if p["start_ms"] is not None or p["phase"] == "copy"]
    after = run.get("after_copy")
    notes = []
    if after:
        at = next((i + 1 for i, p in enumerate(phases) if p["phase"] == "copy"), len(phases))
        rows = _after_copy_rows(after)
        for r in rows:
            r["start_ms"], r["end_ms"] = r["span"] or (None, None)
        phases[at:at] = rows
        notes.append(_after_copy_note(after))
    known = [x for p in phases for x in (p["start_ms"], p["end_ms"]) if x is not None]
    horizon = max(known) if known else 1.0
    div, unit = _scale(horizon)
    height = 1.4 + 0.26 * max(len(phases), 1)
    fig = Figure(figsize=(11, height))
    ax = fig.add_subplot()
    ylabels = []
    for y, p in enumerate(phases):
        ylabels.append(p["label"])
        color = GROUP_COLORS.get(p["phase"], "#999999")
        start = p["start_ms"]
        if p["phase"] == "copy":
            if start is None:
                ax.text(0, y, "copy: position unknown (no syscore events); "
                        f"{_fmt_ms(p['duration_ms'])} ({p['method'] or 'not measured'})",
                        va="center", fontsize=8)
                continue
            gap = max(p["end_ms"] - start, 0) if p["end_ms"] is not None else 0.0
            if p["end_ms"] is not None:  # an unknown end draws no bar, only the mark
                ax.barh(y, gap / div, left=start / div, color="white", edgecolor=color,
                        hatch="////", height=0.6)
            ax.plot([start / div], [y], marker="D", color=color, markersize=6)
            length = (f"{_fmt_ms(p['duration_ms'])} ({p['method']})" if p["duration_ms"] is not None
                      else "length not measured")
            ax.annotate(f"copy {length}*", ((start + gap) / div, y), xytext=(8, 0),
                        textcoords="offset points", va="center", fontsize=7.5, color=color)
            continue
        if p.get("after_copy"):
            _draw_after_copy(ax, y, p, div)
            continue
        end = p["end_ms"]
        if end is not None and p["method"] and p["method"].endswith(CLOCK_JUMP):
            ax.plot([end / div], [y], marker="|", color=color, markersize=9)
            ax.annotate("length not measured (clock jump)", (end / div, y),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=7.5)
            continue
        if end is None:
            ax.barh(y, (horizon - start) / div, left=start / div, color="white", edgecolor="#d62728",
                    hatch="xx", height=0.6)
            ax.annotate("no end recorded", (start / div, y), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=7.5, color="#d62728")
            continue
        if p["method"].endswith(LESS_SLEEP) and p["duration_ms"] is not None:
            start = end - p["duration_ms"]  # its span holds the injected sleep time: draw the rest
        ax.barh(y, max(end - start, 0) / div, left=start / div, color=color, height=0.6)
        ax.plot([start / div], [y], marker="|", color=color, markersize=9)
        ax.annotate(f"{_fmt_ms(p['duration_ms'])} ({p['method']})", (end / div, y), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=7.5)
    for n in run.get("nested", []):
        y = next((i for i, p in enumerate(phases) if p["phase"] == "prealloc"), None)
        if y is not None and n["start_ms"] is not None:
            end = n["end_ms"] if n["end_ms"] is not None else horizon
            ax.barh(y, (end - n["start_ms"]) / div, left=n["start_ms"] / div, height=0.25,
                    color="#7f3b08")
            ax.annotate(literal(n["label"]), (n["start_ms"] / div, y - 0.3), fontsize=7, va="bottom",
                        color="#7f3b08")
    ax.set_yticks(range(len(phases)), [literal(x) for x in ylabels])
    ax.invert_yaxis()
    ax.set_xlim(0, horizon / div * 1.2 if horizon else 1)
    xlabel = f"{unit} since the cycle started (CLOCK_BOOTTIME)"
    if any(p["phase"] == "copy" for p in phases):
        xlabel += f"\n* {COPY_NOTE}"
    for note in notes:
        xlabel += f"\n{note}"
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(literal(f"Run {run['run_id']} ({run['status']})"), fontsize=10, loc="left")
    _margins(fig, ylabels, right=1.6, bottom=0.4 + 0.18 * (xlabel.count("\n") + 1))
    return to_svg(fig, f"timeline-{run['run_id']}")


def _after_copy_rows(after: dict) -> list[dict]:
    """Timeline rows for the time away after a real hibernation's copy (see timeline)."""
    steps = {s["phase"]: s for s in after["steps"]}
    start, end = after["start_ms"], after["end_ms"]
    write, read = (steps[k]["duration_ms"] for k in ("image_write", "image_read"))
    window = start is not None and end is not None
    rows = []
    if steps["image_write"]["duration_ms"] is not None:
        rows.append({"after_copy": "timed", "phase": "image_write", "label": "Image write †",
                     "span": (start, start + write) if window else None, **_timed(steps["image_write"])})
    untimed = [s["label"].lower() for s in after["steps"] if s["duration_ms"] is None]
    rows.append({"after_copy": "rest", "phase": "after_copy_rest",
                 "label": (", ".join(untimed) + " †").capitalize(),
                 # an untimed write or read is not a zero: it stays inside the hatched rest,
                 # whose label names it among the steps not measured
                 "span": (start + (write or 0), end - (read or 0)) if window else None,
                 "text": (f"{_fmt_ms(after['rest_ms'])} not measured exactly"
                          if after["rest_ms"] is not None else "not measured")})
    if steps["image_read"]["duration_ms"] is not None:
        rows.append({"after_copy": "timed", "phase": "image_read", "label": "Image read †",
                     "span": (end - read, end) if window else None, **_timed(steps["image_read"])})
    return rows


def _timed(step: dict) -> dict:
    return {"text": f"{_fmt_ms(step['duration_ms'])} ({step['method']})"}


def _after_copy_note(after: dict) -> str:
    off = after["offline"]
    gap = (f"powered off {_fmt_ms(off['duration_ms'])} on the lab host's clock (host overhead included)"
           if off else "how long it was powered off is not measured")
    if after["window_ms"] is None:
        text = ("† after the copy: image write and read lengths from the writing and the boot "
                "kernel's logs; the time away is not measured, so where they lie on this clock is "
                f"not known; {gap}.")
    else:
        text = (f"† after the copy the machine was away {_fmt_ms(after['window_ms'])} "
                f"({after['window_method']}). Image write and read: lengths from the writing and "
                "the boot kernel's logs, drawn at the two ends of that time (where they lie in it is "
                f"not measured). Hatched: the rest, not measured exactly; {gap}.")
    return textwrap.fill(text, 110, subsequent_indent="  ")


def _draw_after_copy(ax, y: int, p: dict, div: float) -> None:
    color = GROUP_COLORS.get(p["phase"], UNTIMED)
    if p["span"] is None:
        ax.text(0, y, f"{p['text']}: place on this clock not known", va="center", fontsize=7.5)
        return
    a, b = p["span"]
    if p["after_copy"] == "rest":
        ax.barh(y, max(b - a, 0) / div, left=a / div, color="white", edgecolor=UNTIMED,
                hatch="\\\\", height=0.6)
    else:
        ax.barh(y, max(b - a, 0) / div, left=a / div, color=color, height=0.6)
    ax.annotate(p["text"], (b / div, y), xytext=(4, 0), textcoords="offset points",
                va="center", fontsize=7.5)


def stacked(rows: list[tuple[str, dict]], order: list[str], labels: dict[str, str]) -> str:
    """Phase durations stacked per row (a run, or a summary such as the median)."""
    totals = [sum(v for v in d.values() if v is not None) for _, d in rows]
    div, unit = _scale(max(totals) if totals else 1.0)
    height = max(1.4 + 0.3 * len(rows), 0.6 + 0.16 * len(order))  # room for the legend
    fig = Figure(figsize=(9.5, height))
    ax = fig.add_subplot()
    for y, (_, durs) in enumerate(rows):
        left = 0.0
        for phase in order:
            v = durs.get(phase)
            if v is None:
                continue
            copy = phase == "copy"
            ax.barh(y, v / div, left=left, color="white" if copy else GROUP_COLORS.get(phase, "#999"),
                    edgecolor=GROUP_COLORS.get(phase, "#999") if copy else "none",
                    hatch="////" if copy else None, height=0.7)
            left += v / div
    ax.set_yticks(range(len(rows)), [literal(name) for name, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"{unit} (sum of measured phases; the copy, hatched, from the sleep-time report)")
    handles = [Patch(facecolor="white" if p == "copy" else GROUP_COLORS.get(p, "#999"),
                     edgecolor=GROUP_COLORS.get(p, "#999"), hatch="////" if p == "copy" else None,
                     label=labels.get(p, p)) for p in order]
    _margins(fig, [name for name, _ in rows], right=2.0, top=0.15)
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1 - 1.9 / 9.5, 1 - 0.1 / height),
               fontsize=7, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return to_svg(fig, "stacked")


def hbars(items: list[tuple[str, float, float | None]], xlabel: str, salt: str,
          color: str = "#1f77b4") -> str:
    """Horizontal bars (label, value, optional max drawn as a tick), largest first."""
    fig = Figure(figsize=(9.5, 1.0 + 0.3 * max(len(items), 1)))
    ax = fig.add_subplot()
    ys = range(len(items))
    ax.barh(list(ys), [v for _, v, _ in items], color=color, height=0.6)
    maxes = [(y, m) for y, (_, _, m) in zip(ys, items) if m is not None]
    if maxes:
        ax.plot([m for _, m in maxes], [y for y, _ in maxes], linestyle="none", marker="|",
                markersize=12, color="#222222", label="max")
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax.set_yticks(list(ys), [literal(label) for label, _, _ in items])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    _margins(fig, [label for label, _, _ in items], top=0.15)
    return to_svg(fig, salt)
