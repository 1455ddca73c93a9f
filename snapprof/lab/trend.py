"""`snapprof lab trend`: one userspace, a row of kernel builds, each figure against version.

For each kernel (oldest first): build its image on the suite's userspace if needed, boot it,
record N `/dev/snapshot` cycles, bring the capture back and write its report. Then the
trend (snapprof.analysis.trend): every headline figure's median and 95 % interval per
kernel, and the steps between consecutive kernels the statistics call real.

Output folder:
    DIR/<image>/<image>.snap, console.log   each kernel's capture and guest console
    DIR/<image>.html                        each kernel's report
    DIR/trend.html, trend.txt, trend.json   the trend

Resumable: a kernel whose capture is already in DIR with N complete runs from the same
image and record arguments is not recorded again.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

from snapprof.errors import SnapprofError


@dataclass
class TrendResult:
    trend: object
    keys: list[str]
    captures: dict[str, Path]
    reports: dict[str, str]
    seconds: float


def resolve_kernels(suite: str, specs: Sequence[str], lab=None) -> list[str]:
    """Image keys for --kernels, oldest first; duplicates and unknown versions refused."""
    from snapprof.lab import archive, build

    build.validate_suite(suite)
    if len(specs) < 2:
        raise SnapprofError(f"a trend needs at least two kernels, got {len(specs)}: "
                            "--kernels 6.12,6.16,7.3")
    builds = archive.list_kernels(suite, lab)
    keys = [build.resolve_key(suite, s, lab, builds) for s in specs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise SnapprofError(f"--kernels names the same build twice: {', '.join(dup)}")
    base = build.load_image(suite, lab)
    own = base.kernel_release if base else archive.default_release(suite, lab)
    release = {k: build.split_key(k)[1] or own for k in keys}
    return sorted(keys, key=lambda k: archive.release_key(release[k] or ""))


def record_all(keys: Sequence[str], runs: int, out_dir: Path, *, memory: str, cpus: int, timeout: float,
               record_args: Sequence[str], stream, say) -> tuple[dict[str, Path], dict[str, str]]:
    """Record (or reuse) and report every image key; {key: capture}, {label: report file}."""
    from snapprof.lab import build
    from snapprof.lab.compare import record_or_reuse, write_report

    captures, reports = {}, {}
    for i, key in enumerate(keys, 1):
        say(f"[{i}/{len(keys)}] {key}")
        cap, _reused = record_or_reuse(key, runs, out_dir / build.slug(key), memory=memory, cpus=cpus,
                                       timeout=timeout, record_args=record_args, stream=stream, say=say)
        html = out_dir / f"{build.slug(key)}.html"
        if not html.exists() or html.stat().st_mtime < cap.stat().st_mtime:
            write_report(cap, html)
        captures[key] = cap
        reports[key] = html.name
    return captures, reports


def labelled(captures: dict[str, Path]) -> tuple[dict[str, list], dict[str, str]]:
    """{kernel release: [frames]} in the order given, and image key -> label."""
    from snapprof.analysis.compare import load_captures

    frames = load_captures([str(p) for p in captures.values()])
    groups, labels = {}, {}
    for key, f in zip(captures, frames):
        lab = f.meta.get("kernel_release") or key
        groups.setdefault(lab, []).append(f)
        labels[key] = lab
    return groups, labels


def lab_trend(suite: str, kernels: Sequence[str], runs: int, out_dir: Path, *, memory: str = "2G",
              cpus: int = 2, timeout: float = 1800, record_args: Sequence[str] = (),
              stream: IO[str] | None = sys.stdout, progress=None) -> TrendResult:
    from snapprof.analysis.trend import build_trend
    from snapprof.lab.compare import _write
    from snapprof.report import trend as rt

    if runs < 1:
        raise SnapprofError(f"bad --runs {runs}: give 1 or more (4 or more for a verdict on a step)")
    say = progress or (lambda m: print(f"snapprof lab trend: {m}", file=sys.stderr, flush=True))
    t0 = time.monotonic()
    keys = resolve_kernels(suite, kernels)
    say(f"{len(keys)} kernels on {suite}'s userspace: {', '.join(keys)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    captures, reports = record_all(keys, runs, out_dir, memory=memory, cpus=cpus, timeout=timeout,
                                   record_args=record_args, stream=stream, say=say)
    groups, labels = labelled(captures)
    trend = build_trend(groups)
    by_label = {labels[k]: reports[k] for k in keys}
    _write(out_dir / "trend.html", rt.render_html(trend, by_label))
    _write(out_dir / "trend.txt", rt.render_text(trend, by_label))
    _write(out_dir / "trend.json", rt.render_json(trend, by_label))
    say(f"trend: {out_dir / 'trend.html'} (also trend.txt, trend.json)")
    return TrendResult(trend, keys, captures, by_label, time.monotonic() - t0)
