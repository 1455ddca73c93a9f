"""Hibernation the way users start it: systemd as init, `systemctl hibernate`, the snapprof
service recording it (issue 18). trixie only (systemd 257; a variant image, trixie+systemd).

One cycle, two QEMU boots (about 4 min under TCG): boot 1 installs the package's own service
(`snapprof service install`: `snapprof record --trigger none --rotate /var/lib/snapprof` in
system.slice), starts a process in user.slice, runs `systemctl hibernate` from a scope in
user.slice with PID 1 at debug level (its freezer's state changes are logged only then);
systemd-sleep freezes user.slice and writes the image; boot 2 resumes it. Checks: the
service's capture has the cycle as a complete run with the probes' figures, the service and
the user.slice process came through, both boots' console figures are joined to the run, and
systemd's part of the time, from the restored system's journal, is stored in the run
(method "journal") and is what the journal says (read independently here).
"""

from __future__ import annotations

import io
import json
import re

import pytest

from conftest import SYSTEMD_GUEST as DISTRO
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
    capture, cyc, journal = systemd_hibernate(DISTRO, out, stream=job_out, timeout=1200, debug=True)
    with CaptureReader(capture) as r:
        data = {"runs": r.runs(), "meta": r.meta(),
                "metrics": {m["name"]: m for m in r.table("metrics")},
                "not_measured": {m["name"]: m["reason"] for m in r.table("not_measured")},
                "events": r.table("events")}
    folder = out / f"{DISTRO}-cycle1"
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
    assert any(re.match(r"service run 1: complete", x) for x in marks), marks
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
    for name, value in want.items():
        assert m[name]["value"] == value, name
        assert m[name]["method"] == "journal" and m[name]["unit"] == "ms"
        assert m[name]["source"].startswith("systemd journal of the restored system")
        assert name not in cycle["not_measured"]
    # the kernel's part sits inside systemd-sleep's call: the freeze and the preallocation
    # (before the copy) and the thaw (after it) are on the restored system's clock too
    assert m["systemd_sleep_call_ms"]["value"] > m["prealloc_ms"]["value"]
    assert m["systemd_sleep_call_ms"]["value"] < m["systemd_hibernate_unit_ms"]["value"]
    # the wall clock counts what the monotonic one does not: writing, power-off, boot 2
    assert m["systemd_sleep_wall_ms"]["value"] > (m["systemd_sleep_call_ms"]["value"]
                                                  + m["write_ms"]["value"] + m["read_ms"]["value"])
