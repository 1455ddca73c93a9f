"""A capture as CSV: one table per capture table, written by pandas (``to_csv(index=False)``).

``tables(frames)`` returns {name: DataFrame} for meta, probes, runs, metrics, not_measured,
phases, tasks, devices, kmsg, events; ``render_csv`` turns one into text. Absent values
(NULL/NaN) stay empty cells, never 0; records end in CRLF and fields are quoted as RFC 4180
says (the exact text of the capture, control characters included); a metric a run did not measure has no row in
``metrics`` (its reason, when known, is in ``not_measured``).
"""

from __future__ import annotations

import pandas as pd

from snapprof.analysis.frames import CaptureFrames

TABLES = ("meta", "probes", "runs", "metrics", "not_measured", "phases", "tasks",
          "devices", "kmsg", "events")


def tables(frames: CaptureFrames) -> dict[str, pd.DataFrame]:
    """Every capture table as a data frame, in TABLES order (meta as key/value rows)."""
    meta = pd.DataFrame(sorted(frames.meta.items()), columns=["key", "value"])
    return {"meta": meta, **{name: getattr(frames, name) for name in TABLES[1:]}}


def render_csv(table: pd.DataFrame) -> str:
    """CSV text; float columns holding only whole numbers (ns, counts) print without ".0",
    and NaN stays an empty cell."""
    table = table.copy()
    for col in table.columns:
        s = table[col]
        if pd.api.types.is_float_dtype(s):
            present = s.dropna()
            if len(present) and (present == present.round()).all() \
                    and present.abs().max() < 2**53:
                table[col] = s.astype("Int64")
    # RFC 4180: CRLF between records, so the csv module's QUOTE_MINIMAL quotes any field
    # holding a CR or an LF (with a bare LF terminator a lone CR went unquoted and split rows)
    return table.to_csv(index=False, lineterminator="\r\n")
