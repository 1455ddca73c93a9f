"""`snapprof lab bisect`: the first Debian kernel build at which a figure changed.

Over the ordered list of installable builds between --good and --bad (the suite and its
backports, `snapprof lab kernels`), on the suite's userspace: record the good and the bad
build, check that the bad one is past the threshold (`compare --fail-on` language, e.g.
``image_pages>+5%``) and the good one is not, then halve the range: record the middle
build and compare it with the good one (snapprof.analysis.bisect.decide). A step whose
95 % interval straddles the threshold gets more runs (another boot, pooled) up to
--max-runs; if it is still undecided the bisection stops there and says so: it never
guesses.

Output folder: DIR/<image>/<image>[-moreN].snap per build, DIR/bisect.txt and bisect.json.
An interrupted bisect run again with the same arguments reuses every capture it has.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Sequence

from snapprof.errors import SnapprofError


@dataclass
class Step:
    number: int
    key: str
    release: str
    position: str  # "build 12 of 33"
    runs: int
    decision: str
    detail: str
    boots: int


@dataclass
class BisectResult:
    threshold: str
    builds: list[str]
    steps: list[Step] = field(default_factory=list)
    first_bad: str | None = None
    last_good: str | None = None
    outcome: str = ""  # found, undecided, no change
    message: str = ""
    captures: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


def bisect_range(suite: str, good: str, bad: str, lab=None, builds=None) -> list:
    """The installable builds from --good to --bad inclusive, oldest first."""
    from snapprof.lab import archive

    builds = archive.list_kernels(suite, lab) if builds is None else builds
    g = archive.resolve(suite, good, builds, lab)
    b = archive.resolve(suite, bad, builds, lab)
    ok = [x for x in builds if x.installable]
    gi, bi = ok.index(g), ok.index(b)
    if gi > bi:
        raise SnapprofError(f"--good {good} ({g.release}) is newer than --bad {bad} ({b.release}): "
                            "give the older build as --good")
    if gi == bi:
        raise SnapprofError(f"--good {good} and --bad {bad} are the same build ({g.release}): a bisection "
                            "needs a range of at least two builds")
    return ok[gi:bi + 1]


class _Recorder:
    """Captures per image key, recorded (or reused) in parts until a step has enough runs."""

    def __init__(self, out_dir, runs, record_kw, say):
        self.out_dir, self.runs, self.kw, self.say = out_dir, runs, record_kw, say
        self.parts: dict[str, list[Path]] = {}

    def ensure(self, key: str, parts: int = 1) -> list[Path]:
        from snapprof.lab import build
        from snapprof.lab.compare import record_or_reuse

        have = self.parts.setdefault(key, [])
        while len(have) < parts:
            cap, _ = record_or_reuse(key, self.runs, self.out_dir / build.slug(key), say=self.say,
                                     part=len(have), **self.kw)
            have.append(cap)
        return have

    def frames(self, key: str) -> list:
        from snapprof.analysis.compare import load_captures

        return load_captures([str(p) for p in self.parts[key]])


def _complete(frames) -> int:
    return sum(int((f.runs["status"] == "complete").sum()) for f in frames)


def lab_bisect(suite: str, good: str, bad: str, fail_on: str, out_dir: Path, *, runs: int = 5,
               max_runs: int = 15, memory: str = "2G", cpus: int = 2, timeout: float = 1800,
               record_args: Sequence[str] = (), stream: IO[str] | None = sys.stdout,
               progress=None, echo=print) -> BisectResult:
    from snapprof.analysis.bisect import check_threshold_name, decide
    from snapprof.analysis.compare import parse_threshold
    from snapprof.lab import build

    say = progress or (lambda m: print(f"snapprof lab bisect: {m}", file=sys.stderr, flush=True))
    th = parse_threshold(fail_on)
    check_threshold_name(th)
    if runs < 4:
        raise SnapprofError(f"bad --runs {runs}: a step needs 4 or more runs a build for a 95 % verdict")
    if max_runs < runs:
        raise SnapprofError(f"--max-runs {max_runs} is below --runs {runs}")
    t0 = time.monotonic()
    span = bisect_range(build.validate_suite(suite), good, bad)
    keys = [build.resolve_key(suite, b.release) for b in span]
    rel = {k: b.release for k, b in zip(keys, span)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = BisectResult(threshold=th.expr, builds=[b.release for b in span])
    rec = _Recorder(out_dir, runs, dict(memory=memory, cpus=cpus, timeout=timeout, record_args=record_args,
                                        stream=stream), say)
    echo(f"bisect {th.expr} over {len(span)} {suite} builds, {span[0].release} (good) .. "
         f"{span[-1].release} (bad): at most {max(1, (len(span) - 2).bit_length())} steps between them")

    def step(i: int, role: str) -> str:
        key = keys[i]
        parts = 1
        while True:
            rec.ensure(key, parts)
            rec.ensure(keys[0], 1)
            cur = rec.frames(key)
            if i == 0:  # the good build against itself tells nothing; checked with the bad one
                return "good"
            v = decide(rec.frames(keys[0]), cur, th, rel[keys[0]], rel[key])
            n = _complete(cur)
            # bounded by the runs asked for (a boot whose runs failed still counts)
            if v.decision != "undecided" or (parts + 1) * runs > max_runs:
                break
            echo(f"  {rel[key]}: undecided with {n} complete runs ({v.detail}); recording {runs} more")
            parts += 1
        s = Step(len(res.steps) + 1, key, rel[key], f"build {i + 1} of {len(span)} ({role})", n, v.decision,
                 v.detail, parts)
        res.steps.append(s)
        echo(f"step {s.number}: {s.release} [{s.position}]: {s.decision.upper()} — {s.detail} "
             f"({n} runs against {_complete(rec.frames(keys[0]))})")
        return v.decision

    try:
        lo, hi = 0, len(span) - 1
        step(lo, "good")
        first = step(hi, "bad")
        if first == "good":
            res.outcome = "no change"
            res.message = (f"{span[-1].release} is not past {th.expr} against {span[0].release}: "
                           "nothing to bisect")
        elif first == "undecided":
            res.outcome = "undecided"
            res.message = (f"{span[-1].release} against {span[0].release} is undecided on {th.expr} even "
                           f"with up to {max_runs} runs: nothing to bisect")
        else:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                d = step(mid, "middle")
                if d == "bad":
                    hi = mid
                elif d == "good":
                    lo = mid
                else:
                    res.outcome = "undecided"
                    res.message = (f"undecided at {span[mid].release} with up to {max_runs} runs: the first bad "
                                   f"build is after {span[lo].release} and at or before {span[hi].release}")
                    break
            else:
                res.outcome = "found"
                res.first_bad, res.last_good = span[hi].release, span[lo].release
                res.message = f"first bad build {span[hi].release}; last good build {span[lo].release}"
            if res.outcome == "undecided":
                res.first_bad, res.last_good = None, span[lo].release
    finally:
        res.captures = {rel[k]: [str(p) for p in v] for k, v in rec.parts.items()}
        res.seconds = time.monotonic() - t0
        (out_dir / "bisect.json").write_text(json.dumps(asdict(res), indent=1) + "\n")
    text = [f"bisect {th.expr} on {suite}: {res.outcome}: {res.message}"]
    text += [f"  step {s.number}: {s.release} [{s.position}] {s.decision}: {s.detail}" for s in res.steps]
    text += [f"  captures of {r}: {', '.join(c)}" for r, c in res.captures.items()]
    text += [f"  {res.seconds:.0f} s"]
    (out_dir / "bisect.txt").write_text("\n".join(text) + "\n")
    echo(text[0])
    return res
