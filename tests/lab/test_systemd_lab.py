"""Hibernation the way users start it: systemd as init, `systemctl hibernate`, the snapprof
service recording it (issue 18). trixie only (systemd 257; a variant image, trixie+systemd).

Two QEMU boots (about 5.5 min under TCG): boot 1 installs the package's own service
(`snapprof service install`: `snapprof record --trigger none --rotate /var/lib/snapprof` in
system.slice). First a cycle held up: a process in user.slice stuck on a FUSE file system
nobody serves; systemd waits 60 s for user.slice to freeze and gives up, the kernel's freezer
fails on the same process; the service records it as failed, the process named as what held
systemd's freeze up and as the kernel's culprit. Then a cycle that goes through: a process in
user.slice, `systemctl hibernate` from a scope in user.slice with PID 1 at debug level (its
freezer's state changes are logged only then); systemd-sleep freezes user.slice and writes
the image; boot 2 resumes it. Checks: the service's capture has the cycle as a complete run
with the probes' figures, the service and the user.slice process came through, both boots'
console figures are joined to the run, and systemd's part of the time, which the service read
from the journal, is stored in the run (method "journal") and is what the journal says (read
independently here).
"""

from __future__ import annotations

import io
import json
import re

import pytest

from conftest import SYSTEMD_GUEST as DISTRO
from snapprof.record.journal import JOURNAL_SOURCE
from test_hibernate_lab import READ, WROTE, _one

pytestmark = pytest.mark.lab
MARK = "snapprof-lab-systemd:"


@pytest.fixture(scope="module")
def cycle(lab_guest, tmp_path_factory):
    from snapprof.capture import CaptureReader
    from snapprof.lab.systemd import systemd_hibernate

    lab_guest(DISTRO)  # builds the image (from trixie's) if needed
    out = tmp_path_factory.mktemp("systemd")
    job_out = io.StringIO()
    capture, cyc, journal = systemd_hibernate(DISTRO, out, stream=job_out, timeout=1500, debug=True,
                                              blocker=True)
    with CaptureReader(capture) as r:
        data = {"runs": r.runs(), "meta": r.meta(),
                "metrics": {m["name"]: m for m in r.table("metrics")},
                "not_measured": {m["name"]: m["reason"] for m in r.table("not_measured")},
                "events": r.table("events")}
    folder = out / f"{DISTRO}-cycle1"
    data["guest_capture"] = folder / "guest.snap"  # the service's own: both cycles
    with CaptureReader(data["guest_capture"]) as r:
        data["guest"] = {"runs": r.runs(), "culprits": r.table("culprits"), "metrics": r.table("metrics")}
    data["boot1"] = (folder / "boot1" / "console.log").read_text(errors="replace")
    data["boot2"] = (folder / "boot2" / "console.log").read_text(errors="replace")
    data["journal_json"] = (folder / "boot2" / "journal.json").read_text(errors="replace")
    data["output"] = job_out.getvalue()
    data["cycle"] = cyc
    data["journal"] = journal
    m = data["metrics"]
    print(f"\n{DISTRO}: boot 1 {cyc.boot1_s:.0f} s, boot 2 {cyc.boot2_s:.0f} s; "
          + ", ".join(f"{n} {m[n]['value']:.1f} ms" for n in sorted(m)
                      if m[n]["method"] == "journal"))
    return data


def _marks(output: str) -> list[str]:
    return [ln[len(MARK):].strip() for ln in output.splitlines() if ln.startswith(MARK)]


def test_systemctl_hibernate_went_through_systemd_and_came_back(cycle):
    marks = _marks(cycle["output"])
    assert marks[0].startswith("systemd 257"), marks
    assert "hibernate" in marks and marks[-1] == "done", marks
    assert "System returned from sleep operation 'hibernate'." in marks
    assert cycle["cycle"].status == "complete", cycle["cycle"].error
    assert cycle["cycle"].boot2_s is not None  # boot 1 powered off, boot 2 resumed it
    # the boot kernel read the image systemd-sleep had the writing kernel write
    assert WROTE.search(cycle["boot1"]) and READ.search(cycle["boot2"])
    assert "PM: hibernation: hibernation entry" in cycle["boot1"]


def test_the_service_recorded_the_cycle_and_came_through(cycle):
    (run,) = cycle["runs"]
    assert run["status"] == "complete", run["error"]
    marks = _marks(cycle["output"])
    assert any(re.match(r"service run 1: failed", x) for x in marks), marks  # the held-up cycle
    assert any(re.match(r"service run 2: complete", x) for x in marks), marks
    assert "service active" in marks  # still running after the resume
    m = cycle["metrics"]
    assert m["freeze_user_ms"]["method"] in ("kernel-log", "probe")
    assert m["prealloc_ms"]["method"] == "probe" and m["prealloc_ms"]["value"] > 0
    names = {(e["name"], e["kind"]) for e in cycle["events"]}
    assert ("freeze_processes", "begin") in names and ("freeze_processes", "end") in names
    assert cycle["meta"]["lab_distro"] == DISTRO
    assert cycle["meta"]["lab_systemd_version"].startswith("257")


def test_both_boots_figures_are_joined_to_the_services_run(cycle):
    m = cycle["metrics"]
    kb, s, cs, *_ = _one(WROTE, cycle["boot1"])
    assert m["write_kbytes"]["value"] == int(kb)
    assert m["write_ms"]["value"] == int(s) * 1000 + int(cs) * 10
    assert m["write_ms"]["source"].startswith("serial console, writing kernel")
    rkb, rs, rcs, *_ = _one(READ, cycle["boot2"])
    assert m["read_kbytes"]["value"] == int(rkb)
    assert m["read_ms"]["value"] == int(rs) * 1000 + int(rcs) * 10
    assert m["read_ms"]["source"].startswith("serial console, boot kernel")
    assert m["read_pages"]["value"] == m["write_pages"]["value"]
    assert m["lab_offline_ms"]["value"] > 0


def test_user_slice_was_frozen_by_systemd_and_thawed(cycle):
    marks = _marks(cycle["output"])
    assert "user.slice running snapprof-lab-user active" in marks, marks  # thawed, alive
    msgs = [e["MESSAGE"] for e in cycle["journal"]]
    start = max(i for i, t in enumerate(msgs) if t.startswith("Performing sleep operation 'hibernate'"))
    before, after = msgs[:start], msgs[start:]
    assert "Successfully froze unit 'user.slice'." in before
    assert "user.slice: Freezer state changed freezing -> frozen" in before
    assert "user.slice: Freezer state changed thawing -> running" in after


def _entry(journal, pattern, after=None):
    """The last entry matching before "Performing sleep operation", or the first after it."""
    start = max(i for i, e in enumerate(journal) if e["MESSAGE"].startswith("Performing sleep operation"))
    if after:
        return next(e for e in journal[start:] if re.search(pattern, e["MESSAGE"]))
    return [e for e in journal[:start + 1] if re.search(pattern, e["MESSAGE"])][-1]


def test_systemds_part_of_the_time_is_the_journals(cycle):
    m = cycle["metrics"]
    journal = [json.loads(ln) for ln in cycle["journal_json"].splitlines() if ln.startswith("{")]
    logind = _entry(journal, r"^The system will hibernate now!")
    starting = _entry(journal, r"^Starting systemd-hibernate\.service")
    performing = _entry(journal, r"^Performing sleep operation 'hibernate'")
    returned = _entry(journal, r"^System returned from sleep operation", after=True)
    finished = _entry(journal, r"^Finished systemd-hibernate\.service", after=True)
    frozen = (_entry(journal, r"^user\.slice: Freezer state changed running -> freezing"),
              _entry(journal, r"^user\.slice: Freezer state changed freezing -> frozen"))
    thawed = (_entry(journal, r"^user\.slice: Freezer state changed frozen -> thawing", after=True),
              _entry(journal, r"^user\.slice: Freezer state changed thawing -> running", after=True))
    slice_frozen = _entry(journal, r"^user\.slice: Unit now frozen")
    slice_thawed = _entry(journal, r"^user\.slice: Unit now thawed", after=True)

    def span(a, b, clock):
        return round((int(b[clock]) - int(a[clock])) / 1000, 3)

    mono, sent = "__MONOTONIC_TIMESTAMP", "_SOURCE_REALTIME_TIMESTAMP"
    want = {
        "systemd_logind_ms": span(logind, starting, sent),
        "systemd_sleep_pre_ms": span(starting, performing, sent),
        "user_slice_frozen_ms": span(starting, slice_frozen, sent),
        "user_slice_freeze_ms": span(*frozen, sent),
        "user_slice_thawed_ms": span(returned, slice_thawed, sent),
        "systemd_sleep_call_ms": span(performing, returned, mono),
        "user_slice_thaw_ms": span(*thawed, sent),
        "systemd_sleep_post_ms": span(returned, finished, sent),
        "systemd_hibernate_unit_ms": span(starting, finished, mono),
        "systemd_sleep_wall_ms": span(performing, returned, sent),
    }
    # the service's recorder read them itself (its own capture), not only the lab afterwards
    g = cycle["guest"]
    run2 = g["runs"][-1]["run_id"]
    own = {x["name"]: x["value"] for x in g["metrics"] if x["run_id"] == run2 and x["method"] == "journal"}
    assert own == want
    for name, value in want.items():
        assert m[name]["value"] == value, name
        assert m[name]["method"] == "journal" and m[name]["unit"] == "ms"
        assert m[name]["source"].startswith(JOURNAL_SOURCE)
        assert name not in cycle["not_measured"]
    # the kernel's part sits inside systemd-sleep's call: the freeze and the preallocation
    # (before the copy) and the thaw (after it) are on the restored system's clock too
    assert m["systemd_sleep_call_ms"]["value"] > m["prealloc_ms"]["value"]
    assert m["systemd_sleep_call_ms"]["value"] < m["systemd_hibernate_unit_ms"]["value"]
    # the wall clock counts what the monotonic one does not: writing, power-off, boot 2
    assert m["systemd_sleep_wall_ms"]["value"] > (m["systemd_sleep_call_ms"]["value"]
                                                  + m["write_ms"]["value"] + m["read_ms"]["value"])


def test_a_process_holding_up_systemds_freeze_is_named(cycle):
    """The held-up cycle before the one that went through: a process in user.slice stuck on a
    FUSE file system nobody serves. systemd-sleep waited for user.slice to freeze, gave up
    and hibernated anyway; the kernel's freezer failed on the same process. The service
    recorded the cycle as failed, with the process named twice: what held systemd's cgroup
    freeze up (read from /proc while systemd waited) and what refused the kernel's freezer."""
    import subprocess
    import sys

    marks = _marks(cycle["output"])
    blocked = [x for x in marks if x.startswith("blocked ")]
    assert any("Failed to freeze unit 'user.slice'" in x for x in blocked), marks
    assert any("Failed to put system to sleep" in x for x in blocked), marks
    assert "unblocked" in marks, marks
    pid = int(next(x for x in blocked if x.startswith("blocked hibernate pid ")).split()[-1])
    g = cycle["guest"]
    run1, run2 = g["runs"]
    assert run1["status"] == "failed" and run2["status"] == "complete", (run1["error"], run2["error"])
    assert "Freezing user space processes failed" in run1["error"]
    assert "systemd-sleep: Failed to freeze unit 'user.slice'" in run1["error"]
    cul = [c for c in g["culprits"] if c["run_id"] == run1["run_id"]]
    held = [c for c in cul if c["kind"] == "cgroup"]
    assert [c["pid"] for c in held] == [pid]  # only the stuck one: the rest was parked
    c = held[0]
    assert (c["stage"], c["comm"]) == ("user.slice", "stat")
    # its state is one read of /proc/PID/stat while it waits in fuse_get_req: D in every
    # run before, R once (2026-12-02, a wake-up caught); the stack and the kernel's dump
    # below show where it waits either way
    assert c["state"] in ("D", "R"), c
    # /proc/PID/wchan read 0 in one run of two (each listing reads it again): the stack has it
    assert c["wchan"] in ("fuse_get_req", None)
    assert "fuse_get_req" in c["stack"].split("\n")
    assert "in /user.slice/snapprof-lab-stuck.scope: not parked" in c["note"]
    assert c["cmdline"] == "/usr/bin/stat /run/snapprof-stuck/x"  # systemd-run execs the full path
    assert pid in [c["pid"] for c in cul if c["kind"] == "freeze"]  # the kernel's dump
    assert not [c for c in g["culprits"] if c["run_id"] == run2["run_id"] and c["kind"] == "cgroup"]
    # systemd's wait, from the journal the service read: what the journal says (read here)
    journal = [json.loads(ln) for ln in cycle["journal_json"].splitlines() if ln.startswith("{")]
    msgs = [e["MESSAGE"] for e in journal]
    failed_at = next(i for i, t in enumerate(msgs) if t.startswith("Failed to freeze unit 'user.slice'"))
    starting = [e for e in journal[:failed_at] if e["MESSAGE"].startswith("Starting systemd-hibernate")][-1]
    want = round((int(journal[failed_at]["_SOURCE_REALTIME_TIMESTAMP"])
                  - int(starting["_SOURCE_REALTIME_TIMESTAMP"])) / 1000, 3)
    got = {m["name"]: m["value"] for m in g["metrics"] if m["run_id"] == run1["run_id"]}
    assert got["user_slice_freeze_failed_ms"] == want
    assert 60_000 <= want < 90_000  # systemd 257 waits 60 s for the freeze
    assert "user_slice_freeze_failed_ms" not in {m["name"] for m in g["metrics"]
                                                if m["run_id"] == run2["run_id"]}
    # and the report says so
    p = subprocess.run([sys.executable, "-m", "snapprof", "report", str(cycle["guest_capture"]),
                        "--format", "text"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"SYSTEMD'S FREEZE OF user.slice HELD UP in run {run1['run_id']} (failed): systemd-sleep waited" in p.stdout
    assert (f"pid {pid} stat state {c['state']}, in fuse_get_req: /usr/bin/stat /run/snapprof-stuck/x "
            "(the kernel's freezer named it too)") in p.stdout
    # the run's own freeze timeout (the job set 3 s for it after the service began to wait)
    assert "failed after 3.0" in p.stdout and "(timeout 3 s)" in p.stdout
    assert "FUSE daemon:" in p.stdout


def test_systemds_spans_are_on_the_timeline_around_the_kernels_part(cycle):
    """The service put systemd's spans into the run as events on the probes' clock (the
    journal's wall-clock send times minus realtime - boottime, read before the cycle for the
    marks before the sleep operation, after it for the rest). They must sit where they
    happened: user.slice frozen and the sleep call begun before the kernel's hibernate()
    entry; the sleep call ending after hibernate() returned in the restored kernel (within
    the RTC's 1 s: the restored kernel set the wall clock and CLOCK_BOOTTIME's jump from it).
    Mapped with the offset from before the cycle, the end would be off by the time away."""
    ev = cycle["events"]
    sd = {(e["name"], e["kind"]): e["ts_ns"] for e in ev if e["name"].startswith("systemd:")}
    assert {n for n, _ in sd} == {"systemd:logind", "systemd:sleep_pre", "systemd:slice_freeze",
                                  "systemd:sleep", "systemd:slice_thaw", "systemd:sleep_post"}, sd
    hib_begin = min(e["ts_ns"] for e in ev if e["name"] == "hibernate" and e["kind"] == "begin")
    hib_end = max(e["ts_ns"] for e in ev if e["name"] == "hibernate" and e["kind"] == "end")
    assert sd[("systemd:slice_freeze", "end")] < sd[("systemd:sleep", "begin")] < hib_begin
    assert hib_begin - sd[("systemd:sleep", "begin")] < 2e9  # "Performing sleep operation", then disk
    assert hib_end - 1.5e9 < sd[("systemd:sleep", "end")] < hib_end + 5e9
    assert sd[("systemd:sleep", "end")] <= sd[("systemd:slice_thaw", "end")] <= sd[("systemd:sleep_post", "end")]
