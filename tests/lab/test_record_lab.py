"""`snapprof record` on real Debian kernels (bookworm 6.1, trixie 6.12): one guest boot per
distro runs tests/lab/record_job.py (snapshot x3, a shrinking cycle, pm-test:freezer,
--trigger none, a recorder SIGKILLed mid-cycle); the tests below assert on its captures,
checking every figure against the kernel's own log lines stored in the same run.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from conftest import KERNEL_VERSIONS, LAB_DISTROS, lab_id

from snapprof.capture import CaptureReader

pytestmark = pytest.mark.lab

DISTROS = KERNEL_VERSIONS
PAGE = 4096


@pytest.fixture(scope="module", params=LAB_DISTROS, ids=lab_id)
def job(request, tmp_path_factory):
    from snapprof.lab.qemu import create_disk, run_guest

    sys.path.insert(0, str(Path(__file__).parent))
    from offline import unpack

    distro = request.param
    out = tmp_path_factory.mktemp(f"record-{distro}")
    # results come back on a raw disk: the 9p shares die at the first snapshot cycle
    disk = create_disk(out / "results.img", "64M")
    res = run_guest(distro, ["python3", "tests/lab/record_job.py", "--pack", "/dev/vdb", "/tmp/rec"],
                    out, extra_disks=[disk], stream=None, timeout=2400)
    res.check()
    assert res.returncode == 0, res.output[-3000:]
    unpack(str(disk.path), str(out / "rec"))
    doc = json.loads((out / "rec" / "record_job.json").read_text())
    doc.update(distro=distro, version=DISTROS[distro], dir=out / "rec", vm_s=res.duration_s)
    return doc


def capture(job, name):
    r = CaptureReader(job["dir"] / f"{name}.snap")
    runs = r.runs()
    mets, nm, logs = {}, {}, {}
    for row in r.table("metrics"):
        mets.setdefault(row["run_id"], {})[row["name"]] = row
    for row in r.table("not_measured"):
        nm.setdefault(row["run_id"], {})[row["name"]] = row["reason"]
    for row in r.table("kmsg"):
        logs.setdefault(row["run_id"], []).append((row["seq"], row["ts_us"], row["level"], row["text"]))
    meta = r.meta()
    events = r.table("events")
    r.close()
    return meta, [dict(run, metrics=mets.get(run["run_id"], {}), nm=nm.get(run["run_id"], {}),
                       kmsg=logs.get(run["run_id"], []),
                       events=[e for e in events if e["run_id"] == run["run_id"]])
                  for run in runs]


def log_value(run, pattern):
    for rec in run["kmsg"]:
        m = re.search(pattern, rec[3])
        if m:
            return [int(g) for g in m.groups() if g is not None]
    return None


def pages_to_copy(run, version):
    """The kernel's own count of pages to copy: "Need to copy N pages" before 6.19;
    from 6.19 swsusp_save() logs it (and "Image created") with pm_deferred_pr_dbg, not
    under /dev/snapshot, and enough_free_mem()'s "Normal pages needed: N + M" has the same
    N (no highmem on x86-64)."""
    if version >= (6, 19):
        assert log_value(run, r"Need to copy \d+ pages") is None
        return log_value(run, r"Normal pages needed: (\d+) \+")[0]
    return log_value(run, r"Need to copy (\d+) pages")[0]


def value(run, name, method=None):
    row = run["metrics"].get(name)
    assert row is not None, f"{name} missing: {run['nm'].get(name)}"
    if method:
        assert row["method"] == method, (name, row)
    return row["value"]


def freezer_pass_ms(run, stage):
    """try_to_freeze_tasks' own span for one stage (user/kernel), from the probe events:
    the interval the kernel's "(elapsed S.mmm seconds)" measures."""
    ev = [e for e in run["events"] if e["name"] == "try_to_freeze_tasks"]
    begin = next(e for e in ev if e["kind"] == "begin" and e["detail"] == f"stage={stage}")
    end = next(e for e in ev if e["kind"] == "end" and e["ts_ns"] >= begin["ts_ns"])
    return (end["ts_ns"] - begin["ts_ns"]) / 1e6


# How far above the kernel's logged elapsed time the probe's span may be: the log truncates
# to whole ms (< 1 ms), and the span also holds the "completed" printk and the kretprobe.
# On an idle host the lab measured 0.55-1.43 ms; with the host's cores oversubscribed
# (TCG vCPUs descheduled) up to 9.4 ms. The bound is for the latter; the figures are printed.
FREEZE_SLACK_MS = 1.0 + 15.0


def check_freeze_time(run):
    """The probe's user-space freezer pass against the kernel's own elapsed time."""
    s, ms = log_value(run, r"Freezing user space processes completed \(elapsed (\d+)\.(\d{3})")
    logged = s * 1000 + ms
    probe = freezer_pass_ms(run, "user")
    assert logged - 0.01 <= probe <= logged + FREEZE_SLACK_MS, (probe, logged)
    # freeze_user_ms is the kernel's quantity, the freezer's sweeps: within the log's 1 ms
    assert logged - 0.5 <= value(run, "freeze_user_ms", "probe") < logged + 1, (value(run, "freeze_user_ms"), logged)
    # freeze_user_call_ms is the whole freeze_processes(): it contains that pass
    assert value(run, "freeze_user_call_ms", "probe") >= probe
    return probe - logged


def test_print_figures(job):
    """Benchmark-style summary of what was measured (printed, no timing asserts)."""
    print(f"\n{job['distro']} {job['release']}: VM {job['vm_s']:.0f} s")
    for step, res in job["steps"].items():
        print(f"  {step}: rc={res.get('rc')} {res['step_s']:.1f} s")
    for name in ("snapshot", "shrink", "freezer", "none"):
        _, runs = capture(job, name)
        for run in runs:
            m = {k: round(v["value"], 3) for k, v in run["metrics"].items()}
            keys = ("cycle_ms", "create_image_ms", "freeze_user_ms", "freeze_kernel_ms", "prealloc_ms",
                    "preallocated_pages", "shrink_requested_pages", "shrink_reclaimed_pages",
                    "copy_pages", "zero_pages", "image_pages", "copy_window_ms")
            print(f"  {name} run {run['run_id']} {run['status']}: "
                  + ", ".join(f"{k}={m[k]}" for k in keys if k in m))
            if log_value(run, r"Freezing user space processes completed") is not None \
                    and any(e["name"] == "try_to_freeze_tasks" for e in run["events"]):
                s, ms = log_value(run, r"completed \(elapsed (\d+)\.(\d{3})")
                print(f"    user freezer pass: probe {freezer_pass_ms(run, 'user'):.3f} ms, "
                      f"kernel log {s * 1000 + ms} ms")


def test_three_snapshot_runs_match_the_kernel(job):
    res = job["steps"]["snapshot"]
    assert res["rc"] == 0, res["stderr"][-2000:]
    meta, runs = capture(job, "snapshot")
    assert meta["trigger"] == "snapshot" and meta["kernel_release"] == job["release"]
    assert [r["status"] for r in runs] == ["complete"] * 3
    for run in runs:
        assert run["ringbuf_drops"] == 0
        # pages allocated for the snapshot: probe (swsusp_show_speed) == kernel log
        assert value(run, "preallocated_pages", "probe") == log_value(
            run, r"Allocated (\d+) pages for snapshot")[0]
        need = pages_to_copy(run, job["version"])
        copy = value(run, "copy_pages", "probe")
        if job["version"] >= (6, 19):  # no "Image created": the device's size checks it below
            assert log_value(run, r"Image created") is None
            assert need == copy + value(run, "zero_pages", "probe")
        else:
            copied = log_value(run, r"Image created \((\d+) pages copied(?:, (\d+) zero pages)?\)")
            assert copy == copied[0]
            if job["version"] >= (6, 6):
                assert value(run, "zero_pages", "probe") == copied[1]
                assert need == copy + copied[1]
            else:
                assert need == copy
        # the image size the device reports == data + metadata + header pages
        image_bytes = value(run, "image_bytes", "device")
        assert image_bytes == (copy + value(run, "meta_pages", "probe") + 1) * PAGE
        assert value(run, "image_read_bytes", "device") == image_bytes
        assert value(run, "image_pages") == image_bytes / PAGE
        check_freeze_time(run)
        # the fast path: no shrink, said so (not a zero)
        for name in ("shrink_requested_pages", "shrink_reclaimed_pages"):
            assert name not in run["metrics"]
            assert run["nm"][name] == "fast path: shrink_all_memory not called"
        assert value(run, "create_image_ms", "recorder") > 0
        assert value(run, "cycle_ms", "recorder") > value(run, "create_image_ms")


def test_shrinking_cycle(job):
    """--image-size 100M, well below the saveable pages: the slow path. The kernel shrinks
    by saveable - size, where size = max(image_size, minimum image) (the minimum being what
    cannot be reclaimed), then frees preallocated pages until saveable <= size."""
    res = job["steps"]["shrink"]
    assert res["rc"] == 0, res["stderr"][-2000:]
    meta, runs = capture(job, "shrink")
    assert meta["image_size"] == str(100 << 20)
    assert res["power_after"]["image_size"] != str(100 << 20)  # restored
    (run,) = runs
    assert run["status"] == "complete"
    wanted = (100 << 20) // PAGE
    saveable = value(run, "saveable_pages", "probe")
    requested = value(run, "shrink_requested_pages", "probe")
    reclaimed = value(run, "shrink_reclaimed_pages", "probe")
    assert saveable > wanted and requested > 0 and reclaimed >= 0
    size = saveable - requested  # shrink_all_memory(saveable - size)
    assert size >= wanted
    allocated = log_value(run, r"Allocated (\d+) pages for snapshot")[0]
    after = value(run, "saveable_after_pages", "probe")
    # The second count is the kernel's, checked below against its "Allocated N"; that it is
    # below the first is not something the kernel promises, so it is printed, not asserted.
    # How far it falls varies from run to run: 6.1 gave 44,344 -> 41,856 (shrink_all_memory
    # reclaimed 2,754) and 49,099 -> 39,955 (2,558); 6.12 gave 45,448 -> 42,938 (2,992). When
    # it falls by little more than the shrink, other pages can outweigh that: count_data_pages
    # counts pages on the per-CPU free lists as saveable (mark_free_pages marks only the buddy
    # lists; swsusp_save drains before the copy's count, preallocation does not). It rose
    # twice, each time with a second guest beside: 6.12 gave 40,745 -> 41,936. The image's
    # direction is asserted on the copy, counted after the drain (need < saveable, below).
    assert value(run, "preallocated_pages", "probe") == allocated
    # on the slow path the kernel trims its preallocation to the saveable pages left
    # (free_unnecessary_pages counts them): the probes' last count is its "Allocated N"
    assert value(run, "saveable_after_pages", "probe") == allocated
    copy = value(run, "copy_pages", "probe")
    if job["version"] < (6, 19):
        assert copy == log_value(run, r"Image created \((\d+) pages copied")[0]
    assert value(run, "image_bytes", "device") == (copy + value(run, "meta_pages", "probe") + 1) * PAGE
    need = pages_to_copy(run, job["version"])
    # the image moved towards the target; how far is the zone's to say: with small idle
    # images the kernel's target is its own minimum-image estimate, which the pressure can
    # stop well short of (6.1: 38,398 pages to copy for a target of 32,284 from 43,824
    # saveable), so only the direction is asserted and the distance printed
    assert need < saveable, (need, size, saveable)
    print(f"\n{job['distro']}: saveable {saveable:.0f}, image_size {wanted}, kernel size {size:.0f}, "
          f"shrink {reclaimed:.0f}/{requested:.0f}, saveable after preallocation {after:.0f} "
          f"({after - saveable:+.0f}), to copy {need} "
          f"({(saveable - need) / (saveable - size):.0%} of the way), recorder locked "
          f"{meta.get('recorder_locked_kb')} kB")


def test_pm_test_freezer(job):
    res = job["steps"]["freezer"]
    assert res["rc"] == 0, res["stderr"][-2000:]
    assert res["power_after"]["pm_test"].split("[")[1].startswith("none]")  # restored
    meta, runs = capture(job, "freezer")
    assert meta["pm_test"] == "freezer" and meta["trigger"] == "pm-test:freezer"
    (run,) = runs
    assert run["status"] == "complete", run["error"]
    check_freeze_time(run)
    assert value(run, "freeze_kernel_ms") >= 0
    assert value(run, "prealloc_ms", "probe") > 0
    assert value(run, "preallocated_pages", "probe") == log_value(
        run, r"Allocated (\d+) pages for snapshot")[0]
    for name in ("copy_pages", "image_pages", "image_bytes", "copy_window_ms"):
        assert name not in run["metrics"]
        assert run["nm"][name] == "not reached: pm_test=freezer"
    assert log_value(run, r"Image created \((\d+)") is None


def test_trigger_none_records_a_cycle_started_elsewhere(job):
    res = job["steps"]["none"]
    assert res["ready"] and res["rc"] == 0, res["stderr"][-2000:]
    assert res["other"]["rc"] == 0, res["other"]["stderr"][-2000:]
    meta, runs = capture(job, "none")
    assert meta["trigger"] == "none"
    (run,) = runs
    assert run["status"] == "complete", run["error"]
    ioctls = {e["pid"] for e in run["events"] if e["name"] == "snapshot_ioctl"}
    assert ioctls, "the other process's /dev/snapshot ioctls were not seen"
    assert value(run, "preallocated_pages", "probe") == log_value(
        run, r"Allocated (\d+) pages for snapshot")[0]
    # the other recorder's own capture (no probes) has the same cycle's kernel figures
    _, other = capture(job, "none-other")
    if job["version"] < (6, 19):
        assert value(run, "copy_pages", "probe") == log_value(run, r"Image created \((\d+)")[0]
    # the image the other recorder read from the device is the one the probes counted
    assert value(run, "image_pages", "probe") * PAGE == value(other[0], "image_bytes", "device")
    assert value(other[0], "preallocated_pages", "kernel-log") == value(run, "preallocated_pages")


def test_recorder_killed_mid_cycle(job):
    res = job["steps"]["kill"]
    assert res["first_run"]
    assert res["killed_in_freeze"] and res["rc"] == -9, res["stderr"][-2000:]
    # the kill lands in the cycle after the first committed run (or, on a slow host, a later
    # one): the runs committed before it are all there, the killed cycle is not
    assert res["runs_after_kill"] >= 1
    # it died mid-cycle (user space had been frozen) and closing /dev/snapshot thawed
    log = res["killed_cycle_log"]
    assert any("Freezing user space processes" in line for line in log), log
    assert any(re.search(r"Restarting tasks(?: \.\.\.|:) [Dd]one", line) for line in log), log
    _, runs = capture(job, "kill")  # readable, the completed runs intact
    *done, killed = runs
    assert len(done) == res["runs_after_kill"] < 3
    assert all(r["status"] == "complete" and value(r, "copy_pages") > 0 for r in done)
    # the killed cycle's row, committed as it began, says what happened to it
    from snapprof.capture import STOPPED_IN_CYCLE
    assert (killed["status"], killed["error"]) == ("incomplete", STOPPED_IN_CYCLE), killed
    # the system kept running: a new cycle works (/dev/snapshot was released, nothing frozen)
    assert res["after"]["rc"] == 0, res["after"]["stderr"][-2000:]
    _, after = capture(job, "after-kill")
    assert after[0]["status"] == "complete"
    assert res["power_after"]["pm_test"].split("[")[1].startswith("none]")
