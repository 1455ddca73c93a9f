"""Self-contained HTML report: Jinja2 templates from reports/templates (autoescaped), the
CSS of reports/report.css inlined, figures as inline SVG. The page makes no request of any
kind (its Content-Security-Policy forbids them) and runs no script.
"""

from __future__ import annotations

import jinja2

from snapprof.paths import reports_dir
from snapprof.report import composition, plots
from snapprof.report.first_screen import first_screen, has_problems
from snapprof.report.fmt import number, spread

MAX_STACKED_RUNS = 60


def environment() -> jinja2.Environment:
    """The Jinja2 environment of reports/templates (autoescaped, strict) with the report's
    number filters; the compare page renders through it too."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(reports_dir() / "templates")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = number
    env.filters["spread"] = lambda m: spread(m, m["unit"])
    return env


def _stacked(model: dict) -> tuple[str | None, str]:
    phases = model["phases"]
    order = phases["order"]
    labels = {p["phase"]: p["label"] for p in phases["summary"]}
    status = {r["run_id"]: r["status"] for r in model["runs"]}
    per_run = [r for r in phases["per_run"] if any(v is not None for v in r["durations_ms"].values())]
    if not order or not per_run:
        return None, ""
    if len(per_run) <= MAX_STACKED_RUNS:
        rows = [(f"run {r['run_id']}" + ("" if status[r["run_id"]] == "complete"
                                          else f" ({status[r['run_id']]})"), r["durations_ms"])
                for r in per_run]
        caption = "Phase durations stacked per run (measured phases only; a missing phase is left out, not drawn as 0)."
    else:
        rows = [(f"{stat} of complete runs", {p["phase"]: p[stat] for p in phases["summary"]})
                for stat in ("min", "median", "p95", "max")]
        caption = (f"{len(per_run)} runs: per-phase min, median, p95 and max over the complete runs, "
                   "stacked (each row stacks that statistic of every phase).")
    return plots.stacked(rows, order, labels), caption


def _memory(model: dict) -> tuple[str | None, str]:
    items = [(m["label"], m["median"], m["max"]) for m in model["memory"]["flow"]
             if m["unit"] == "pages" and m["n"]]
    meta = model["header"]["meta"]
    ram = next((m for m in model["memory"]["flow"] if m["name"] == "mem_total_kb"), None)
    if ram and ram["n"] and meta.get("machine") == "x86_64":
        items.insert(0, ("RAM (MemTotal in 4 KiB pages)", ram["median"] / 4, None))
    if not items:
        return None, ""
    return (plots.hbars(items, "pages (median over complete runs; tick = max)", "memory", "#ff7f0e"),
            "Page accounting, medians; each figure's method is in the table below.")


def _callbacks(rows: list[dict], salt: str) -> str | None:
    if not rows:
        return None
    items = [(f"{d['device']} [{d['driver'] or 'no driver'}] {d['stage']}", d["median_ms"], d["max_ms"])
             for d in rows]
    return plots.hbars(items, "ms", salt, "#9467bd")


def render_html(model: dict) -> str:
    timelines = model["timelines"]
    runs = [{**t, "svg": plots.timeline(t) if t["phases"] else None} for t in timelines["runs"]]
    stacked_svg, stacked_caption = _stacked(model)
    memory_svg, memory_caption = _memory(model)
    fz = model["freezer"]["slowest"]
    freezer_svg = (plots.hbars([(f"{t['comm']} ({t['stage']})", t["median_ms"], t["max_ms"])
                                for t in fz], "ms", "freezer") if fz else None)
    devices_svg = {k: _callbacks(model["devices"][k], f"devices-{k}") for k in ("suspend", "resume")}
    comp = composition.html_context(model["composition"]) if model.get("composition") else None
    css = (reports_dir() / "report.css").read_text(encoding="utf-8")
    template = environment().get_template("report.html.j2")
    return template.render(
        m={**model, "timelines": {**timelines, "runs": runs}}, h=model["header"], css=css,
        stacked_svg=stacked_svg, stacked_caption=stacked_caption, memory_svg=memory_svg,
        memory_caption=memory_caption, comp=comp, freezer_svg=freezer_svg, devices_svg=devices_svg,
        fs=(fs := first_screen(model)), fs_problems=has_problems(fs))
