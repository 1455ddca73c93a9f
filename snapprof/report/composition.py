"""The report's "Memory: what is in the image" section, for the text and HTML reporters.

Input is the model's ``composition`` entry (snapprof.analysis.composition.composition: plain
data), never frames or paths. One chart (the composition before the cycle, stacked, beside
the kernel's saveable / preallocated / copied / zero / metadata pages), one table (kind,
before, after, change, share of RAM), the top processes, and the image_size sweep (a chart
of image pages and cycle time against the setting, with 2 settings or more). Capture text
(commands, command lines) is data: the text table shows its control characters as escapes,
the HTML template autoescapes it, plot labels go through ``plots.literal``.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from snapprof.report import plots
from snapprof.report.fmt import NOT_MEASURED, missing, number
from snapprof.report.text import table

TITLE = "Memory: what is in the image"
#: One colour per kind (COMPOSITION_KINDS order), unattributed grey and hatched.
KIND_COLORS = {
    "anon": "#1f77b4", "shmem": "#aec7e8", "file_active": "#2ca02c", "file_inactive": "#98df8a",
    "swapcache": "#bcbd22", "slab_reclaimable": "#ff7f0e", "slab_unreclaimable": "#ffbb78",
    "kernel_stack": "#9467bd", "page_tables": "#c5b0d5", "vmalloc": "#8c564b",
    "percpu": "#c49c94", "hugetlb": "#e377c2", "pcp_free": "#dbdb8d",
}
UNATTRIBUTED_COLOR = "#7f7f7f"
COPY_COLOR, ZERO_COLOR, META_COLOR, KERNEL_COLOR = "#d62728", "#d62728", "#3b3b3b", "#17becf"


def kb(value) -> str:
    return number(value, "kB")


def pages(value) -> str:
    return "–" if missing(value) else f"{value:,.0f}"


def signed_kb(value) -> str:
    if missing(value):
        return "–"
    text = number(value, "kB")
    return text if text.startswith("-") or value == 0 else "+" + text


def share(value) -> str:
    return "–" if missing(value) else f"{value:.1f} %"


def _kernel(summary: dict) -> dict:
    return {k["name"]: k for k in summary["kernel"]}


# --------------------------------------------------------------------------- chart


def chart(summary: dict) -> str | None:
    """One horizontal bar chart, pages (MiB when the page size is not known): the memory in
    use before the cycle stacked by kind with unattributed (hatched; a negative unattributed
    is not drawn, its bar says so), beside the kernel's saveable and preallocated pages,
    copied + zero pages skipped, and the image (copied + metadata and header). Medians over
    the complete runs, each part its own median (their sum need not equal the median of
    the whole)."""
    if not summary.get("present"):
        return None
    ps = summary["page_size"]["bytes"]
    unit = "pages" if ps else "MiB"
    conv = (lambda k: k * 1024 / ps) if ps else (lambda k: k / 1024)  # noqa: E731
    rows = {r["key"]: r for r in summary["table"]}
    kinds = [r for r in summary["table"] if r["partition"] and r["key"] not in
             ("unattributed", "free", "total") and r["before_kb"]]
    k = _kernel(summary) if ps else {}
    bars: list[tuple[str, list[tuple[str, float, dict]]]] = []
    segs = [(r["key"], conv(r["before_kb"]), {"color": KIND_COLORS.get(r["key"], "#999")})
            for r in kinds]
    un = rows["unattributed"]["before_kb"]
    if un is not None and un > 0:
        segs.append(("unattributed", conv(un), {"color": "white", "edgecolor": UNATTRIBUTED_COLOR,
                                                "hatch": "////"}))
    bars.append(("In use before the cycle", segs))

    def kernel_bar(label, parts):
        got = [(n, k[n]["pages"], style) for n, style in parts if n in k and k[n]["pages"] is not None]
        if got:
            bars.append((label, got))

    kernel_bar("Saveable (kernel)", [("saveable_pages", {"color": KERNEL_COLOR})])
    kernel_bar("Preallocated for the image", [("preallocated_pages", {"color": "#9edae5"})])
    kernel_bar("Copied + zero pages skipped", [
        ("copy_pages", {"color": COPY_COLOR}),
        ("zero_pages", {"color": "white", "edgecolor": ZERO_COLOR, "hatch": "xx"})])
    if "image_pages" in k and k["image_pages"]["pages"] is not None and "copy_pages" in k \
            and k["copy_pages"]["pages"] is not None:
        rest = k["image_pages"]["pages"] - k["copy_pages"]["pages"]
        bars.append(("Image (copied + metadata, header)",
                     [("copy_pages", k["copy_pages"]["pages"], {"color": COPY_COLOR}),
                      ("image_meta", rest, {"color": META_COLOR})]))
    else:  # the image's size without the copy's split (e.g. recorded without probes)
        kernel_bar("Image", [("image_pages", {"color": COPY_COLOR})])
    fig = Figure(figsize=(9.5, 1.2 + 0.55 * len(bars)))
    ax = fig.add_subplot()
    ends = []
    for y, (_, parts) in enumerate(bars):
        left = 0.0
        for _, width, style in parts:
            ax.barh(y, width, left=left, height=0.62, linewidth=0.8, **style)
            left += width
        ends.append(left)
    in_use = summary.get("in_use_kb")
    if in_use is not None:  # where the kinds and unattributed end when nothing overlaps
        ax.plot([conv(in_use)], [0], marker="|", markersize=20, markeredgewidth=2, color="black",
                linestyle="none")
    horizon = max(ends + ([conv(in_use)] if in_use is not None else [])) if ends else 1.0
    for y, end in enumerate(ends):
        ax.annotate(f"{end:,.0f}", (end, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7.5)
    free = rows["free"]["before_kb"]
    notes = []
    if free is not None:
        notes.append(f"free before the cycle {number(free, 'kB')}")
    if un is not None and un <= 0:
        notes.append(f"unattributed {number(un, 'kB')}"
                     + (" (negative: counters overlap)" if un < 0 else ""))
    labels = [b[0] for b in bars]
    ax.set_yticks(range(len(bars)), [plots.literal(b) for b in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, horizon * 1.15)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.tick_params(labelsize=7.5)
    xlabel = (f"{unit} (medians over {summary['n']} complete run{'' if summary['n'] == 1 else 's'})"
              + (f"\nnot drawn: {'; '.join(notes)}" if notes else ""))
    ax.set_xlabel(xlabel, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(facecolor=KIND_COLORS.get(r["key"], "#999"), label=r["label"]) for r in kinds]
    if un is not None and un > 0:
        handles.append(Patch(facecolor="white", edgecolor=UNATTRIBUTED_COLOR, hatch="////",
                             label="Unattributed (not spread over the kinds)"))
    if in_use is not None:
        handles.append(Line2D([], [], marker="|", markersize=9, markeredgewidth=2, color="black",
                              linestyle="none", label="MemTotal − MemFree"))
    if k:
        handles += [Patch(facecolor=KERNEL_COLOR, label="Saveable pages (the kernel's count)"),
                    Patch(facecolor=COPY_COLOR, label="Copied into the image"),
                    Patch(facecolor="white", edgecolor=ZERO_COLOR, hatch="xx",
                          label="Zero pages (not stored)"),
                    Patch(facecolor=META_COLOR, label="Image metadata and header")]
    width, height = fig.get_size_inches()
    plots._margins(fig, labels, right=3.0, top=0.15, bottom=0.75)
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1 - 2.9 / width, 1 - 0.1 / height),
               fontsize=6.5, frameon=False)
    return plots.to_svg(fig, "composition")


def sweep_chart(sweep: dict) -> str | None:
    """Image pages and cycle time against /sys/power/image_size (medians, min–max as a
    line), one panel each; None with fewer than 2 settings."""
    rows = sweep.get("rows") or []
    if sweep.get("reason") or len(rows) < 2:
        return None
    x = [r["setting_bytes"] / 2**20 for r in rows]
    fig = Figure(figsize=(9.5, 3.0))
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.2, top=0.88, wspace=0.3)
    for ax, (key, lo, hi, div, ylabel, color) in zip(fig.subplots(1, 2), [
            ("image_pages", "image_min", "image_max", 1.0, "image pages", COPY_COLOR),
            ("cycle_ms", "cycle_min", "cycle_max", 1000.0, "whole cycle, s", "#1f77b4")]):
        pts = [(xi, r) for xi, r in zip(x, rows) if r[key] is not None]
        if not pts:
            ax.text(0.5, 0.5, f"{ylabel}: not measured", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
            continue
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1][key] / div for p in pts], "o-", color=color, markersize=4)
        ax.vlines(xs, [p[1][lo] / div for p in pts], [p[1][hi] / div for p in pts],
                  color=color, linewidth=1)
        ax.set_xlabel("/sys/power/image_size, MiB", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(f"{ylabel.split(',')[0]} (median; line: min–max)", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return plots.to_svg(fig, "image-size-sweep")


def sweep_rows(sweep: dict) -> list[dict]:
    """The sweep table's cells, formatted."""
    out = []
    for r in sweep.get("rows") or []:
        pct = "" if r["setting_pct"] is None else f" ({r['setting_pct']:.0f} % of RAM)"
        out.append({"setting": number(r["setting_bytes"], "bytes") + pct, "n": r["n"],
                    "image": pages(r["image_pages"]),
                    "image_range": ("–" if r["image_min"] is None else
                                    f"{pages(r['image_min'])}–{pages(r['image_max'])}"),
                    "cycle": number(r["cycle_ms"], "ms"),
                    "cycle_range": ("–" if r["cycle_min"] is None else
                                    f"{number(r['cycle_min'], 'ms')}–{number(r['cycle_max'], 'ms')}")})
    return out


def in_use_sentence(summary: dict) -> str:
    """The composition against the kernel's saveable count, in one line."""
    k = _kernel(summary)
    used = summary["in_use_pages"]
    save = k.get("saveable_pages", {}).get("pages")
    if used is None:
        return (f"In use before the cycle: {kb(summary['in_use_kb'])}; the kernel's counts are in "
                f"pages and {summary['page_size']['how']}.")
    text = f"In use before the cycle: {pages(used)} pages ({kb(summary['in_use_kb'])})"
    if save is not None:
        text += (f"; the kernel counted {pages(save)} saveable ({save / used * 100:.0f} % of that; "
                 "saveable also holds memory reserved at boot, outside MemTotal)")
        img = k.get("image_pages", {}).get("pages")
        if img is not None:
            text += f" and wrote an image of {pages(img)} pages"
    return text + f". Page size: {summary['page_size']['bytes']} bytes ({summary['page_size']['how']})."


# --------------------------------------------------------------------------- text


def text_lines(section: dict) -> list[str]:
    """The section as text lines (cells made terminal-safe by ``table``)."""
    s, procs, sweep = section["summary"], section["processes"], section["sweep"]
    out = ["", TITLE]
    if not s.get("present"):
        out.append(f"  {NOT_MEASURED}: {s['reason']}")
    else:
        out[-1] += f" (before the cycle, medians over {s['n']} complete runs)"
        out.append(table(["kind", "before", "pages", "after", "change", "% of RAM", "note"], [
            [("  " if not r["partition"] else "") + r["label"], kb(r["before_kb"]),
             pages(r["before_pages"]), kb(r["after_kb"]), signed_kb(r["change_kb"]),
             share(r["share"]) if r["partition"] else "", r["note"] or ""]
            for r in s["table"]]))
        out.append("  " + in_use_sentence(s))
        out.append(table(["the kernel's count", "median", "min", "max", "n", "why not measured"], [
            [k["label"], pages(k["pages"]), pages(k["min"]), pages(k["max"]), str(k["n"]),
             k["reason"] or ""] for k in s["kernel"]]))
        out.append("  " + s["reclaim"]["sentence"])
        sc = s["scan_ms"]
        out.append("  Composition scan (recorder): " + (
            f"median {number(sc['median'], 'ms')}, max {number(sc['max'], 'ms')}, n={sc['n']}"
            if sc["n"] else f"{NOT_MEASURED}: {sc['reason']}"))
    out += ["", "  Largest memory users before the cycle (per command; median over the runs it is in)"]
    if procs["reason"]:
        out.append(f"  {NOT_MEASURED}: {procs['reason']}")
    else:
        out.append(table(["command", "processes", "runs", "anon+shmem", "anon", "shmem", "rss",
                          "swap", "source", "command line"], [
            [p["comm"], f"{p['processes']:g}", f"{p['runs']}/{procs['n']}", kb(p["anon_shmem_kb"]),
             kb(p["anon_kb"]), kb(p["shmem_kb"]), kb(p["rss_kb"]), kb(p["swap_kb"]),
             p["source"], p["cmdline"]] for p in procs["rows"]]))
    out += ["", "  Image size against /sys/power/image_size"]
    if sweep["reason"]:
        out.append(f"  no sweep: {sweep['reason']}")
    else:
        out.append(table(["image_size", "runs", "image pages", "range", "whole cycle", "range"], [
            [r["setting"], str(r["n"]), r["image"], r["image_range"], r["cycle"], r["cycle_range"]]
            for r in sweep_rows(sweep)]))
    return out


# --------------------------------------------------------------------------- HTML


def html_context(section: dict) -> dict:
    """What the template needs beyond the model: the two charts and the sweep's cells."""
    return {"chart": chart(section["summary"]), "sweep_svg": sweep_chart(section["sweep"]),
            "sweep_rows": sweep_rows(section["sweep"]),
            "in_use": in_use_sentence(section["summary"]) if section["summary"].get("present") else ""}
