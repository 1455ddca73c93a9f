"""KernelCI (KCIDB) test records: one per headline figure per run of a capture.

Schema: KCIDB I/O **v5.3** (``kcidb_io.schema.V5_3``, the kcidb-io package from PyPI,
the newest it publishes); the document is validated against it before it is written.

Each record: ``path`` ``snapprof.hibernation.<figure>``, ``status`` (PASS: the run
completed and measured the figure; SKIP: the run completed without measuring it — no
number, the reason in ``misc``; FAIL: the run failed; ERROR: the run did not finish),
``number`` {value, unit} only for a measured figure (never a made-up 0), ``duration``
(the cycle's seconds, when both ends were stamped), and ``misc`` with the capture id (the
SHA-256 of the capture file, as ``snapprof pool`` names it), run, method and kernel.
"""

from __future__ import annotations

import json
import math

from snapprof.analysis.summary import not_measured_reason
from snapprof.report.model import HEADLINE

ORIGIN = "snapprof"
STATUS = {"complete": "PASS", "failed": "FAIL", "incomplete": "ERROR"}


def schema():
    from kcidb_io.schema import V5_3
    return V5_3


def build_records(frames, capture_id: str) -> dict:
    """The KCIDB document (``{"version": ..., "tests": [...]}``) of one capture's frames."""
    meta = frames.meta
    release = str(meta.get("kernel_release") or "unknown")
    metrics = frames.metrics.set_index(["run_id", "name"]) if not frames.metrics.empty else None
    tests = []
    for run in frames.runs.itertuples(index=False):
        rid = int(run.run_id)
        for name in HEADLINE:
            rec = {"build_id": f"{ORIGIN}:{release}", "origin": ORIGIN,
                   "id": f"{ORIGIN}:{capture_id[:16]}-run{rid}-{name}",
                   "path": f"snapprof.hibernation.{name}",
                   "status": STATUS.get(run.status, "ERROR")}
            misc = {"capture_id": capture_id, "run_id": rid, "run_status": run.status,
                    "kernel_release": release, "host": meta.get("hostname"),
                    "trigger": run.trigger or meta.get("trigger"),
                    "snapprof_version": meta.get("snapprof_version")}
            row = None
            if metrics is not None and (rid, name) in metrics.index:
                row = metrics.loc[(rid, name)]
                if hasattr(row, "iloc") and getattr(row, "ndim", 1) == 2:
                    row = row.iloc[0]
            if row is not None and math.isfinite(float(row["value"])):
                rec["number"] = {"value": float(row["value"]), "unit": str(row["unit"])}
                misc["method"] = str(row["method"])
            else:
                misc["not_measured"] = not_measured_reason(frames, name, [rid])
                if rec["status"] == "PASS":
                    rec["status"] = "SKIP"
            if run.error:
                misc["error"] = str(run.error)
            start, end = run.started_ns, run.ended_ns
            if start is not None and end is not None and not (math.isnan(start) or math.isnan(end)):
                rec["duration"] = (end - start) / 1e9
            rec["misc"] = {k: v for k, v in misc.items() if v is not None}
            tests.append(rec)
    v = schema()
    doc = {"version": {"major": v.major, "minor": v.minor}, "tests": tests}
    v.validate(doc)
    return doc


def render_records(doc: dict) -> str:
    from snapprof.termsafe import json_text
    return json_text(json.dumps(doc, ensure_ascii=False, indent=1, allow_nan=False)) + "\n"
