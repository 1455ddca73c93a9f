"""`snapprof compare` as plain text (a terminal or a CI log) and as JSON (for machines).

Both take a ``Comparison`` (snapprof.analysis.compare) and the evaluated --fail-on
thresholds; nothing here computes a statistic. NaN is never printed as a number: it is
"–" in a table whose row says why, and null in JSON.
"""

from __future__ import annotations

from snapprof.analysis.compare import Comparison, ThresholdResult
from snapprof.analysis.compare_summary import (area_of, area_title, by_size, real_changes,
                                               settings_that_differ)
from snapprof.report.fmt import missing, number
from snapprof.report.json import strict_dumps
from snapprof.report.model import clean, records
from snapprof.report.text import table
from snapprof.termsafe import visible, visible_text

TOP = 10  # devices and tasks listed per label

METHOD_NOTE = (
    "change = median(label) - median(baseline), % of the baseline median. The interval is the "
    "exact distribution-free {level} % interval of the shift (Hodges-Lehmann / Moses); p is the "
    "two-sided Mann-Whitney U test (exact permutation distribution for up to 60 runs in all, "
    "tie-corrected normal approximation beyond). A verdict (better/worse, or 'changed' for a "
    "figure with no good direction) needs the interval to exclude 0 and p <= {alpha}; with too "
    "few runs for a {level} % interval there is no verdict. Only complete runs count.")


def measured_note(row: dict) -> str:
    """" (measured in X: median V, n=N)" for a not-comparable row measured on one side."""
    if not isinstance(row.get("measured_in"), str):
        return ""
    return (f" (measured in {row['measured_in']}: median {number(row['median'], row['unit'])}, "
            f"n={int(row['n'])})")


def method_note(cmp: Comparison) -> str:
    return METHOD_NOTE.format(level=_pct_level(cmp), alpha=f"{1 - cmp.level:.2g}")


def _pct_level(cmp: Comparison) -> str:
    return f"{cmp.level * 100:g}"


def signed(value, unit: str) -> str:
    if missing(value):
        return "–"
    text = number(value, unit)
    return text if text.startswith("-") else "+" + text


def pct(value) -> str:
    return "–" if missing(value) else f"{value:+.1f}%"


def interval(lo, hi, unit: str) -> str:
    if missing(lo) or missing(hi):
        return "–"
    return f"{signed(lo, unit)} .. {signed(hi, unit)}"


def median_with_ci(stats: dict | None, unit: str) -> str:
    if not stats or not stats.get("n"):
        return "not measured"
    text = number(stats["median"], unit)
    if missing(stats.get("ci_low")):
        return f"{text} [CI: too few runs, n={stats['n']}]"
    return f"{text} [{number(stats['ci_low'], unit)}–{number(stats['ci_high'], unit)}]"


def p_value(p) -> str:
    if missing(p):
        return "–"
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


def group_line(cmp: Comparison, label: str) -> str:
    g = cmp.groups[label]
    excl = ", ".join(f"{n} {s}" for s, n in g.excluded.items())
    runs = f"{g.n_runs} complete run{'s' if g.n_runs != 1 else ''}"
    if excl:
        runs += f" ({excl} excluded)"
    role = " (baseline)" if label == cmp.baseline else ""
    comp = f"; image compressor {g.compressor}" if g.compressor else ""
    return f"{label}{role}: {', '.join(g.sources)} — {runs}{comp}"


def capture_warnings(group) -> dict[str, list[str]]:
    """{capture: what its reader left out or recovered, counted} for the group's captures
    that have any (see docs/capture-format.md)."""
    return {f.source or "capture": list(f.warnings) for f in group.frames if f.warnings}


def summary_lookup(cmp: Comparison) -> dict:
    """(kind, name, label) -> the summarize() dict of that label."""
    out = {}
    for rec in cmp.summary.to_dict("records"):
        out[(rec["kind"], rec["name"], rec["label"])] = rec
    return out


def change_parts(cmp: Comparison, r: dict) -> dict:
    """One real change in parts: what (the figure), kernels, medians, change (with its
    interval), verdict; ``change_sentence`` joins them."""
    u, lv = r["unit"], _pct_level(cmp)
    if not missing(r["ci_low_pct"]) and not missing(r["ci_high_pct"]):
        change = (f"{pct(r['delta_pct'])}, {lv} % interval "
                  f"{pct(r['ci_low_pct'])} .. {pct(r['ci_high_pct'])}")
    else:  # no % change (baseline median 0): the interval in the figure's unit
        change = f"{lv} % interval {interval(r['ci_low'], r['ci_high'], u)}"
    return {"what": r["title"] if r["kind"] == "phase" else f"{r['title']} ({r['name']})",
            "kernels": f"{r['label']} vs {r['baseline']}",
            "medians": f"{number(r['median_base'], u)} -> {number(r['median'], u)}",
            "change": f"{signed(r['delta'], u)} ({change})",
            "verdict": r["verdict"]}


def change_sentence(cmp: Comparison, r: dict) -> str:
    """One real change in a sentence: figure, kernels, change with its interval, verdict."""
    p = change_parts(cmp, r)
    return f"{p['what']}, {p['kernels']}: {p['medians']}, {p['change']}: {p['verdict']}"


def setting_parts(r: dict) -> dict:
    """One setting that differs in parts: what, kernels, values, difference (no verdict: a
    setting is not a finding)."""
    u = r["unit"]
    return {"what": f"{r['title']} ({r['name']})",
            "kernels": f"{r['label']} vs {r['baseline']}",
            "medians": f"{number(r['median_base'], u)} -> {number(r['median'], u)}",
            "change": f"{signed(r['delta'], u)} ({pct(r['delta_pct'])})"}


def setting_sentence(r: dict) -> str:
    p = setting_parts(r)
    return f"{p['what']}, {p['kernels']}: {p['medians']}, {p['change']}"


#: What a setting that differs means for the comparison (text, HTML).
SETTINGS_NOTE = "not kernel findings; they make the comparison less controlled"


def settings_records(cmp: Comparison) -> list[dict]:
    """The settings that differ (analysis.compare_summary.settings_that_differ), each with its
    sentence."""
    return [{**rec, "sentence": setting_sentence(rec)}
            for rec in settings_that_differ(cmp).to_dict("records")]


def summary_records(cmp: Comparison) -> list[dict]:
    """The real changes (analysis.compare_summary.real_changes), each with its sentence."""
    return [{**rec, "sentence": change_sentence(cmp, rec)}
            for rec in real_changes(cmp).to_dict("records")]


def summary_lines(cmp: Comparison) -> list[str]:
    """The short summary: one line per real change, per label; or that there is none."""
    lines = []
    for lab in cmp.labels[1:]:
        found = real_changes(cmp, lab).to_dict("records")
        compared = int((cmp.diffs["label"] == lab).sum())
        head = (f"{visible(lab)} vs {visible(cmp.baseline)}: {len(found)} real change"
                f"{'s' if len(found) != 1 else ''} among {compared} figures compared")
        lines.append(head + (":" if found else
                             f" (none with a {_pct_level(cmp)} % interval clear of 0 and a test to back it)"))
        lines += ["  " + visible(change_sentence(cmp, r)) for r in found]
        settings = settings_that_differ(cmp, lab).to_dict("records")
        if settings:
            one = len(settings) == 1
            lines.append(f"{visible(lab)} vs {visible(cmp.baseline)}: {len(settings)} setting"
                         f"{'' if one else 's'} that differ{'s' if one else ''} ({SETTINGS_NOTE}):")
            lines += ["  " + visible(setting_sentence(r)) for r in settings]
    return lines


def failure_line(cmp: Comparison, lab: str) -> str | None:
    """How many of a label's cycles failed, with the exact interval of the rate and the
    kinds (snapprof.analysis.failures); None without runs."""
    r = cmp.failure_rates.get(lab)
    if not r:
        return None
    kinds = ", ".join(f"{n} {k}" for k, n in r["kinds"].items())
    return (f"{lab}: {r['failed']} of {r['runs']} cycles failed ({r['rate'] * 100:.0f} %, 95 % "
            f"interval {r['ci_low'] * 100:.1f}-{r['ci_high'] * 100:.1f} %, exact binomial)"
            + (f": {kinds}" if kinds else ""))


def header_lines(cmp: Comparison) -> list[str]:
    lines = [f"snapprof compare: {len(cmp.labels)} labels, "
             f"{sum(len(g.sources) for g in cmp.groups.values())} captures; "
             f"baseline = the first label, {cmp.baseline}"]
    if cmp.userspace:
        lines.append(("  WARNING: " if cmp.userspace["status"] == "differs" else "  ") + cmp.userspace["sentence"])
    lines += ["  " + group_line(cmp, lab) for lab in cmp.labels]
    lines += ["  failures: " + line for line in (failure_line(cmp, lab) for lab in cmp.labels) if line]
    for lab in cmp.labels:
        if cmp.groups[lab].meta_differs:
            lines.append(f"  note: captures pooled under {lab} differ in "
                         f"{', '.join(cmp.groups[lab].meta_differs)}")
    lines += [f"  note: {n}" for n in cmp.label_notes + cmp.setup_notes]
    lines += [f"  capture problem: {src}: {w}" for lab in cmp.labels
              for src, ws in capture_warnings(cmp.groups[lab]).items() for w in ws]
    return lines


def render_text(cmp: Comparison, thresholds: list[ThresholdResult] | None = None,
                brief: bool = False) -> str:
    """The header, the summary (one line per real change), then the full tables; ``brief``:
    the header and the summary only."""
    lines = header_lines(cmp) + ["", "summary:"] + ["  " + x for x in summary_lines(cmp)]
    if brief:
        return visible_text("\n".join(lines) + "\n")
    lines += ["", method_note(cmp)]
    summ = summary_lookup(cmp)
    for lab in cmp.labels[1:]:
        lines += ["", f"== {lab} vs {cmp.baseline} =="]
        d = cmp.diffs[cmp.diffs["label"] == lab]
        memory = [area_of(k, n) == "memory" for k, n in zip(d["kind"], d["name"])]
        lines += _diff_table(cmp, lab, d[[not x for x in memory]], summ)
        if any(memory):
            lines += ["", f"{area_title('memory')}:"]
            lines += _diff_table(cmp, lab, by_size(d[memory]), summ)
        nc = cmp.not_comparable[cmp.not_comparable["label"] == lab]
        if not nc.empty:
            lines += ["", "not comparable:"]
            lines += [f"  {line}" for line in not_comparable_lines(nc.to_dict("records"))]
        lines += _changes_text(cmp.devices, lab, ["device"], "devices (PM callback time per run)")
        lines += _changes_text(cmp.tasks, lab, ["stage", "comm"], "tasks (slowest freeze latency per name)")
    if thresholds:
        lines += ["", "thresholds (--fail-on):"]
        for t in thresholds:
            lines.append(f"  {t.threshold.expr} [{t.label}]: {t.status.upper()} — {t.detail}")
    return visible_text("\n".join(lines) + "\n")  # capture text: controls shown, not obeyed


def not_comparable_lines(rows: list[dict]) -> list[str]:
    """One line per figure that is not comparable, except the memory composition's: those
    sharing a reason are one line ("memory composition, N figures (names): reason"), so a
    capture without the composition says so once, not once per figure."""
    out, grouped = [], {}
    for r in rows:
        if area_of(r["kind"], r["name"]) == "memory":
            where = r["measured_in"] if isinstance(r.get("measured_in"), str) else None
            grouped.setdefault((r["reason"], where), []).append(r["name"])
            continue
        out.append(f"{r['name'] if r['kind'] == 'metric' else 'phase:' + r['name']}: {r['reason']}"
                   + measured_note(r))
    for (reason, where), names in grouped.items():
        out.append(f"memory composition, {len(names)} figure{'' if len(names) == 1 else 's'} "
                   f"({short_names(names)}): {reason}"
                   + (f" (measured in {where})" if where else ""))
    return out


def short_names(names: list[str], show: int = 4) -> str:
    return ", ".join(names[:show]) + (f", … {len(names) - show} more" if len(names) > show else "")


def _diff_table(cmp: Comparison, lab: str, d, summ: dict) -> list[str]:
    """The full table of one label's diffs rows (none: no lines)."""
    rows = []
    for r in d.to_dict("records"):
        u = r["unit"]
        name = r["name"] if r["kind"] == "metric" else f"phase:{r['name']}"
        rows.append([
            name, f"{r['n_base']}/{r['n']}",
            median_with_ci(summ.get((r["kind"], r["name"], cmp.baseline)), u),
            median_with_ci(summ.get((r["kind"], r["name"], lab)), u),
            f"{signed(r['delta'], u)} ({pct(r['delta_pct'])})",
            interval(r["ci_low"], r["ci_high"], u),
            p_value(r["p"]),
            r["verdict"] + (f"  [{r['note']}]" if r["note"] else ""),
        ])
    if not rows:
        return []
    return [table(["figure", "n", f"{cmp.baseline} median [{_pct_level(cmp)}% CI]",
                   f"{lab} median [{_pct_level(cmp)}% CI]", "change",
                   f"{_pct_level(cmp)}% CI of change", "p", "verdict"], rows)]


def _changes_text(frame, label: str, keys: list[str], title: str) -> list[str]:
    d = frame[frame["label"] == label] if not frame.empty else frame
    d = d[d["delta"].notna() | d["verdict"].str.startswith("only in")] if not d.empty else d
    if d.empty:
        return []
    rows = []
    for r in d.head(TOP).to_dict("records"):
        rows.append([" ".join(str(r[k]) for k in keys), f"{r['runs_base']}/{r['runs']}",
                     number(r["median_base"], "ms"), number(r["median"], "ms"),
                     signed(r["delta"], "ms"), interval(r["ci_low"], r["ci_high"], "ms"),
                     r["verdict"]])
    return ["", f"{title}, changed most (top {TOP}):",
            table(["name", "runs", "baseline", label, "change", "CI of change", "verdict"], rows)]


# --------------------------------------------------------------------------- JSON


def to_dict(cmp: Comparison, thresholds: list[ThresholdResult] | None = None) -> dict:
    return {
        "baseline": cmp.baseline,
        "labels": cmp.labels,
        "method": method_note(cmp),
        "setup_notes": cmp.setup_notes,
        "label_notes": cmp.label_notes,
        "userspace": cmp.userspace,
        "failure_rates": {lab: {k: clean(v) if not isinstance(v, dict) else v for k, v in r.items()}
                          for lab, r in cmp.failure_rates.items() if r},
        "groups": {lab: {"captures": g.sources, "complete_runs": g.n_runs,
                         "runs_total": g.runs_total, "excluded": g.excluded,
                         "kernel_release": g.meta.get("kernel_release"),
                         "compressor": g.compressor,
                         "meta_differs": g.meta_differs,
                         "capture_warnings": capture_warnings(g)}
                   for lab, g in cmp.groups.items()},
        "level": clean(cmp.level),
        "summary": records(cmp.summary),
        "real_changes": [{k: clean(v) for k, v in r.items()} for r in summary_records(cmp)],
        "settings_that_differ": [{k: clean(v) for k, v in r.items()} for r in settings_records(cmp)],
        "differences": records(cmp.diffs),
        "not_comparable": records(cmp.not_comparable),
        "devices": records(cmp.devices),
        "tasks": records(cmp.tasks),
        "thresholds": [{"expr": t.threshold.expr, "label": t.label, "kind": t.kind,
                        "status": t.status, "detail": t.detail} for t in thresholds or []],
    }


def render_json(cmp: Comparison, thresholds: list[ThresholdResult] | None = None) -> str:
    return strict_dumps(to_dict(cmp, thresholds), indent=1) + "\n"
