"""The decision at one step of a bisection: is this kernel build like the good one, or has
the figure moved past the threshold as it had on the bad one?

The threshold is `compare --fail-on`'s (``image_pages>+5%``), evaluated on the 95 %
interval of the shift between the good build (baseline) and the tested one:

- "bad": the whole interval is past the threshold (``>``: above it; ``<``: below it);
- "good": the whole interval is on the good side of it;
- "undecided": the interval straddles the threshold, or there is none (too few runs),
  or the figure was not measured on one side. More runs may decide it; nothing is guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from snapprof import metrics as registry
from snapprof.analysis.compare import Threshold, compare
from snapprof.analysis.phases import PHASE_ORDER
from snapprof.errors import SnapprofError


@dataclass
class StepVerdict:
    decision: str  # good, bad, undecided
    detail: str
    row: dict | None


def check_threshold_name(th: Threshold) -> None:
    """A threshold must name a figure snapprof knows (before any kernel is booted)."""
    if th.name not in registry.REGISTRY and th.name not in PHASE_ORDER:
        near = sorted(n for n in registry.REGISTRY if th.name.split("_")[0] in n)[:6]
        raise SnapprofError(f"--fail-on {th.expr!r} names no figure: {th.name!r} is neither a metric nor a "
                            f"phase{'; did you mean ' + ', '.join(near) if near else ''} "
                            "(snapprof report --format json lists them)")


def decide(good: list, tested: list, th: Threshold, good_label: str = "good",
           tested_label: str = "tested") -> StepVerdict:
    """Compare the tested build's captures against the good build's on the threshold."""
    cmp = compare({good_label: good, tested_label: tested})
    kind = "phase" if th.name in PHASE_ORDER and th.name not in registry.REGISTRY else "metric"
    row = cmp.row(kind, th.name, tested_label)
    if row is None:
        nc = cmp.not_comparable
        hit = nc[(nc["name"] == th.name) & (nc["label"] == tested_label)]
        why = hit.iloc[0]["reason"] if not hit.empty else "not measured on either build"
        return StepVerdict("undecided", f"{th.name} cannot be compared: {why}", None)
    lo, hi = (row["ci_low_pct"], row["ci_high_pct"]) if th.percent else (row["ci_low"], row["ci_high"])
    unit = "%" if th.percent else f" {row['unit']}"
    med = row["delta_pct"] if th.percent else row["delta"]
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return StepVerdict("undecided", f"change {med:+.4g}{unit}: no {int(cmp.level * 100)} % interval "
                           f"with {row['n_base']} and {row['n']} runs ({row['verdict']})", row)
    span = f"{int(cmp.level * 100)} % interval of the change {lo:+.4g}..{hi:+.4g}{unit}, p {row['p']:.2g}"
    past = lo > th.value if th.op == ">" else hi < th.value
    clear = hi < th.value if th.op == ">" else lo > th.value
    if past:
        return StepVerdict("bad", f"{span}: entirely {'above' if th.op == '>' else 'below'} "
                           f"{th.value:+g}{unit}", row)
    if clear:
        return StepVerdict("good", f"{span}: entirely {'below' if th.op == '>' else 'above'} "
                           f"{th.value:+g}{unit}", row)
    return StepVerdict("undecided", f"{span}: straddles {th.value:+g}{unit}", row)
