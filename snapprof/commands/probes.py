"""snapprof probes: what this kernel lets snapprof measure, area by area, and why not.

Standard library only: resolves probes/catalogue.json against /proc/kallsyms, tracefs and
the kernel's settings, without bcc and without attaching anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from snapprof.termsafe import visible

EPILOG = """\
examples:
  snapprof probes                    # every measurement, by area, with the reason for what is missing
  snapprof probes --area freezer     # one area (repeat --area, or give a comma list)
  snapprof probes --json             # the same as JSON, for scripts
  snapprof probes --missing          # only what cannot be measured here
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "probes", help="what this kernel lets snapprof measure, and why not",
        description="Resolve snapprof's probe catalogue against the running kernel: which "
                    "kernel functions, tracepoints and statics each measurement uses here, "
                    "and for each one that cannot be made, the reason (not root, bcc missing, "
                    "kernel lockdown, no hibernation support, function inlined or absent ...).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--area", action="append", metavar="AREA",
                   help="only these areas: freezer, shrink, copy, devices, io, phases")
    p.add_argument("--freezer-probes", choices=("light", "sweep", "fentry", "kprobe"), default="light",
                   help="as snapprof record's: light (default) leaves out the per-thread sweep "
                        "hooks on freeze_task(), the others show them")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--missing", action="store_true", help="list only what cannot be measured")
    p.add_argument("--catalogue", metavar="PATH", help="another probe catalogue (default: the shipped one)")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)  # read /proc, /sys under ROOT (tests)
    p.set_defaults(func=run)
    return p


def _areas(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [a.strip() for v in values for a in v.split(",") if a.strip()]


def _checks(view, root: str) -> list[tuple[str, bool, str]]:
    from snapprof.record import sysinfo

    rows = list(sysinfo.hibernation_support(root, euid=view.euid))
    have = {r[0] for r in rows}
    kp = view.kprobes_supported()
    rows.append(("kprobes", kp is not False,
                 {True: "kprobes available", None: "cannot tell whether kprobes are available",
                  False: "kernel without kprobes (CONFIG_KPROBES / CONFIG_KPROBE_EVENTS off)"}[kp]))
    tfs = view.tracefs()
    rows.append(("tracefs", tfs is not None, f"tracefs at {tfs}" if tfs else view.tracefs_problem()))
    rows.append(("bcc", view.bcc_installed, "bcc (python3-bpfcc) installed" if view.bcc_installed
                 else "bcc missing: install python3-bpfcc"))
    headers = (os.path.isdir(view.path(f"/lib/modules/{view.release}/build"))
               or os.path.exists(view.path("/sys/kernel/kheaders.tar.xz")))
    rows.append(("kernel_headers", headers, f"kernel headers for {view.release}" if headers else
                 f"no kernel headers for {view.release} (install linux-headers-{view.release}): "
                 "bcc cannot compile"))
    layout, how = view.task_layout()
    rows.append(("task_layout", bool(layout), how))  # NO: the header is compiled, slower
    fentry = view.fentry_problem()
    rows.append(("fentry", fentry is None,
                 "BPF trampolines: the per-thread sweep hooks (--freezer-probes sweep) use "
                 "fentry/fexit" if fentry is None
                 else f"{fentry}: the per-thread sweep hooks (--freezer-probes sweep) use kprobes"))
    if "lockdown" not in have and view.lockdown() is None:
        rows.append(("lockdown", True, "no kernel lockdown (securityfs lockdown file absent)"))
    syms = view.kallsyms()
    if syms is None:
        rows.append(("kallsyms", False, "cannot read /proc/kallsyms"))
    else:
        hidden = all(addr == 0 for entries in list(syms.values())[:50] for addr, _ in entries)
        rows.append(("kallsyms", not hidden, "kernel addresses hidden (not root or "
                     "kernel.kptr_restrict): kernel statics cannot be read" if hidden else
                     "kernel addresses readable"))
    return rows


def build_report(ps, root: str) -> dict:
    view = ps.view
    blockers = view.blockers()
    measurements = []
    for r in ps.resolutions:
        m = r.measurement
        measurements.append({
            "name": m.name, "area": m.area, "areas": list(m.areas), "description": m.description,
            "target": r.target, "available": r.available,
            "ready": r.available and not blockers, "reason": r.reason, "notes": r.notes,
            "metrics": list(m.metrics), "rows": list(m.rows)})
    available = sum(1 for x in measurements if x["available"])
    return {
        "kernel_release": view.release,
        "checks": [{"check": c, "ok": bool(ok), "detail": d} for c, ok, d in _checks(view, root)],
        "blockers": blockers,
        "measurements": measurements,
        "summary": {"measurements": len(measurements), "available": available,
                    "attachable": available if not blockers else 0},
    }


def render_text(rep: dict, missing_only: bool = False) -> str:
    lines = [f"snapprof probes: kernel {rep['kernel_release']}", "", "system"]
    for c in rep["checks"]:
        if missing_only and c["ok"]:
            continue
        lines.append(f"  {'ok' if c['ok'] else 'NO':<4} {c['check']:<16} {c['detail']}")
    by_area: dict[str, list[dict]] = {}
    for m in rep["measurements"]:
        by_area.setdefault(m["area"], []).append(m)
    wname = max((len(m["name"]) for m in rep["measurements"]), default=0) + 2
    wtarget = min(max((len(m["target"]) for m in rep["measurements"]), default=0), 44) + 2
    for area, ms in by_area.items():
        shown = [m for m in ms if not (missing_only and m["available"])]
        if not shown:
            continue
        lines += ["", area]
        for m in shown:
            if m["available"]:
                state = "yes" if m["ready"] else "(yes)"
                tail = ", ".join(m["metrics"] + m["rows"]) or m["description"]
            else:
                state = "no"
                tail = m["reason"]
            lines.append(f"  {state:<6}{m['name']:<{wname}}{m['target']:<{wtarget}} {tail}")
    s = rep["summary"]
    lines.append("")
    lines.append(f"{s['available']} of {s['measurements']} measurements are possible on this kernel.")
    if rep["blockers"]:
        lines.append("None can be attached now: " + "; ".join(rep["blockers"]) + ".")
        lines.append("(yes) = the kernel has what the measurement needs.")
    # names and paths come from the kernel (or a --root tree): never raw to a terminal
    return "\n".join(visible(line) for line in lines) + "\n"


def run(args) -> int:
    from snapprof.record.probeset import ProbeSet
    from snapprof.record.resolve import KernelView

    view = KernelView(root=args.root)
    ps = ProbeSet(catalogue_path=args.catalogue, areas=_areas(args.area), view=view,
                  freezer_probes=args.freezer_probes)
    rep = build_report(ps, args.root)
    if args.missing:
        rep_out = dict(rep, measurements=[m for m in rep["measurements"] if not m["available"]])
    else:
        rep_out = rep
    if args.json:
        json.dump(rep_out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(rep, missing_only=args.missing))
    return 0
