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
    (re.compile(r"Need to copy (\d+) pages"), [("copy_needed_pages", 1, 1.0, "pages")]),
    (re.compile(r"Image created \((\d+) pages copied(?:, (\d+) zero pages)?\)"),
     [("copy_pages", 1, 1.0, "pages"), ("zero_pages", 2, 1.0, "pages")]),
    (re.compile(r"Wrote (\d+) kbytes in (\d+\.\d+) seconds \((\d+\.\d+) MB/s\)"),
     [("write_kbytes", 1, 1.0, "kB"), ("write_ms", 2, 1000.0, "ms"),
      ("write_mbps", 3, 1.0, "MB/s")]),
    (re.compile(r"Read (\d+) kbytes in (\d+\.\d+) seconds \((\d+\.\d+) MB/s\)"),
     [("read_kbytes", 1, 1.0, "kB"), ("read_ms", 2, 1000.0, "ms"),
      ("read_mbps", 3, 1.0, "MB/s")]),
]

#: Labels for kernel figures that have no registry metric of their own (each figure above
#: is named after its registry metric, so that the report puts the measured one beside it).
EXTRA_LABELS: dict[str, str] = {}


def kernel_figures(kmsg: pd.DataFrame) -> pd.DataFrame:
    """run_id, name, value, unit, text: one row per figure found in a run's log lines.

    When a line appears twice in a run (it should not), the first occurrence is kept.
    """
    rows = []
    seen = set()
    for run_id, text in zip(kmsg["run_id"], kmsg["text"]):
        if run_id is None or pd.isna(run_id) or not isinstance(text, str):
            continue
        for pattern, fields in _PATTERNS:
            m = pattern.search(text)
            if m is None:
                continue
            for name, group, scale, unit in fields:
                raw = m.group(group)
                if raw is None or (run_id, name) in seen:
                    continue
                seen.add((run_id, name))
                rows.append((int(run_id), name, float(raw) * scale, unit, text))
    return pd.DataFrame(rows, columns=KERNEL_FIGURE_COLUMNS)
