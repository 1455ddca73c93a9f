"""The kernel's own figures, parsed from the log lines stored with each run.

They are the ground truth that probe measurements are checked against ("Freezing user
space processes completed (elapsed 0.028 seconds)", "Image created (N pages copied, M zero
pages)", ...). Each parsed figure is named after the registry metric it corresponds to.
"""

from __future__ import annotations

import re

import pandas as pd

KERNEL_FIGURE_COLUMNS = ["run_id", "name", "value", "unit", "text"]

# (regex, [(metric name, group, scale, unit), ...]); groups that did not match give no figure
_PATTERNS: list[tuple[re.Pattern, list[tuple[str, int, float, str]]]] = [
    (re.compile(r"Filesystems sync: (\d+\.\d+) seconds"), [("sync_ms", 1, 1000.0, "ms")]),
    (re.compile(r"Freezing user space processes completed \(elapsed (\d+\.\d+) seconds\)"),
     [("freeze_user_ms", 1, 1000.0, "ms")]),
    (re.compile(r"Freezing remaining freezable tasks completed \(elapsed (\d+\.\d+) seconds\)"),
     [("freeze_kernel_ms", 1, 1000.0, "ms")]),
    (re.compile(r"Allocated (\d+) pages for snapshot"), [("preallocated_pages", 1, 1.0, "pages")]),
    (re.compile(r"Allocated (\d+) kbytes in (\d+\.\d+) seconds"),
     [("prealloc_ms", 2, 1000.0, "ms")]),
    (re.compile(r"Need to copy (\d+) pages"), [("need_copy_pages", 1, 1.0, "pages")]),
    (re.compile(r"Image created \((\d+) pages copied(?:, (\d+) zero pages)?\)"),
     [("copy_pages", 1, 1.0, "pages"), ("zero_pages", 2, 1.0, "pages")]),
    (re.compile(r"Wrote (\d+) kbytes in (\d+\.\d+) seconds \((\d+\.\d+) MB/s\)"),
     [("write_kbytes", 1, 1.0, "kB"), ("write_ms", 2, 1000.0, "ms"),
      ("write_mbps", 3, 1.0, "MB/s")]),
    (re.compile(r"Read (\d+) kbytes in (\d+\.\d+) seconds \((\d+\.\d+) MB/s\)"),
     [("read_kbytes", 1, 1.0, "kB"), ("read_ms", 2, 1000.0, "ms"),
      ("read_mbps", 3, 1.0, "MB/s")]),
]

#: Labels for kernel figures that have no registry metric of their own.
EXTRA_LABELS = {"need_copy_pages": "Pages to copy (kernel's count before the copy)"}


def kernel_figures(kmsg: pd.DataFrame) -> pd.DataFrame:
    """run_id, name, value, unit, text: one row per figure found in a run's log lines.

    When a line appears twice in a run (it should not), the first occurrence is kept.
    """
    rows = []
    texts = kmsg["text"].astype(str)
    for pattern, fields in _PATTERNS:
        matches = texts.str.extract(pattern)
        hit = matches.notna().any(axis=1)
        if not hit.any():
            continue
        for name, group, scale, unit in fields:
            vals = pd.to_numeric(matches.loc[hit, group - 1], errors="coerce") * scale
            part = pd.DataFrame({"run_id": kmsg.loc[hit, "run_id"], "name": name,
                                 "value": vals, "unit": unit, "text": texts[hit]})
            rows.append(part[part["value"].notna()])
    if not rows:
        return pd.DataFrame(columns=KERNEL_FIGURE_COLUMNS)
    out = pd.concat(rows, ignore_index=True)
    out = out[out["run_id"].notna()]
    out["run_id"] = out["run_id"].astype("int64")
    return out.drop_duplicates(["run_id", "name"], keep="first")[KERNEL_FIGURE_COLUMNS]
