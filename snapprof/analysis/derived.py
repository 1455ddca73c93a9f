"""Figures the analysis derives from what a capture holds (never from a guess).

* ``compression_ratio``: the writing kernel's two log figures "Image size after
  compression: N kbytes" (``write_compressed_kbytes``) over "Wrote N kbytes"
  (``write_kbytes``), i.e. compressed size / image size: 0.37 means the image took 37 % of
  its size on disk. Method kernel-log (both inputs are), saying it is derived from which
  two; absent when either input is.
* ``resume_ms``: the restored kernel's resume after a real hibernation, on its own
  CLOCK_BOOTTIME, from where its clock runs again after the copy (the sleep-time report, else
  the end of the phase that holds the clock jump: ``phases.after_copy``) to the end of thaw
  (user space running again). What comes before it (the boot kernel's boot, its image read,
  its jump into the image) is the time away, which no clock in a capture splits up apart
  from the image read (``read_ms``).

* ``image_pages`` / ``image_bytes`` of a real hibernation whose restored system could not
  tell the image's size (a kernel that leaves zero pages out: snapprof.record.image), from
  the writing kernel's own line "Saving image data pages (N pages)" / "Compressing and
  saving image data (N pages)" (``write_pages``, the image less its header page, as the
  lab joins it from that kernel's console): image_pages = write_pages + 1, image_bytes =
  that x the page size the same kernel's "Wrote N kbytes" gives (write_kbytes x 1024 /
  write_pages). Only where the run has none: probes before the copy and the kernel's
  "Need to copy" come first (the recorder); the run's reason for the missing figure goes.

A run that lacks a derived figure gets a ``not_measured`` row saying why (the reason of the
missing input, or why the figure does not apply), like a recorded figure.

``image_compressor`` tells which compressor wrote a capture's image, and how that is known.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from snapprof.analysis.phases import CLOCK_JUMP
from snapprof.analysis.upgrade import upgrade_freeze_times
from snapprof.metrics import DERIVED

RATIO = "compression_ratio"
RESUME = "resume_ms"
RATIO_INPUTS = ("write_compressed_kbytes", "write_kbytes")
RATIO_SOURCE = ("derived: write_compressed_kbytes / write_kbytes, both from the writing "
                "kernel's log ('Image size after compression: N kbytes' / 'Wrote N kbytes')")
RATIO_METHOD = "kernel-log, derived: write_compressed_kbytes / write_kbytes"
#: Method suffix of resume_ms (its base methods are those of the phase ends it spans).
RESUME_DERIVED = ", derived: clock restart after the copy to thaw end"
#: Trigger of a run whose image was written by the kernel and restored at the next boot.
REAL_HIBERNATION = "hibernate"


def add_derived(frames) -> None:
    """Append the derived figures of every run to ``frames.metrics`` and the reasons for the
    missing ones to ``frames.not_measured`` (in place). Needs ``frames.phases``. A figure
    the capture already holds for a run is left as it is."""
    add_derived_all([frames])


def add_derived_all(frames_list) -> None:
    """``add_derived`` for many captures in one ``derive`` call (its cost is mostly per call):
    run ids moved apart by capture, as ``compare.load_captures`` does for the phases."""
    if not frames_list:
        return
    for f in frames_list:  # a recorder's placeholder reason for a figure only worked out here
        f.not_measured = f.not_measured[~f.not_measured["name"].isin(DERIVED)]
        upgrade_freeze_times(f)  # older captures' whole-call freezer figures, renamed

    def joined(attr, cols):
        return pd.concat([getattr(f, attr)[cols].assign(
            run_id=getattr(f, attr)["run_id"].astype("int64") + (i << 32))
            for i, f in enumerate(frames_list)], ignore_index=True)

    metrics, nm = derive(joined("runs", ["run_id", "trigger"]),
                         joined("metrics", ["run_id", "name", "value"]),
                         joined("not_measured", ["run_id", "name", "reason"]),
                         joined("phases", ["run_id", "phase", "start_ns", "end_ns", "method"]))
    image = image_from_console(joined("runs", ["run_id", "trigger"]),
                               joined("metrics", ["run_id", "name", "value"]))
    metrics = pd.concat([metrics, image], ignore_index=True) if len(image) else metrics
    for out, attr in ((metrics, "metrics"), (nm, "not_measured")):
        cap = out["run_id"].to_numpy() >> 32
        for i, f in enumerate(frames_list):
            part = out[cap == i]
            if len(part):
                part = part.assign(run_id=part["run_id"] - (i << 32))
                if attr == "metrics":  # a figure worked out here replaces the run's reason
                    worked = set(zip(part["run_id"].astype("int64"), part["name"]))
                    keys = zip(f.not_measured["run_id"].astype("int64"), f.not_measured["name"])
                    f.not_measured = f.not_measured[[k not in worked for k in keys]]
                setattr(f, attr, pd.concat([getattr(f, attr), part], ignore_index=True))


def derive(runs: pd.DataFrame, metrics: pd.DataFrame, not_measured: pd.DataFrame,
           phases: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metric rows, not_measured rows) of the derived figures, capture table columns."""
    ids = runs["run_id"].astype("int64").to_numpy()
    held = metrics[metrics["name"].isin([RATIO, RESUME])]
    have = {(int(r), n) for r, n in zip(held["run_id"], held["name"])}
    mrows, nrows = [], []
    ratio = _ratio(metrics, not_measured, ids)
    resume = _resume(runs, phases)
    for rid in ids:
        rid = int(rid)
        for name, table in ((RATIO, ratio), (RESUME, resume)):
            if (rid, name) in have:
                continue
            value, unit, method, source, reason = table[rid]
            if reason is None:
                mrows.append((rid, name, value, unit, method, source))
            else:
                nrows.append((rid, name, reason))
    m = pd.DataFrame(mrows, columns=["run_id", "name", "value", "unit", "method", "source"])
    m["value"] = m["value"].astype("float64")
    return m, pd.DataFrame(nrows, columns=["run_id", "name", "reason"])


def _reasons(not_measured: pd.DataFrame, name: str) -> dict[int, str]:
    nm = not_measured[not_measured["name"] == name]
    return {int(r): str(why) for r, why in zip(nm["run_id"], nm["reason"])}


def _ratio(metrics: pd.DataFrame, not_measured: pd.DataFrame, ids) -> dict:
    """run -> (value, unit, method, source, reason); reason None when measured."""
    values = {}
    for name in RATIO_INPUTS:
        m = metrics[metrics["name"] == name]
        values[name] = dict(zip(m["run_id"].astype("int64"), m["value"].astype("float64")))
    why = {name: _reasons(not_measured, name) for name in RATIO_INPUTS}
    out = {}
    for rid in ids:
        rid = int(rid)
        comp, written = (values[n].get(rid) for n in RATIO_INPUTS)
        missing = [n for n, v in zip(RATIO_INPUTS, (comp, written)) if v is None or np.isnan(v)]
        if not missing and written > 0:
            out[rid] = (comp / written, "ratio", RATIO_METHOD, RATIO_SOURCE, None)
            continue
        if not missing:
            reason = "write_kbytes is 0: no ratio"
        else:  # the inputs' own reasons; "no reason recorded" only when none has one
            known = [n for n in missing if rid in why[n]] or missing
            reason = "; ".join(f"{n} not measured ({why[n].get(rid, 'no reason recorded')})"
                               for n in known)
        out[rid] = (None, None, None, None, f"derived from write_compressed_kbytes / "
                    f"write_kbytes: {reason}")
    return out


def _resume(runs: pd.DataFrame, phases: pd.DataFrame) -> dict:
    """run -> (value, unit, method, source, reason) of resume_ms, as ``_ratio``.

    The start is where ``phases.after_copy`` ends the time away: the copy phase's end when
    the sleep-time report placed it after its start, else the end of the phase whose method
    says it holds the clock jump."""
    def base(method) -> str:
        method = str(method or "")
        return method.split(",")[0] if method else ""

    ph = phases.copy()
    ph["run_id"] = ph["run_id"].astype("int64")
    copy = ph[ph["phase"] == "copy"].drop_duplicates("run_id").set_index("run_id")
    jump = (ph[ph["method"].fillna("").astype(str).str.endswith(CLOCK_JUMP)]
            .drop_duplicates("run_id").set_index("run_id"))
    thaw = ph[ph["phase"] == "thaw"].drop_duplicates("run_id").set_index("run_id")
    out = {}
    for rid, trigger in zip(runs["run_id"].astype("int64"), runs["trigger"]):
        rid = int(rid)
        if trigger != REAL_HIBERNATION:
            out[rid] = (None, None, None, None,
                        f"not a real hibernation (trigger {trigger}): no image was restored")
            continue
        start, how = np.nan, None
        if rid in copy.index and not pd.isna(copy.at[rid, "start_ns"]):
            c_start, c_end = copy.at[rid, "start_ns"], copy.at[rid, "end_ns"]
            if not pd.isna(c_end) and c_end > c_start:
                start, how = c_end, "the sleep-time report (clock running again)"
            elif rid in jump.index and not pd.isna(jump.at[rid, "end_ns"]):
                start = jump.at[rid, "end_ns"]
                how = f"the end of {jump.at[rid, 'phase']} (which holds the clock jump)"
        if pd.isna(start):
            out[rid] = (None, None, None, None,
                        "the restored kernel's clock restart after the copy was not recorded "
                        "(no copy place, sleep-time report or syscore_resume end)")
            continue
        if rid not in thaw.index or pd.isna(thaw.at[rid, "end_ns"]):
            out[rid] = (None, None, None, None, "no end of thaw recorded in the restored kernel")
            continue
        end = thaw.at[rid, "end_ns"]
        methods = sorted({m for m in (base(jump.at[rid, "method"]) if rid in jump.index else
                                      "probe", base(thaw.at[rid, "method"])) if m})
        source = (f"restored kernel's CLOCK_BOOTTIME: from {how} to the end of thaw; the boot "
                  "kernel's part (boot, image read, jump into the image) is not in it")
        out[rid] = (float(end - start) / 1e6, "ms", ", ".join(methods) + RESUME_DERIVED, source,
                    None)
    return out


IMAGE_METHOD = "kernel-log, derived: write_pages + 1"
IMAGE_SOURCE = ("derived: write_pages + 1, the writing kernel's 'Saving image data pages (N "
                "pages)' line (the image less its header page)")


def image_from_console(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """image_pages / image_bytes rows (metrics columns) of the real-hibernation runs that have
    none, from the writing kernel's write_pages (and write_kbytes for the page size)."""
    cols = ["run_id", "name", "value", "unit", "method", "source"]
    real = set(runs.loc[runs["trigger"] == REAL_HIBERNATION, "run_id"].astype("int64"))
    if not real:
        return pd.DataFrame(columns=cols)
    have: dict[int, dict[str, float]] = {}
    for rid, name, value in zip(metrics["run_id"].astype("int64"), metrics["name"], metrics["value"]):
        if int(rid) in real and not pd.isna(value):
            have.setdefault(int(rid), {}).setdefault(name, float(value))
    rows = []
    for rid in sorted(real):
        m = have.get(rid, {})
        written = m.get("write_pages")
        if written is None or written < 1:
            continue
        image = written + 1
        if "image_pages" not in m:
            rows.append((rid, "image_pages", image, "pages", IMAGE_METHOD, IMAGE_SOURCE))
        kb = m.get("write_kbytes")
        page = kb * 1024 / written if kb else None
        if "image_bytes" not in m and page and page.is_integer() and int(page) & (int(page) - 1) == 0:
            rows.append((rid, "image_bytes", image * page, "bytes", IMAGE_METHOD,
                         f"{IMAGE_SOURCE} x the page size (write_kbytes x 1024 / write_pages = "
                         f"{int(page)})"))
    out = pd.DataFrame(rows, columns=cols)
    out["value"] = out["value"].astype("float64")
    return out


# --------------------------------------------------------------------------- compressor

_LOG_COMPRESSOR = re.compile(r"thread\(s\) for (\w+) (?:de)?compression")
#: The same line before 6.9 (one compressor, lzo, so the log names none).
_LOG_LZO_ONLY = re.compile(r"thread\(s\) for (?:de)?compression")
_CMDLINE_COMPRESSOR = re.compile(r"(?:^|\s)hibernate\.compressor=(\S+)")
#: lab_compressor's value when ``snapprof lab record`` was not given --compressor.
LAB_DEFAULT = "kernel default"


def image_compressor(frames) -> tuple[str, str] | None:
    """(compressor, how it is known) of a capture's hibernation image, or None.

    In order: the kernel's own log ("Using N thread(s) for lz4 compression", 6.9+; stored as
    the source of the compress_threads / decompress_threads figures and in the kmsg table),
    the recorder's ``hibernate_compressor`` meta (/sys/module/hibernate/parameters/compressor,
    when a recorder stores it), the lab's ``lab_compressor`` (``--compressor``), then
    ``hibernate.compressor=`` on the kernel command line. A kernel older than 6.9 has only lzo
    and its log line names none ("Using N thread(s) for compression"): lzo, said so.
    """
    texts = list(frames.metrics.loc[frames.metrics["name"].isin(
        ["compress_threads", "decompress_threads"]), "source"].dropna().astype(str))
    if "text" in frames.kmsg.columns:
        texts += list(frames.kmsg["text"].dropna().astype(str))
    for text in texts:
        m = _LOG_COMPRESSOR.search(text)
        if m:
            return m.group(1).lower(), "the kernel's log"
    meta = frames.meta
    if any(_LOG_LZO_ONLY.search(t) for t in texts):
        return "lzo", "the kernel's log names none: before 6.9 lzo is the only compressor"
    sysfs = (meta.get("hibernate_compressor") or "").strip().strip("[]")
    if sysfs:
        return sysfs.lower(), "/sys/module/hibernate/parameters/compressor"
    lab = (meta.get("lab_compressor") or "").strip()
    if lab and lab != LAB_DEFAULT:
        return lab.lower(), "snapprof lab --compressor"
    m = _CMDLINE_COMPRESSOR.search(meta.get("cmdline") or "")
    if m:
        return m.group(1).lower(), "hibernate.compressor= on the kernel command line"
    return None
