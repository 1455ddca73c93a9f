"""Plain-text report for a terminal: the report model laid out as aligned tables."""

from __future__ import annotations

from snapprof.report.fmt import NOT_MEASURED, number, spread
from snapprof.termsafe import visible, visible_text


def composition_lines(section: dict) -> list[str]:
    from snapprof.report.composition import text_lines  # it lays out with table() below

    return text_lines(section)


def table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    """Columns padded to their widest cell; numeric-looking columns right-aligned."""
    if not rows:
        return indent + "(none)"
    cells = [headers] + [[("" if c is None else visible(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = [all(_numeric(r[i]) for r in cells[1:] if r[i] not in ("", "–", NOT_MEASURED)) for i in
             range(len(headers))]
    lines = []
    for j, r in enumerate(cells):
        parts = [c.rjust(w) if right[i] and j else c.ljust(w) for i, (c, w) in
                 enumerate(zip(r, widths))]
        lines.append(indent + "  ".join(parts).rstrip())
        if j == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    head = cell.split(" ")[0].replace(",", "").replace(".", "").lstrip("-")
    return head.isdigit()


def _stat_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for m in rows:
        u = m["unit"]
        if m["n"]:
            ci = ("too few runs" if m["ci_low"] is None else
                  f"{number(m['ci_low'], u)}–{number(m['ci_high'], u)}")
            out.append([m["label"], number(m["median"], u), number(m["min"], u),
                        number(m["max"], u), number(m["p95"], u), ci, str(m["n"]), m["method"]])
        else:
            out.append([m["label"], NOT_MEASURED, "", "", "", "", "0", m["reason"]])
    return out


STAT_HEADERS = ["figure", "median", "min", "max", "p95", "95% CI of median", "n", "method"]


def _stack_and_hint(c: dict) -> list[str]:
    """A named task's top frames (with where they came from) and its hint."""
    out = []
    if c["top_frames"]:
        out.append(visible(f"      stack ({c['stack_source']}): " + " <- ".join(c["top_frames"])))
    what = f"{c['signature']}: {c['what']}. " if c.get("what") else ""
    out.append(visible(f"      {what}hint: {c['hint']}"))
    return out


def holdup_lines(f: dict) -> list[str]:
    """Runs in which systemd's cgroup freeze of user.slice was held up, and by what."""
    out = []
    for h in (f.get("slice_holdups") or [])[:6]:
        gave_up = (f": systemd-sleep waited {h['waited_ms'] / 1000:.1f} s and gave up"
                   if h.get("waited_ms") is not None else "")
        said = f" (\"{h['systemd']}\")" if h.get("systemd") else ""
        out.append(visible(f"SYSTEMD'S FREEZE OF {h['slice']} HELD UP in run {h['run_id']} "
                           f"({h['status']}){gave_up}{said}"))
        for c in h["holders"][:8]:
            also = " (the kernel's freezer named it too)" if c["also_refused"] else ""
            out.append(visible(f"    pid {c['pid']} {c['comm'] or '?'} state {c['state'] or '?'}"
                               f"{', in ' + c['wchan'] if c['wchan'] else ''}: "
                               f"{c['cmdline'] or '(no command line)'}{also}"))
            out += _stack_and_hint(c)
            if c.get("note"):
                out.append(visible(f"      {c['note']}"))
        out.append("")
    return out


def failure_lines(f: dict) -> list[str]:
    """The failure first (snapprof.analysis.failures): rate, each failed run's kind, the
    tasks that refused to freeze with the top of their stacks and a hint, memory; then
    systemd's cgroup freezes held up (failed runs or not)."""
    if not f.get("runs"):
        return holdup_lines(f)
    r = f["rate"]
    kinds = ", ".join(f"{n} {k}" for k, n in r["kinds"].items())
    out = [f"HIBERNATION FAILED in {r['failed']} of {r['runs']} runs ({kinds}); failure rate "
           f"{r['rate'] * 100:.0f} % (95 % interval {r['ci_low'] * 100:.0f}-{r['ci_high'] * 100:.0f} %, "
           "exact binomial)"]
    for run in f["runs"][:6]:
        head = f"  run {run['run_id']}: {run['kind']} failure"
        fz = run.get("freeze")
        if fz:
            head += (f": freezing {fz['stage']} {fz['word']} after {fz['tried_ms'] / 1000:.3f} s"
                     + (f" (timeout {fz['timeout_ms'] / 1000:g} s)" if fz.get("timeout_ms") else "")
                     + f", {fz['tasks']} refusing")
        out.append(visible(head))
        for c in run["culprits"]:
            out.append(visible(f"    pid {c['pid']} {c['comm'] or '?'} [{c['stage'] or '?'}] state "
                               f"{c['state'] or '?'}: {c['cmdline'] or '(no command line)'}"))
            out += _stack_and_hint(c)
        if run.get("memory"):
            out.append(visible("    " + run["memory"]["sentence"]))
        for u in run.get("memory_users", [])[:5]:
            out.append(visible(f"      pid {u['pid']} {u['comm'] or '?'}: {u['note'] or ''}: "
                               f"{u['cmdline'] or ''}"))
    if len(f["runs"]) > 6:
        out.append(f"  ... {len(f['runs']) - 6} more failed runs (see Runs below)")
    out.append("")
    return out + holdup_lines(f)


def render_text(model: dict) -> str:
    h = model["header"]
    meta = h["meta"]
    by = h["runs_by_status"]
    out = [f"snapprof report — {visible(model['source'] or 'capture')}", ""]
    out += failure_lines(model.get("failures") or {})
    # the model names every header key, with None for what the capture does not say
    facts = [["kernel", meta.get("kernel_release") or "unknown"],
             ["machine", " ".join(filter(None, [meta.get("machine"), meta.get("hostname")]))],
             ["distro", meta.get("lab_distro") or meta.get("distro") or ""],
             ["recorded", meta.get("recorded_at") or ""], ["trigger", meta.get("trigger") or ""],
             ["pm_test / disk", f"{meta.get('pm_test') or 'not recorded'} / "
                                f"{meta.get('power_disk') or 'not recorded'}"],
             ["runs", f"{h['runs_total']} ({by['complete']} complete, {by['failed']} failed, "
                      f"{by['incomplete']} incomplete); statistics over the complete runs"],
             ["probes", f"{h['probes_attached']} of {h['probes_total']} attached"]]
    if h["compressor"]:
        facts.append(["image compressor", f"{h['compressor']['name']} ({h['compressor']['how']})"])
    out.append(table(["", ""], facts).split("\n", 2)[2])
    if h["ringbuf_drops"]:
        out.append(f"  WARNING: {h['ringbuf_drops']} records lost to full BPF buffers or maps "
                   f"(runs {', '.join(map(str, h['runs_with_drops']))}); counts may be low, "
                   "and the figures they make are not measured (see why below)")
    missing = [p for p in h["probes"] if not p["attached"]]
    if missing:
        out += ["", "Probes not attached"]
        out.append(table(["probe", "area", "reason"],
                         [[p["name"], p["area"], p["reason"] or ""] for p in missing]))

    out += ["", "Headline (median over complete runs)", table(STAT_HEADERS, _stat_rows(model["headline"]))]

    out += ["", "Runs"]
    out.append(table(["run", "status", "whole cycle", "last phase reached", "error"], [
        [str(r["run_id"]), r["status"], number(r["cycle_ms"], "ms"),
         "" if not r["last_phase"] else
         r["last_phase_label"] + ("" if r["last_phase_ended"] else " (no end recorded)"),
         r["error"] or ""] for r in model["runs"]]))

    out += ["", "Where the time goes: phase durations (ms, complete runs)"]
    rows = []
    for p in model["phases"]["summary"]:
        note = ("length from the sleep-time report (clocks stop)" if p["phase"] == "copy" else
                "the copy's jump of CLOCK_BOOTTIME taken out" if "less sleep-time" in p["method"]
                else "")
        rows.append([p["label"], number(p["median"], "ms"), number(p["min"], "ms"),
                     number(p["max"], "ms"), number(p["p95"], "ms"), str(p["n"]),
                     p["method"] or NOT_MEASURED, note])
    out.append(table(["phase", "median", "min", "max", "p95", "n", "method", "note"], rows))

    fz = model["freezer"]
    out += ["", "Freezer", table(STAT_HEADERS, _stat_rows(fz["metrics"])),
            "", f"  Slowest tasks to freeze (the freezer's request → __refrigerator; "
                + (f"{fz['in_place']} task records frozen without a request timed, no latency)"
                   if fz["in_place"] is not None else
                   "tasks frozen in place not seen: light freezer probes)")]
    out.append(table(["task", "stage", "kthread", "runs", "median", "max"], [
        [t["comm"], t["stage"], str(t["kthread"]), str(t["n"]), number(t["median_ms"], "ms"),
         number(t["max_ms"], "ms")] for t in fz["slowest"]]))
    out += ["", "  Tasks that failed to freeze"]
    out.append(table(["run", "pid", "task", "stage", "run status"], [
        [str(t["run_id"]), str(t["pid"]), t["comm"], t["stage"], t["run_status"]]
        for t in fz["failed"]]))

    mem = model["memory"]
    out += ["", "Memory: page accounting (RAM → saveable → preallocated/reclaimed → copied → image)",
            table(STAT_HEADERS, _stat_rows(mem["flow"] + mem["timing"]))]
    if model.get("composition"):
        out += composition_lines(model["composition"])

    dv = model["devices"]
    out += ["", "Devices", table(STAT_HEADERS, _stat_rows(dv["metrics"]))]
    for key, title in (("suspend", "Slowest suspend callbacks"), ("resume", "Slowest resume callbacks")):
        out += ["", f"  {title} (power:device_pm_callback tracepoints)"]
        out.append(table(["device", "driver", "event", "stage", "runs", "median", "max"], [
            [d["device"], d["driver"] or "", d["event"] or "", d["stage"], str(d["n"]),
             number(d["median_ms"], "ms"), number(d["max_ms"], "ms")] for d in dv[key]]))
    if dv["errors"]:
        out += ["", "  Device callbacks that failed"]
        out.append(table(["run", "device", "driver", "event", "stage", "error"], [
            [str(e["run_id"]), e["device"], e["driver"] or "", e["event"] or "", e["stage"],
             str(e["error"])] for e in dv["errors"]]))

    out += ["", "Image I/O and resume", table(STAT_HEADERS, _stat_rows(model["io"]))]
    if model.get("systemd"):
        out += ["", "systemd's part (the journal of `systemctl hibernate`)",
                table(STAT_HEADERS, _stat_rows(model["systemd"]))]

    kl = model["kernel_log"]
    out += ["", "Kernel log beside the measured figures"]
    out.append(table(["run", "figure", "kernel log", "measured", "method", "log line"], [
        [str(c["run_id"]), c["label"], number(c["kernel"], c["unit"]),
         number(c["measured"], c["unit"], NOT_MEASURED if c["has_metric"] else "–"),
         c["method"] or "", c["text"]]
        for c in kl["checks"] if c["run_id"] in kl["runs_shown"]]))

    out += ["", "Not measured (no complete run has the figure)"]
    out.append(table(["figure", "why"], [[m["label"], m["reason"]] for m in h["not_measured"]]))
    if h["not_measured_in_some_runs"]:
        out += ["", "Not measured in some runs"]
        out.append(table(["figure", "runs", "why"], [
            [m["label"], ", ".join(map(str, m["runs"])), m["reason"]]
            for m in h["not_measured_in_some_runs"]]))
    if model.get("capture_warnings"):
        out += ["", "Capture problems (values left out or recovered while reading)"]
        out += [f"  {visible(w)}" for w in model["capture_warnings"]]
    # capture text is made visible cell by cell above; this catches any other way in
    return visible_text("\n".join(out) + "\n")


__all__ = ["render_text", "table", "spread"]
