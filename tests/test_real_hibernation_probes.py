"""A real hibernation, complete (issue 16 §4, the unit part): every probe that has no return
probe pending across the atomic copy is attached — preallocation, shrinking, saveable pages,
the pages to copy — and only swsusp_save()'s return probe is left out, with its reason; the
image's size comes from the best source (probes before the copy, the kernel's "Need to copy",
the writing kernel's console). Fake kernels (probes_fakes) and the real lab captures."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from probes_fakes import fake_kernel
from snapprof.analysis.frames import load_capture
from snapprof.errors import SnapprofError
from snapprof.record import image
from snapprof.record import triggers as trg
from snapprof.record.derive import PAGES_TO_COPY_SOURCE, derive
from snapprof.record.probeset import ProbeSet
from snapprof.record.recorder import build_run
from snapprof.record.resolve import KernelView
from snapprof.report.model import build_model
from test_probes_derive import E, MS, metrics_of, snapshot_cycle

DATA = Path(__file__).parent / "data"
REAL = {"bookworm-6.1-trigger-hibernate.snap": "6.1", "trixie-6.12-trigger-hibernate.snap": "6.12",
        "trixie-6.12-trigger-hibernate-lz4.snap": "6.12"}
# what the shrink and copy areas measure before the copy: attached in a real hibernation
BEFORE_COPY = {"prealloc", "saveable", "prealloc_pages", "shrink", "show_speed", "copy_window"}
AT_SWSUSP_SAVE_RETURN = {"swsusp_save", "image_counters", "zero_pages"}


def probeset(tmp_path, version, real):
    root = fake_kernel(tmp_path / version, version)
    return ProbeSet(view=KernelView(root=str(root), euid=0, bcc=True), real_hibernation=real,
                    freezer_probes="sweep")


@pytest.mark.parametrize("version", ["6.1", "6.12"])
def test_real_hibernation_attaches_all_but_the_return_probe_on_swsusp_save(tmp_path, version):
    ps = probeset(tmp_path, version, real=True)
    res = {r.measurement.name: r for r in ps.resolutions}
    assert {r.measurement.area for r in ps.resolutions} >= {"shrink", "copy"}  # every area
    for name in BEFORE_COPY:
        assert res[name].available, (name, res[name].reason)
    for name in AT_SWSUSP_SAVE_RETURN:
        assert not res[name].available
        if name == "zero_pages" and version == "6.1":
            continue  # no nr_zero_pages before 6.6 either
        assert res[name].reason.startswith("left out where a real hibernation may run")
        assert "its return probe on swsusp_save() is never attached there" in res[name].reason
        assert "restored kernel" in res[name].reason
    hooks = ps.attach_hooks()
    assert not [h for h in hooks if h[0] == "kretprobe" and h[1] == "swsusp_save"]
    assert ("kprobe", "swsusp_save", "enter__swsusp_save", 0) in hooks  # marks count_data_pages #3
    for fn in ("hibernate_preallocate_memory", "count_data_pages", "preallocate_image_memory",
               "shrink_all_memory"):
        assert ("kretprobe", fn, f"leave__{fn}", 0) in hooks, fn
    for fn in ("swsusp_show_speed", "tk_debug_account_sleep_time"):
        assert ("kprobe", fn, f"enter__{fn}", 0) in hooks
    # the probes' status rows say why the image counters are missing
    status = {row[0]: row for row in ps.status()}
    assert "swsusp_save" in status["image_counters"][4]


def test_snapshot_cycles_keep_the_return_probe_on_swsusp_save(tmp_path):
    ps = probeset(tmp_path, "6.12", real=False)
    assert ("kretprobe", "swsusp_save", "leave__swsusp_save", 0) in ps.attach_hooks()
    assert all(r.available for r in ps.resolutions)


def test_a_return_probe_across_the_copy_is_refused_whatever_the_resolution_says(tmp_path):
    ps = probeset(tmp_path, "6.12", real=True)
    safe = probeset(tmp_path / "other", "6.12", real=False)
    # as if a resolution had let the image counters through
    ps.resolutions = safe.resolutions
    with pytest.raises(SnapprofError, match="refusing to attach kretprobe swsusp_save for a real "
                                            "hibernation: a return probe on it would be pending"):
        ps.attach_hooks()


def resumed_cycle(snapshot_ioctls=False):
    """What a restored image holds of its cycle: everything up to the copy, count_data_pages
    #3 included; swsusp_save never returns (its return probe is not attached anyway).
    ``snapshot_ioctls``: a /dev/snapshot cycle instead, which asks the image's size after."""
    t = snapshot_cycle(shrink=True)
    t.events = [e for e in t.events if not (e.ts == 508 * MS and (
        e.name in ("nr_copy_pages", "nr_meta_pages") or (e.name == "swsusp_save" and e.kind == E)))
        and (snapshot_ioctls or e.name != "snapshot_get_image_size")]
    return t


def test_a_resumed_cycle_has_its_shrink_figures_and_pages_to_copy(tmp_path):
    ps = probeset(tmp_path, "6.1", real=True)
    status = {r.measurement.name: (r.available, r.reason) for r in ps.resolutions}
    d = derive(resumed_cycle().events, [], [], {}, status, ps._metric_owners())
    m, nm = metrics_of(d), dict(d.not_measured)
    for name in ("prealloc_ms", "saveable_pages", "saveable_after_pages", "shrink_ms",
                 "shrink_reclaimed_pages", "prealloc_got_pages", "preallocated_pages"):
        assert name in m, name
    assert m["copy_needed_pages"][1:5] == (121517, "pages", "probe", PAGES_TO_COPY_SOURCE)
    assert nm["copy_pages"].startswith("probe image_counters not attached: left out where a real "
                                       "hibernation may run")
    # 6.1 leaves no zero pages out: the image's size follows from the pages to copy
    run = build_run("hibernate", trg.CycleOutcome(status="complete"), d, [], [],
                    zero_pages_left_out=False)
    got = {r[0]: r for r in run.metrics}
    meta = -(-121517 * 8 // 4096)
    assert got["image_pages"][1:4] == (121517 + meta + 1, "pages", "probe")
    assert got["image_bytes"][1] == (121517 + meta + 1) * 4096
    assert "no nr_zero_pages" in got["image_pages"][4]
    # 6.6+ does: no image size in the restored system, with the reason
    run = build_run("hibernate", trg.CycleOutcome(status="complete"), d, [], [],
                    zero_pages_left_out=True)
    nm = dict(run.not_measured)
    assert "image_pages" not in {r[0] for r in run.metrics}
    assert "leaves out the zero pages it finds while copying" in nm["image_pages"]
    assert nm["image_bytes"] == nm["image_pages"]


def _kmsg(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = db.execute("SELECT seq, ts_us, level, text FROM kmsg WHERE run_id = 1 ORDER BY rowid").fetchall()
    figs = dict(db.execute("SELECT name, value FROM metrics WHERE run_id = 1"))
    db.close()
    return rows, figs


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_captures_image_size_from_the_best_source(name):
    """The restored kernel's own log ("Need to copy N pages", kept in the image) gives the
    image on 6.1, where it equals what the writing kernel wrote; on 6.12 only the writing
    kernel's console can (zero pages), and the analysis takes it from there."""
    records, figs = _kmsg(DATA / name)
    version = REAL[name]
    run = build_run("hibernate", trg.CycleOutcome(status="complete"), None, records, [],
                    zero_pages_left_out=version != "6.1")
    got = {r[0]: r for r in run.metrics}
    written = figs["write_pages"] + 1  # the writing kernel's console: image less its header
    if version == "6.1":
        assert got["image_pages"][1] == written == 92424
        assert got["image_pages"][3] == "kernel-log" and "Need to copy" in got["image_pages"][4]
        assert got["image_bytes"][1] == written * 4096
    else:
        assert "image_pages" not in got
        assert "zero pages" in dict(run.not_measured)["image_pages"]
    # the report's headline image size, from the capture as stored (lab-joined console)
    frames = load_capture(DATA / name)
    head = {h["name"]: h for h in build_model(frames)["headline"]}
    assert head["image_bytes"]["median"] == written * 4096
    assert head["image_bytes"]["method"] == "kernel-log, derived: write_pages + 1"
    nm = frames.not_measured
    assert nm[nm["name"].isin(["image_pages", "image_bytes"])].empty


def test_image_from_pages_to_copy_says_why_not():
    need = ("copy_needed_pages", 1000.0, "pages", "kernel-log", "PM: hibernation: Need to copy 1000 pages")
    assert image.image_from_pages_to_copy(None, False)[1] == image.NO_COUNT
    assert image.image_from_pages_to_copy(need, None)[1] == image.UNKNOWN
    rows, why = image.image_from_pages_to_copy(need, False, 4096)
    assert why is None and rows[0][1] == 1000 + 2 + 1  # ceil(8000 / 4096) = 2
    assert image.image_from_pages_to_copy(need, False, 4096, 4) == ([], image.HIGHMEM)


def test_the_recorder_records_a_real_hibernation_with_every_area(tmp_path, monkeypatch):
    """snapprof record --trigger hibernate: the probe set is asked for every area with no
    return probe across the copy, and the run's image size comes from the restored log."""
    from snapprof.capture import CaptureReader
    from snapprof.record import kmsg, probeset, recorder, sysinfo

    asked = {}
    root = fake_kernel(tmp_path / "k", "6.1")

    class SpyProbeSet(probeset.ProbeSet):
        def __init__(self, **kw):
            asked.update(kw)
            super().__init__(view=KernelView(root=str(root), euid=0, bcc=True), **kw)

    log = [(1, 10, 6, "PM: hibernation: Creating image:"),
           (2, 11, 6, "PM: hibernation: Need to copy 92242 pages")]

    class Restored:  # what the restored system sees: its log up to the copy, then the resume
        name = "hibernate"

        def __init__(self, *a, **k):
            pass

        def run(self, intr):
            return trg.CycleOutcome(status="complete", started_ns=1, ended_ns=2, records=log)

        def close(self):
            pass

    class Reader:
        lost = 0

        def __init__(self, *a, **k):
            pass

        def mark(self):
            pass

        def read_new(self):
            return []

        def close(self):
            pass

    monkeypatch.setattr(probeset, "ProbeSet", SpyProbeSet)
    monkeypatch.setattr(sysinfo, "check_can_record", lambda trigger: None)
    monkeypatch.setattr(kmsg, "KmsgReader", Reader)
    monkeypatch.setattr(trg, "SysfsTrigger", Restored)
    monkeypatch.setattr(trg, "lock_memory", lambda: None)
    out = tmp_path / "real.snap"
    opts = recorder.Options(output=str(out), trigger="hibernate", yes=True, probes=False, runs=1)
    summary = recorder.Recorder(opts, log=lambda msg: None).run()
    assert summary.ok
    assert asked["areas"] is None and asked["real_hibernation"] is True
    with CaptureReader(out) as r:
        areas = {p["area"] for p in r.probes()}
        got = {m["name"]: m for m in r.table("metrics")}
    assert {"shrink", "copy"} <= areas  # every measurement is listed, none dropped
    assert got["image_pages"]["value"] == 92424 and got["image_pages"]["method"] == "kernel-log"


def test_a_snapshot_cycle_without_the_return_probe_says_why_it_has_no_copy_window(tmp_path):
    """--trigger none records as if a real hibernation may run: a /dev/snapshot cycle then has
    no swsusp_save return, and its sleep-time report is not called a copy window (nor the
    copy 'resumed from the image'); the image's size comes from snapshot_get_image_size."""
    ps = probeset(tmp_path, "6.12", real=True)
    status = {r.measurement.name: (r.available, r.reason) for r in ps.resolutions}
    d = derive(resumed_cycle(snapshot_ioctls=True).events, [], [], {}, status, ps._metric_owners())
    m, nm = metrics_of(d), dict(d.not_measured)
    assert "copy_window_ms" not in m
    assert nm["copy_window_ms"].startswith("swsusp_save's return probe is left out where a real "
                                           "hibernation may run")
    assert m["image_pages"][1:5] == (121756, "pages", "probe", "snapshot_get_image_size")
    # with the return probe attached, a missing return means the image was restored
    status = {r.measurement.name: (True, None) for r in ps.resolutions}
    nm = dict(derive(resumed_cycle().events, [], [], {}, status, ps._metric_owners()).not_measured)
    assert nm["copy_window_ms"].startswith("resumed from the image")
