"""`snapprof lab compare`: record each kernel in its lab guest, report each, compare them.

One guest at a time (two TCG guests on one host would slow each other and skew the
timings being compared). For each distro: boot its image, run `snapprof record` inside,
take the capture back through the output share, then on the host write that kernel's
report; finally write the comparison and print a headline table.

Output folder layout:
    DIR/<distro>/            <distro>.snap (the capture) and console.log (the guest's serial console)
    DIR/<distro>.html        that kernel's report
    DIR/compare.html         the comparison (also compare.txt and compare.json)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

from snapprof.errors import SnapprofError

# The figures printed at the end, in this order (metric names from snapprof.metrics).
HEADLINE = (
    "freeze_user_ms", "freeze_kernel_ms", "prealloc_ms", "copy_window_ms",
    "device_suspend_ms", "device_resume_ms", "thaw_ms", "cycle_ms",
    "image_pages", "zero_pages", "image_bytes",
)


@dataclass
class KernelRun:
    distro: str
    capture: Path
    report: Path
    boot_s: float | None
    duration_s: float


def record_in_guest(distro: str, runs: int, out_dir: Path, *, memory: str, cpus: int,
                    timeout: float, record_args: Sequence[str] = (),
                    stream: IO[str] | None = sys.stdout, name: str | None = None) -> tuple[Path, "object"]:
    """Boot `distro`, run `snapprof record --runs N` in it; return (capture path, GuestResult).

    The 9p shares die at the first snapshot cycle, so the recorder runs from a tmpfs copy
    of the tree (snapprof.lab.offline) and writes its capture to the guest's outbox, which
    comes back into out_dir when the guest powers off (snapprof.lab.qemu).
    """
    from snapprof.lab.qemu import GUEST_OUTBOX, run_guest

    from snapprof.lab.build import slug

    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{name or slug(distro)}.snap"
    capture = out_dir / name
    if capture.exists():
        capture.unlink()
    argv = ["python3", "-m", "snapprof.lab.offline", "--", "record",
            "-o", f"{GUEST_OUTBOX}/{name}", "--runs", str(runs), *record_args]
    res = run_guest(distro, argv, out_dir, memory=memory, cpus=cpus, timeout=timeout,
                    stream=stream, env={"SNAPPROF_LAB_RECORD_ARGS": " ".join(record_args)}).check()
    if res.returncode != 0:
        kept = f"; the runs it completed are in {capture}" if capture.exists() else ""
        raise SnapprofError(f"snapprof record failed in the {distro} guest (exit "
                            f"{res.returncode}); see {res.console_log}{kept}")
    if not capture.exists():
        raise SnapprofError(f"the {distro} guest finished but wrote no capture "
                            f"({capture}); see {res.console_log}")
    return capture, res


def complete_runs(capture: Path, key: str, record_args: Sequence[str] = ()) -> int:
    """How many complete runs a capture from an earlier session holds for image `key`
    recorded with `record_args` (0 when it is missing, unreadable, or from another image)."""
    from snapprof.capture import CaptureReader

    try:
        with CaptureReader(capture) as rd:
            meta = rd.meta()
            runs = rd.runs()
    except (SnapprofError, OSError, Exception):  # noqa: BLE001 - any unreadable file counts as none
        return 0
    if meta.get("lab_distro") != key or meta.get("lab_record_args", "") != " ".join(record_args):
        return 0
    return sum(1 for r in runs if r.get("status") == "complete")


def record_or_reuse(key: str, runs: int, folder: Path, *, memory: str, cpus: int, timeout: float,
                    record_args: Sequence[str] = (), stream=None, say=None, part: int = 0) -> tuple[Path, bool]:
    """The capture of image `key` in folder/<slug>[-more<part>].snap: reused when an earlier
    (interrupted) job left one with `runs` complete runs of the same image and arguments,
    else recorded now. Returns (capture, reused)."""
    from snapprof.lab import build

    name = build.slug(key) + (f"-more{part}" if part else "")
    capture = folder / f"{name}.snap"
    have = complete_runs(capture, key, record_args)
    if have >= runs:
        if say:
            say(f"{key}: reusing {capture} ({have} complete runs)")
        return capture, True
    build.ensure_image(key, progress=(lambda m: say(f"{key}: {m}")) if say else None)
    if say:
        say(f"{key}: booting and recording {runs} cycle(s)")
    got, res = record_in_guest(key, runs, folder, memory=memory, cpus=cpus, timeout=timeout,
                               record_args=record_args, stream=stream, name=name)
    if say:
        say(f"{key}: {got} (guest run {res.duration_s:.0f} s)")
    return got, False


def write_report(capture: Path, html_path: Path) -> None:
    from snapprof.analysis.frames import load_capture
    from snapprof.report.html import render_html
    from snapprof.report.model import build_model

    _write(html_path, render_html(build_model(load_capture(capture))))


def write_comparison(captures: Sequence[Path], out_dir: Path):
    """compare.html, compare.txt and compare.json in out_dir; returns the Comparison."""
    from snapprof.analysis.compare import compare, group_captures, load_captures
    from snapprof.report.compare_html import render_html
    from snapprof.report.compare_text import render_json, render_text

    cmp = compare(group_captures(load_captures([str(c) for c in captures]), None))
    _write(out_dir / "compare.html", render_html(cmp, []))
    _write(out_dir / "compare.txt", render_text(cmp, []))
    _write(out_dir / "compare.json", render_json(cmp, []))
    return cmp


def headline_table(cmp, names: Sequence[str] = HEADLINE) -> str:
    """Median [95 % CI] per kernel for the headline figures, and each kernel's change
    against the baseline with its verdict. Figures measured nowhere are left out; a figure
    measured on one side only says so."""
    from snapprof.metrics import get
    from snapprof.report.compare_text import median_with_ci, pct, signed, summary_lookup
    from snapprof.report.text import table

    summ = summary_lookup(cmp)
    diffs = {(r["name"], r["label"]): r for r in cmp.diffs.to_dict("records")
             if r["kind"] == "metric"}
    missing = {(r["name"], r["label"]): r["reason"] for r in cmp.not_comparable.to_dict("records")
               if r["kind"] == "metric"}
    apart: dict[str, list[str]] = {}
    header = ["figure"] + [f"{lab}" for lab in cmp.labels]
    header += [f"change ({lab})" for lab in cmp.labels[1:]]
    rows = []
    for name in names:
        cells = [summ.get(("metric", name, lab)) for lab in cmp.labels]
        if not any(c and c.get("n") for c in cells):
            continue
        unit = get(name).unit
        row = [name] + [median_with_ci(c, unit) if c and c.get("n") else "not measured"
                        for c in cells]
        for lab in cmp.labels[1:]:
            d = diffs.get((name, lab))
            if d is not None:
                row.append(f"{signed(d['delta'], unit)} ({pct(d['delta_pct'])}) {d['verdict']}")
            else:
                row.append("not comparable")
                why = missing.get((name, lab), "not measured on one side")
                apart.setdefault(why, []).append(f"{name} ({lab})")
        rows.append(row)
    if not rows:
        return "(no headline figure was measured)"
    # "not comparable" is a short list of its own, each reason once, not a sentence in a cell
    notes = [f"  not comparable: {', '.join(names)}: {why}" for why, names in apart.items()]
    return table(header, rows) + ("\n" + "\n".join(notes) if notes else "")


def lab_compare(distros: Sequence[str], runs: int, out_dir: Path, *, memory: str = "2G",
                cpus: int = 2, timeout: float = 1800, record_args: Sequence[str] = (),
                force: bool = False, stream: IO[str] | None = sys.stdout,
                progress=None) -> tuple[list[KernelRun], object]:
    """The whole job: every distro recorded and reported, then compared."""
    if len(distros) < 2:
        raise SnapprofError("lab compare needs at least two --distro (e.g. --distro bookworm "
                            "--distro trixie)")
    if len(set(distros)) != len(distros):
        raise SnapprofError(f"a --distro is given twice: {' '.join(distros)}")
    if runs < 1:
        raise SnapprofError(f"bad --runs {runs}: give 1 or more")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise SnapprofError(f"{out_dir} exists and is not empty; use --force to reuse it")
    from snapprof.lab import build

    say = progress or (lambda m: print(f"snapprof lab compare: {m}", file=sys.stderr, flush=True))
    for d in distros:  # fail on a bad distro name before booting anything
        build.validate_distro(d)
    done: list[KernelRun] = []
    for d in distros:
        say(f"{d}: image")
        build.ensure_image(d, progress=lambda m, d=d: say(f"{d}: {m}"))
        say(f"{d}: booting and recording {runs} cycle(s)")
        capture, res = record_in_guest(d, runs, out_dir / build.slug(d), memory=memory, cpus=cpus,
                                       timeout=timeout, record_args=record_args, stream=stream)
        html = out_dir / f"{build.slug(d)}.html"
        write_report(capture, html)
        say(f"{d}: {capture} and {html} (guest run {res.duration_s:.0f} s, "
            f"boot {res.boot_s or float('nan'):.0f} s)")
        done.append(KernelRun(d, capture, html, res.boot_s, res.duration_s))
    cmp = write_comparison([k.capture for k in done], out_dir)
    say(f"comparison: {out_dir / 'compare.html'} (also compare.txt, compare.json)")
    return done, cmp


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise SnapprofError(f"cannot write {path}: {exc.strerror}") from None
