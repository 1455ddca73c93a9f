"""One capture's frames as rows of the dataset's tables (snapprof.fleet.layout.SCHEMAS).

The frames are those ``snapprof compare`` reads (``analysis.compare.load_captures(...,
for_compare=True)``): derived figures and phases included, device callbacks summed per run
and device (the per-callback rows stay in the capture), so a pooled comparison sees exactly
what the in-memory one sees. What a capture did not measure stays absent: no row, or NULL.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from snapprof.analysis import composition
from snapprof.analysis.compare import USERSPACE_KEYS
from snapprof.analysis.derived import image_compressor
from snapprof.analysis.failures import failed_runs
from snapprof.analysis.summary import summary_runs
from snapprof.fleet.layout import SCHEMAS

#: meta keys that may name the host's model (DMI), first found wins; none in lab captures
HOST_MODEL_KEYS = ("host_model", "product_name", "dmi_product_name", "board_name")


def _text(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def _column(series: pd.Series, typ):
    """One column as an Arrow array of the schema's type (NULL where absent)."""
    import pyarrow as pa

    if str(typ) == "string":
        try:
            return pa.array(series, type=typ, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a stray non-text value: as text
            return pa.array([_text(v) for v in series.tolist()], type=typ)
    if str(typ) in ("double", "int64"):
        num = pd.to_numeric(series, errors="coerce")
        if str(typ) == "double":
            return pa.array(num.astype("float64").to_numpy(), type=typ, from_pandas=True)
        return pa.array(num.astype("Float64").round(), type=pa.float64(), from_pandas=True).cast(typ)
    return pa.array(series.to_numpy(), type=typ, from_pandas=True)


def _frame(table: str, df: pd.DataFrame, ident: dict):
    """``df`` as an Arrow table of the schema's columns: ident columns filled, types coerced."""
    import pyarrow as pa

    schema = SCHEMAS[table]
    n = len(df)
    cols = []
    for f in schema:
        name = f.name
        if name in ident:
            cols.append(pa.array([ident[name]] * n, type=f.type))
        elif name == "seq" and name not in df.columns:  # row order within the capture
            cols.append(pa.array(np.arange(n, dtype="int64")))
        elif name not in df.columns:
            cols.append(pa.nulls(n, type=f.type))
        else:
            cols.append(_column(df[name], f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _first_counted(df: pd.DataFrame, key: str, value: str) -> np.ndarray:
    """True on the row that counts for its (run_id, key): the first with a value, as
    ``pivot_table(aggfunc="first")`` takes it in ``analysis.compare``."""
    has = df[value].notna().to_numpy()
    counted = np.zeros(len(df), dtype=bool)
    if len(df):
        sub = df.loc[has, ["run_id", key]]
        counted[np.flatnonzero(has)[~sub.duplicated(keep="first").to_numpy()]] = True
    return counted


def capture_rows(frames, capture_id: str, seq: int, batch: str) -> dict[str, pd.DataFrame]:
    """Table name -> rows (an Arrow table of the schema) of one capture."""
    meta = frames.meta
    release = (meta.get("kernel_release") or "").strip() or None
    ident = {"capture_id": capture_id, "kernel_release": release}
    comp = image_compressor(frames)
    kinds = {it["run_id"]: it["kind"] for it in failed_runs(frames)}
    runs = frames.runs.assign(failure_kind=[kinds.get(int(r)) for r in frames.runs["run_id"]])
    userspace = ", ".join(f"{what} {meta[key]}" for key, what in USERSPACE_KEYS if meta.get(key))
    model = next((meta[k] for k in HOST_MODEL_KEYS if meta.get(k)), None)
    probes = [[_text(r.name), _text(r.area), _text(r.target), bool(r.attached), _text(r.reason)]
              for r in frames.probes.itertuples(index=False)]
    cap = pd.DataFrame([{
        "seq": seq, "batch": batch, "source": frames.source,
        "host": meta.get("hostname"), "host_model": model, "machine": meta.get("machine"),
        "kernel_version": meta.get("kernel_version"), "userspace": userspace or None,
        "distro": meta.get("distro"), "libc_version": meta.get("libc_version"),
        "python_version": meta.get("python_version"), "bcc_version": meta.get("bcc_version"),
        "trigger": meta.get("trigger"), "compressor": comp[0] if comp else None,
        "compressor_how": comp[1] if comp else None, "recorded_at": meta.get("recorded_at"),
        "snapprof_version": meta.get("snapprof_version"), "runs_total": len(frames.runs),
        "runs_complete": len(summary_runs(frames)),
        "composition_absent": composition.absent_reason(frames),
        "meta": json.dumps({str(k): _text(v) for k, v in meta.items()}, ensure_ascii=False),
        "probes": json.dumps(probes, ensure_ascii=False),
        "warnings": json.dumps(list(frames.warnings), ensure_ascii=False)}])
    cap["seq"] = cap["seq"].astype("int64")
    phases = frames.phases.assign(counted=_first_counted(frames.phases, "phase", "duration_ms"))
    return {
        "captures": _frame("captures", cap, ident),
        "runs": _frame("runs", runs, ident),
        "metrics": _frame("metrics", frames.metrics, ident),
        "not_measured": _frame("not_measured", frames.not_measured, ident),
        "phases": _frame("phases", phases, ident),
        "tasks": _frame("tasks", frames.tasks, ident),
        "devices": _frame("devices", frames.device_totals(), ident),
        "culprits": _frame("culprits", frames.culprits, ident),
        "processes": _frame("processes", frames.processes, ident),
    }
