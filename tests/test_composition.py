"""Memory composition (snapprof.analysis.composition): reconciliation arithmetic on synthetic
captures, absence on the real captures of tests/data, the top processes, the image_size sweep.

UNIT-TEST FIXTURES: the captures below are written with CaptureWriter; their figures are
invented but shaped like the lab's 2 GiB trixie guest (MemTotal 2018908 kB, as in
tests/data/trixie-6.12-snapshot.snap); they are not measurements.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from snapprof.analysis import composition as comp
from snapprof.analysis.frames import load_capture
from snapprof.capture import CaptureWriter, Run

DATA = Path(__file__).parent / "data"
MEM_TOTAL = 2_018_908
#: kB before the cycle, by kind (sum 318,200 kB)
BEFORE = {"anon": 98_000, "shmem": 1_200, "file_active": 62_000, "file_inactive": 88_000,
          "swapcache": 0, "slab_reclaimable": 21_000, "slab_unreclaimable": 27_500,
          "kernel_stack": 3_400, "page_tables": 2_900, "vmalloc": 12_500, "percpu": 1_700,
          "hugetlb": 0}
#: kinds the recorder may add (snapprof.metrics.COMPOSITION_KINDS), e.g. the free pages held
#: on the per-CPU lists (/proc/zoneinfo): a 2-CPU guest's few hundred pages
BEFORE.update({k: 1_200 for k in comp.KINDS if k not in BEFORE})
ATTRIBUTED = sum(BEFORE.values())  # 318,200 kB for the 12 meminfo kinds
#: after the cycle: the file cache and reclaimable slab shrank
AFTER = {**BEFORE, "anon": 96_000, "file_active": 40_000, "file_inactive": 20_000,
         "slab_reclaimable": 12_000}
FREE = 1_683_852           # in use: 335,056 kB
FREE_AFTER = FREE + 103_400 - 16_000  # what the kinds lost, less what else grew
UNATTRIBUTED = MEM_TOTAL - FREE - ATTRIBUTED  # 16,856 kB for the 12 meminfo kinds
HOSTILE_CMD = "evil\x1b[2J<script>alert(1)</script>\u202e --flag"
PROCESSES = [  # (pid, tgid, comm, cmdline, rss, anon, shmem, file, swap, source)
    (412, 412, "python3", "python3 -m http.server 8000", 61_000, 52_000, 0, 9_000, 0, "smaps_rollup"),
    (233, 233, "systemd-journal", "/usr/lib/systemd/systemd-journald", 14_200, 3_100, 1_100, 10_000, 0,
     "smaps_rollup"),
    (1, 1, "systemd", "/sbin/init", 12_100, 2_900, 0, 9_200, 0, "smaps_rollup"),
    (500, 500, "worker", "worker --pool", 9_000, 4_000, 0, 5_000, 0, "smaps_rollup"),
    (501, 501, "worker", "worker --pool", 8_000, 3_000, 0, 5_000, 0, "smaps_rollup"),
    (666, 666, "evil<b>", HOSTILE_CMD, 7_000, 2_500, 0, 4_500, 0, "status"),
]


def composition_run(i: int = 0, before: dict | None = None, after: dict | None = None,
                    free: int = FREE, free_after: int | None = FREE_AFTER, status: str = "complete",
                    setting: int = 809_549_824, image: int = 66_661 , cycle_ms: float = 12_400.0,
                    shrink: bool = False, processes: list | None = None, scan_ms: float = 14.5) -> Run:
    before = BEFORE if before is None else before
    after = AFTER if after is None else after
    run = Run(trigger="snapshot", status=status, started_ns=(i + 1) * 10**11,
              ended_ns=(i + 1) * 10**11 + int(cycle_ms * 1e6), ringbuf_drops=0)
    m = lambda n, v, u="kB", how="sysfs", src="/proc/meminfo": run.metric(n, v, u, how, src)  # noqa: E731
    m("mem_total_kb", MEM_TOTAL)
    m("mem_free_kb", free)
    if free_after is not None:
        m("mem_free_after_kb", free_after)
    for kind, kb in before.items():
        m(comp.metric_name(kind), kb)
    for kind, kb in after.items():
        m(comp.metric_name(kind, True), kb)
    m("mem_file_dirty_kb", 300)
    m("mem_file_dirty_after_kb", 40)
    m("composition_scan_ms", scan_ms, "ms", "recorder", None)
    pages = lambda n, v, how="probe": run.metric(n, v, "pages", how, None)  # noqa: E731
    pages("saveable_pages", 80_500 + i)
    pages("preallocated_pages", 80_500 + i)
    pages("prealloc_requested_pages", 80_500 + i)
    pages("prealloc_got_pages", 80_500 + i)
    pages("copy_needed_pages", 76_000 + i)
    pages("copy_pages", image - 161)
    pages("zero_pages", 76_000 + i - (image - 161))
    pages("meta_pages", 160)
    pages("image_pages", image, "device")
    if shrink:
        pages("shrink_requested_pages", 30_000)
        pages("shrink_reclaimed_pages", 24_000 + i)
    else:
        for n in ("shrink_requested_pages", "shrink_reclaimed_pages", "shrink_ms"):
            run.missing(n, "fast path: shrink_all_memory not called")
    run.metric("image_size_setting_bytes", setting, "bytes", "sysfs", "/sys/power/image_size")
    run.metric("cycle_ms", cycle_ms, "ms", "recorder", None)
    run.metric("image_bytes", image * 4096, "bytes", "device", None)
    run.processes = list(PROCESSES if processes is None else processes)
    return run


META = {"kernel_release": "6.12.117+deb13-amd64", "machine": "x86_64", "mem_total_kb": MEM_TOTAL,
        "trigger": "snapshot", "distro": "Debian GNU/Linux 13 (trixie)", "page_size": 4096}


def write(path, runs: list[Run], meta: dict | None = None) -> Path:
    with CaptureWriter(path) as w:
        w.set_meta({**META, **(meta or {})})
        w.set_probes([("freeze_processes", "freezer", "freeze_processes", True, None)])
        for r in runs:
            w.add_run(r)
    return Path(path)


def capture(tmp_path, name="c.snap", n=3, meta=None, **kw):
    return load_capture(write(tmp_path / name, [composition_run(i, **kw) for i in range(n)], meta))


# --------------------------------------------------------------------------- arithmetic


def test_unattributed_is_total_less_free_less_the_kinds(tmp_path):
    runs = comp.reconcile(capture(tmp_path))
    r = runs.iloc[0]
    assert r["attributed_kb"] == ATTRIBUTED >= 318_200
    assert r["unattributed_kb"] == UNATTRIBUTED == 335_056 - ATTRIBUTED
    assert r["in_use_kb"] == 335_056
    assert r["unattributed_pages"] == UNATTRIBUTED / 4
    # after: the same identity on the after figures
    assert r["unattributed_after_kb"] == MEM_TOTAL - FREE_AFTER - sum(AFTER.values())
    # what the cycle took, by kind
    assert r["change_file_inactive_kb"] == -68_000
    assert r["shrank_kb"] == 2_000 + 22_000 + 68_000 + 9_000
    assert r["grew_kb"] == 0
    assert r["missing_kinds"] == ""


def test_summary_table_partitions_memtotal(tmp_path):
    s = comp.composition_summary(capture(tmp_path))
    assert s["present"] and s["n"] == 3 and s["page_size"]["bytes"] == 4096
    rows = {r["key"]: r for r in s["table"]}
    partition = [r for r in s["table"] if r["partition"] and r["key"] != "total"]
    assert sum(r["before_kb"] for r in partition) == MEM_TOTAL
    assert math.isclose(sum(r["share"] for r in partition), 100.0)
    assert rows["unattributed"]["before_kb"] == UNATTRIBUTED and not s["unattributed_negative"]
    assert rows["file_inactive"]["change_kb"] == -68_000
    assert rows["file_inactive"]["before_pages"] == 22_000
    assert rows["file_dirty"]["partition"] is False  # a subset of the file cache, not a kind
    assert rows["total"]["before_kb"] == MEM_TOTAL
    kernel = {k["name"]: k for k in s["kernel"]}
    assert kernel["saveable_pages"]["pages"] == 80_501  # median of 80,500..80,502
    assert kernel["image_pages"]["n"] == 3
    assert s["scan_ms"]["median"] == 14.5


def test_negative_unattributed_is_shown_negative_with_a_note(tmp_path):
    # kernel stacks counted again in VmallocUsed: the kinds exceed MemTotal - MemFree
    over = {**BEFORE, "vmalloc": 40_000}
    s = comp.composition_summary(capture(tmp_path, before=over, free=MEM_TOTAL - 340_000))
    rows = {r["key"]: r for r in s["table"]}
    assert rows["unattributed"]["before_kb"] == 340_000 - (ATTRIBUTED + 27_500) < 0
    assert s["unattributed_negative"] and "negative" in rows["unattributed"]["note"]
    assert rows["unattributed"]["share"] < 0  # never clamped


def test_a_kind_not_measured_is_named_and_stays_in_unattributed(tmp_path):
    partial = {k: v for k, v in BEFORE.items() if k != "percpu"}
    s = comp.composition_summary(capture(tmp_path, before=partial))
    rows = {r["key"]: r for r in s["table"]}
    assert rows["percpu"]["before_kb"] is None and rows["percpu"]["n"] == 0
    assert s["missing_kinds"] == ["percpu"]
    assert rows["unattributed"]["before_kb"] == UNATTRIBUTED + 1_700
    assert "percpu" in rows["unattributed"]["note"]


def test_reclaim_against_shrink_all_memory(tmp_path):
    s = comp.composition_summary(capture(tmp_path, shrink=True))
    r = s["reclaim"]
    assert r["shrank_pages"] == 101_000 / 4 and r["shrink_reclaimed_pages"] == 24_001
    assert "asked for 30,000 pages and reclaimed 24,001" in r["sentence"]
    fast = comp.composition_summary(capture(tmp_path, "fast.snap"))["reclaim"]
    assert fast["shrink_reclaimed_pages"] is None
    assert "fast path: shrink_all_memory not called" in fast["sentence"]


def test_no_after_figures_say_so(tmp_path):
    s = comp.composition_summary(capture(tmp_path, after={}, free_after=None))
    assert s["reclaim"]["shrank_kb"] is None
    assert "not measured" in s["reclaim"]["sentence"]
    rows = {r["key"]: r for r in s["table"]}
    assert rows["anon"]["after_kb"] is None and rows["anon"]["change_kb"] is None


def test_page_size_assumed_on_x86_64_and_absent_elsewhere(tmp_path):
    f = capture(tmp_path)
    f.meta.pop("page_size")
    ps = comp.page_size(f)
    assert ps["bytes"] == 4096 and "assumed" in ps["how"]
    f.meta["machine"] = "aarch64"
    assert comp.page_size(f)["bytes"] is None
    s = comp.composition_summary(f)
    assert s["table"][0]["before_kb"] == 98_000 and s["table"][0]["before_pages"] is None
    f.meta["page_size"] = "16384"
    assert comp.composition_summary(f)["table"][0]["before_pages"] == 98_000 / 16


def test_failed_runs_are_left_out_of_the_medians(tmp_path):
    runs = [composition_run(0), composition_run(1),
            composition_run(2, before={**BEFORE, "anon": 900_000}, status="failed")]
    f = load_capture(write(tmp_path / "f.snap", runs))
    s = comp.composition_summary(f)
    assert s["n"] == 2 and s["table"][0]["before_kb"] == 98_000
    assert len(comp.reconcile(f)) == 3  # every run with a composition, its status said


# --------------------------------------------------------------------------- absence


@pytest.mark.parametrize("path", sorted(DATA.glob("*.snap")), ids=lambda p: p.name)
def test_old_captures_have_no_composition_and_say_why(path):
    f = load_capture(path)
    c = comp.composition(f)
    assert c["summary"] == {"present": False, "reason": comp.NO_COMPOSITION}
    assert c["processes"]["rows"] == [] and c["processes"]["reason"] == comp.NO_PROCESSES
    assert comp.reconcile(f).empty


# --------------------------------------------------------------------------- processes


def test_top_processes_per_command(tmp_path):
    top = comp.top_processes(capture(tmp_path))
    assert top["by"] == "command" and top["n"] == 3 and top["reason"] is None
    first = top["rows"][0]
    assert (first["comm"], first["anon_shmem_kb"], first["runs"]) == ("python3", 52_000, 3)
    worker = next(r for r in top["rows"] if r["comm"] == "worker")
    assert worker["processes"] == 2 and worker["anon_kb"] == 7_000  # two pids, one command
    assert [r["anon_shmem_kb"] for r in top["rows"]] == sorted(
        (r["anon_shmem_kb"] for r in top["rows"]), reverse=True)
    evil = next(r for r in top["rows"] if r["source"] == "status")
    assert evil["cmdline"] == HOSTILE_CMD  # the exact text: reporters escape it


def test_a_command_missing_from_a_run_is_not_a_zero(tmp_path):
    runs = [composition_run(0), composition_run(1), composition_run(2, processes=PROCESSES[:1])]
    top = comp.top_processes(load_capture(write(tmp_path / "p.snap", runs)))
    journal = next(r for r in top["rows"] if r["comm"] == "systemd-journal")
    assert journal["runs"] == 2 and journal["anon_kb"] == 3_100


# --------------------------------------------------------------------------- sweep


def test_image_size_sweep_per_setting(tmp_path):
    settings = [(0, 41_000, 9_000.0), (504_727_296, 52_000, 10_500.0), (809_549_824, 66_661, 12_400.0)]
    runs = [composition_run(i * 3 + j, setting=s, image=img + 10 * j, cycle_ms=ms + 100 * j)
            for i, (s, img, ms) in enumerate(settings) for j in range(3)]
    f = load_capture(write(tmp_path / "s.snap", runs, {"image_size_sweep": "0,25%,default"}))
    sw = comp.image_size_sweep(f)
    assert sw["reason"] is None and sw["spec"] == "0,25%,default"
    assert [r["setting_bytes"] for r in sw["rows"]] == [0, 504_727_296, 809_549_824]
    r = sw["rows"][1]
    assert (r["n"], r["image_pages"], r["image_min"], r["image_max"]) == (3, 52_010, 52_000, 52_020)
    assert r["cycle_ms"] == 10_600.0 and math.isclose(r["setting_pct"], 504_727_296 / (MEM_TOTAL * 1024) * 100)


def test_one_setting_is_no_sweep(tmp_path):
    sw = comp.image_size_sweep(capture(tmp_path))
    assert len(sw["rows"]) == 1 and "one image_size setting" in sw["reason"]


def test_sweep_pools_the_real_lab_captures_at_three_settings():
    paths = [DATA / f"trixie-6.12-snapshot{s}.snap" for s in ("_image-size-0", "_image-size-100M", "")]
    sw = comp.image_size_sweep([load_capture(p) for p in paths])
    assert sw["reason"] is None
    assert [r["setting_bytes"] for r in sw["rows"]] == sorted(r["setting_bytes"] for r in sw["rows"])
    assert len(sw["rows"]) == 3 and all(r["n"] >= 1 for r in sw["rows"])
    # less room for the image, fewer image pages: the trade-off the sweep shows
    assert sw["rows"][0]["image_pages"] < sw["rows"][-1]["image_pages"]
