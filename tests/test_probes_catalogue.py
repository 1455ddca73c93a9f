"""The probe catalogue: it loads, it matches the BPF sources, and bad catalogues are refused."""

from __future__ import annotations

import json
import re

import pytest

from snapprof import metrics
from snapprof.errors import SnapprofError
from snapprof.paths import probes_dir
from snapprof.record import catalogue
from snapprof.record.catalogue import AREAS, parse_version

# handler-defining macros in probes/common.h -> which handlers they define
MACROS = {"SPAN_VOID": ("enter", "leave"), "SPAN_INT": ("enter", "leave"),
          "SPAN_ULONG": ("enter", "leave"), "SPAN_ARG_INT": ("enter", "leave"),
          "ENTER_PLAIN": ("enter",), "ENTER_ARG": ("enter",), "LEAVE_VOID": ("leave",),
          "LEAVE_INT": ("leave",), "LEAVE_ULONG": ("leave",)}


def defined_handlers() -> set[str]:
    out = set()
    for path in probes_dir().glob("*.c"):
        text = path.read_text()
        out |= set(re.findall(r"^int ((?:enter|leave|tp)__\w+)\(", text, re.M))
        for macro, kinds in MACROS.items():
            for fn in re.findall(rf"^{macro}\((\w+)", text, re.M):
                out |= {f"{k}__{fn}" for k in kinds}
    return out


def test_shipped_catalogue_loads_and_covers_every_area():
    cat = catalogue.load()
    assert {m.area for m in cat.measurements} == set(AREAS)
    assert [p.name for p in cat.source_files()][0] == "common.h"
    names = [m.name for m in cat.measurements]
    assert len(names) == len(set(names))
    # the cycle boundaries are always attached
    assert {m.name for m in cat.measurements if m.always} == {"freeze_user", "thaw"}


def test_every_catalogue_hook_has_a_bpf_handler():
    cat = catalogue.load()
    have = defined_handlers()
    want = set()
    for m in cat.measurements:
        for p in m.probes:
            for alt in p.alternatives:
                if p.kind == "kprobe":
                    if p.entry:
                        want.add(f"enter__{alt.name}")
                    if p.ret:
                        want.add(f"leave__{alt.name}")
                elif p.kind == "tracepoint":
                    system, event = alt.name.split(":")
                    want.add(f"tp__{system}__{event}")
    assert want - have == set()


PROBE_METRICS = {
    "sync_ms", "freeze_user_ms", "freeze_user_passes", "freeze_user_tasks", "freeze_kernel_ms",
    "freeze_user_call_ms", "freeze_kernel_call_ms", "copy_needed_pages",
    "freeze_kernel_passes", "freeze_kernel_tasks", "freeze_user_woken", "freeze_kernel_woken", "freeze_failed_tasks", "thaw_kernel_ms", "thaw_ms",
    "prealloc_ms", "prealloc_result", "saveable_pages", "saveable_after_pages",
    "prealloc_requested_pages", "prealloc_got_pages", "preallocated_pages", "shrink_requested_pages",
    "shrink_reclaimed_pages", "shrink_ms", "copy_pages", "zero_pages", "meta_pages", "image_pages",
    "copy_window_ms", "device_suspend_ms", "device_resume_ms", "device_callbacks", "device_errors",
    "write_ms", "write_kbytes", "write_mbps", "read_ms", "read_kbytes", "read_mbps"}


def test_catalogue_metrics_are_the_probe_metrics():
    cat = catalogue.load()
    yielded = {x for m in cat.measurements for x in m.metrics}
    assert yielded <= set(metrics.REGISTRY)
    assert yielded == PROBE_METRICS


def test_version_bounds():
    assert parse_version("6.12.117+deb13-amd64") == (6, 12)
    assert parse_version("6.1.0-50-amd64") == (6, 1)
    assert parse_version("7.2") == (7, 2)
    assert parse_version("garbage") is None
    cat = catalogue.load()
    alt = cat.get("save_image_compressed").probes[0].alternatives
    assert [a.in_version((6, 1)) for a in alt] == [True, False]
    assert [a.in_version((6, 12)) for a in alt] == [False, True]


def _write(tmp_path, doc):
    for f in ("a.c",):
        (tmp_path / f).write_text("")
    p = tmp_path / "cat.json"
    p.write_text(json.dumps(doc) if isinstance(doc, dict) else doc)
    return p


def _doc(**measurement):
    m = {"name": "x", "area": "freezer",
         "probes": [{"kind": "kprobe", "alternatives": [{"function": "f"}], "reads": {"entry": "t"}}],
         "metrics": ["sync_ms"]}
    m.update(measurement)
    return {"format": 1, "files": ["a.c"], "measurements": [m]}


@pytest.mark.parametrize("doc, message", [
    ("{not json", "bad JSON at line 1"),
    ({"format": 2, "measurements": []}, "unknown catalogue format"),
    (_doc(area="disk"), "unknown area 'disk'"),
    (_doc(metrics=["no_such_metric"]), "metric 'no_such_metric' is not in snapprof/metrics.py"),
    (_doc(probes=[{"kind": "uprobe", "alternatives": [{"function": "f"}]}]), "unknown probe kind"),
    (_doc(probes=[{"kind": "kprobe", "alternatives": [{"function": "f"}], "reads": {}}]),
     "reads neither entry nor return"),
    (_doc(probes=[{"kind": "tracepoint", "alternatives": [{"tracepoint": "power_suspend"}]}]),
     "is not 'system:event'"),
    (_doc(probes=[{"kind": "kprobe", "alternatives": [{"function": "f", "since": "six"}],
                   "reads": {"entry": "t"}}]), "bad kernel version 'six'"),
    ({"format": 1, "files": ["missing.c"], "measurements": []}, "missing.c listed in 'files' is missing"),
])
def test_bad_catalogues_are_one_line_errors(tmp_path, doc, message):
    with pytest.raises(SnapprofError, match=re.escape(message)):
        catalogue.load(_write(tmp_path, doc))


def test_duplicate_measurement_and_missing_file(tmp_path):
    doc = _doc()
    doc["measurements"].append(dict(doc["measurements"][0]))
    with pytest.raises(SnapprofError, match="defined twice"):
        catalogue.load(_write(tmp_path, doc))
    with pytest.raises(SnapprofError, match="no such file"):
        catalogue.load(tmp_path / "nope.json")
