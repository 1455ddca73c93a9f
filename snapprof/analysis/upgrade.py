"""Captures recorded before a figure's meaning changed, read with today's meaning.

``freeze_user_ms`` / ``freeze_kernel_ms`` are the freezing as the kernel's "(elapsed N
seconds)" times it (try_to_freeze_tasks' sweeps; snapprof.record.derive). Recorders before
that stored the probes' whole freeze_processes() / freeze_kernel_threads() call under those
names (method probe, source exactly the function's name): 52.9 ms where the kernel said
25 ms on 6.1. Such a row is read as what it is, ``freeze_user_call_ms`` /
``freeze_kernel_call_ms``, and the run's ``freeze_*_ms`` is the kernel's own figure from the
run's log line (method kernel-log, 1 ms resolution) when the capture holds it, else absent
with the reason. Nothing is estimated.
"""

from __future__ import annotations

import pandas as pd

from snapprof.analysis.kmsg import kernel_figures

#: name -> (the function a legacy row timed whole, today's name for that figure)
LEGACY_CALLS = {"freeze_user_ms": ("freeze_processes", "freeze_user_call_ms"),
                "freeze_kernel_ms": ("freeze_kernel_threads", "freeze_kernel_call_ms")}
CALL_SOURCE = ("{fn}: the whole call (stored as {name} by a recorder from before snapprof "
               "timed the freezer's sweeps)")
LOG_SOURCE = "{text} [1 ms resolution, truncated; the kernel's own figure]"
NO_LOG = ("this run's probes timed only the whole {fn}() call ({call}), recorded before snapprof "
          "timed the freezer's sweeps, and its kernel log has no '(elapsed N seconds)' line")
#: the kernel log lines this needs (the compare loader reads only these)
ELAPSED_SQL_LIKE = "%(elapsed %"


def upgrade_freeze_times(frames) -> None:
    """Rename legacy whole-call rows and give their runs the kernel's elapsed (in place)."""
    m = frames.metrics
    if m.empty:
        return
    figs = None
    add, missing = [], []
    for name, (fn, call) in LEGACY_CALLS.items():
        old = (m["name"] == name) & (m["method"] == "probe") & (m["source"] == fn)
        if not old.any():
            continue
        if figs is None:
            figs = kernel_figures(frames.kmsg) if len(frames.kmsg) else None
        runs = [int(r) for r in m.loc[old, "run_id"]]
        m.loc[old, "name"] = call
        m.loc[old, "source"] = CALL_SOURCE.format(fn=fn, name=name)
        logged = {}
        if figs is not None and not figs.empty:
            rows = figs[figs["name"] == name]
            logged = {int(r): (v, t) for r, v, t in zip(rows["run_id"], rows["value"], rows["text"])}
        for rid in runs:
            if rid in logged:
                value, text = logged[rid]
                add.append((rid, name, round(float(value), 3), "ms", "kernel-log",
                            LOG_SOURCE.format(text=text)))
            else:
                missing.append((rid, name, NO_LOG.format(fn=fn, call=call)))
    if add:
        m = pd.concat([m, pd.DataFrame(add, columns=["run_id", "name", "value", "unit", "method",
                                                     "source"])], ignore_index=True)
    frames.metrics = m.reset_index(drop=True)
    if missing:
        nm = frames.not_measured
        keys = {(r, n) for r, n, _ in missing}
        keep = [(int(r), n) not in keys for r, n in zip(nm["run_id"], nm["name"])]
        frames.not_measured = pd.concat(
            [nm[keep], pd.DataFrame(missing, columns=["run_id", "name", "reason"])],
            ignore_index=True)
