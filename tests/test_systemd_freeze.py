"""systemd's cgroup freeze of user.slice as the recorder sees it (issue 18): the threads that
hold it up (snapprof.record.slicewatch, read from a cgroup tree and /proc laid out as 6.12
shows them), systemd's part read from the journal by the recorder (snapprof.record.journal),
a freeze systemd gave up on, and the report naming what held it up, failed run or not.

The /proc and cgroup contents below are what the lab's systemd guest showed (trixie 6.12,
systemd 257): a stat stuck on a FUSE file system nobody serves (state D, wchan fuse_get_req)
while a sleep in another scope was parked by the cgroup freezer (wchan get_signal).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from snapprof.analysis import failures as fa
from snapprof.analysis.frames import load_capture
from snapprof.capture import CaptureWriter, Run
from snapprof.record import journal
from snapprof.record import triggers as trg
from snapprof.record.slicewatch import SliceWatch

FUSE_STACK = """\
[<0>] fuse_get_req+0x15e/0x300
[<0>] __fuse_simple_request+0x40/0x290
[<0>] fuse_lookup_name+0xbc/0x200
[<0>] fuse_lookup+0x7f/0x1a0
[<0>] __lookup_slow+0x89/0x130
[<0>] walk_component+0xdb/0x150
[<0>] vfs_statx+0x8d/0x100
[<0>] do_syscall_64+0x87/0x1b0
[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e
"""


def _task(proc: Path, tid: int, comm: str, state: str, wchan: str, stack: str = "",
          cmdline: bytes = b"") -> None:
    d = proc / str(tid)
    d.mkdir(parents=True)
    (d / "stat").write_text(f"{tid} ({comm}) {state} 1 {tid} {tid} 0 -1 4194560 0 0\n")
    (d / "wchan").write_text(wchan)
    (d / "stack").write_text(stack)
    (d / "status").write_text(f"Name:\t{comm}\nState:\t{state}\nTgid:\t{tid}\n")
    (d / "cmdline").write_bytes(cmdline)


def _tree(tmp_path, freeze="1", frozen="0"):
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    sl = root / "user.slice"
    for scope, tids in (("snapprof-lab-stuck.scope", "450\n"), ("sleeper.scope", "451\n"),
                        ("stopped.scope", "452\n")):
        (sl / scope).mkdir(parents=True)
        (sl / scope / "cgroup.threads").write_text(tids)
    (sl / "cgroup.threads").write_text("")
    (sl / "cgroup.freeze").write_text(freeze + "\n")
    (sl / "cgroup.events").write_text(f"populated 1\nfrozen {frozen}\n")
    _task(proc, 450, "stat", "D", "fuse_get_req", FUSE_STACK, b"stat\0/run/snapprof-stuck/x\0")
    _task(proc, 451, "sleep", "S", "get_signal", "[<0>] get_signal+0x1/0x2\n", b"sleep\x0010000\0")
    _task(proc, 452, "vi", "T", "do_signal_stop", "", b"vi\0")
    return root, proc


class Clock:
    def __init__(self):
        self.ns = 1_000_000_000

    def __call__(self):
        return self.ns

    def step(self, s):
        self.ns += int(s * 1e9)


def test_a_freeze_held_up_lists_the_threads_the_cgroup_freezer_could_not_park(tmp_path):
    root, proc = _tree(tmp_path)
    clock = Clock()
    w = SliceWatch(root=str(root), proc=str(proc), clock=clock)
    assert w.available
    w.poll()  # asked for: too early to call it held up
    assert w.seen.requested_ns == clock.ns and not w.seen.holders
    for _ in range(3):
        clock.step(0.25)
        w.poll()
    assert not w.seen.holders  # 0.75 s: not yet
    for _ in range(6):
        clock.step(0.25)
        w.poll()
    seen = w.take()  # listed at 1 s, again at 2 s (the last list is kept)
    assert seen.held_up and seen.frozen_ns is None and seen.held_s == pytest.approx(2.0)
    (row,) = seen.holders  # the parked sleep and the stopped vi are not listed
    kind, stage, pid, tgid, comm, cmdline, state, wchan, stack, source, note, probe = row
    assert (kind, stage, pid, tgid, comm, state, wchan) == ("cgroup", "user.slice", 450, 450, "stat",
                                                            "D", "fuse_get_req")
    assert cmdline == "stat /run/snapprof-stuck/x"
    assert stack.split("\n")[:2] == ["fuse_get_req", "__fuse_simple_request"]
    assert source.startswith("/proc/PID/stack")
    assert note.startswith("in /user.slice/snapprof-lab-stuck.scope: not parked by the cgroup freezer 2.0 s after")
    assert probe is None
    assert w.seen.requested_ns is None  # take() starts over


def test_a_wait_channel_that_reads_empty_once_is_the_last_ones(tmp_path):
    """/proc/PID/wchan read 0 for the stuck stat once in the lab (6.12); the list a second
    before had it: the same thread keeps it."""
    root, proc = _tree(tmp_path)
    clock = Clock()
    w = SliceWatch(root=str(root), proc=str(proc), clock=clock)
    w.poll()
    clock.step(1)
    w.poll()
    (proc / "450" / "wchan").write_text("0")
    (proc / "450" / "stack").write_text("")
    clock.step(1)
    w.poll()
    (row,) = w.take().holders
    assert row[7] == "fuse_get_req" and row[8].startswith("fuse_get_req") and "2.0 s" in row[10]


def test_a_freeze_that_completes_names_nobody(tmp_path):
    root, proc = _tree(tmp_path)
    clock = Clock()
    w = SliceWatch(root=str(root), proc=str(proc), clock=clock)
    w.poll()
    (root / "user.slice" / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    clock.step(0.25)
    w.poll()
    clock.step(5)
    w.poll()  # frozen: nothing more is read
    seen = w.take()
    assert not seen.held_up and seen.frozen_ns - seen.requested_ns == 250_000_000


def test_a_freeze_thawed_before_any_cycle_is_forgotten(tmp_path):
    root, proc = _tree(tmp_path)
    clock = Clock()
    w = SliceWatch(root=str(root), proc=str(proc), clock=clock)
    w.poll()
    clock.step(2)
    w.poll()
    assert w.seen.held_up  # `systemctl freeze user.slice` by hand, say
    (root / "user.slice" / "cgroup.freeze").write_text("0\n")
    clock.step(1)
    w.poll()
    assert w.seen.requested_ns is None and not w.seen.holders


def test_no_cgroup_v2_slice_is_no_watch(tmp_path):
    w = SliceWatch(root=str(tmp_path / "none"), proc=str(tmp_path))
    assert not w.available
    w.poll()
    assert w.take().requested_ns is None


def test_the_wait_trigger_polls_the_watch_until_the_cycle_begins_and_hands_it_over(monkeypatch):
    from test_record_unit import RECORDS, FakeReader

    class Watch:
        polls = 0

        def poll(self):
            self.polls += 1

        def take(self):
            return "seen"

    watch = Watch()
    reader = FakeReader([[], [], RECORDS[:3], RECORDS[3:], [], []])
    timeouts = iter(["20000", "3000", "3000", "1"])
    monkeypatch.setattr(trg, "read_power",
                        lambda name, root="/": next(timeouts) if name == "pm_freeze_timeout" else None)
    out = trg.WaitTrigger(reader, poll_s=0.001, settle_s=0.01, watch=watch).run(trg.Interrupts())
    assert out.status == "complete" and out.slice == "seen"
    assert watch.polls == 3  # the idle polls and the one that found the start, none after
    # pm_freeze_timeout as it was when the cycle began, not when the wait began (a job can set it)
    (m,) = [m for m in out.metrics if m[0] == "freeze_timeout_setting_ms"]
    assert m[1] == 3000 and m[2] == "ms" and "last read before the cycle began" in m[4]


# -- the journal, read by the recorder ----------------------------------------------------------

def _e(msg, t, mono=None, **kw):
    return {"MESSAGE": msg, "_SOURCE_REALTIME_TIMESTAMP": str(t), "__MONOTONIC_TIMESTAMP": str(mono or t), **kw}


HELD_UP = [  # what systemd 257 logged in the lab's held-up cycle (times in µs)
    _e("The system will hibernate now!", 86_543_212),
    _e("Starting systemd-hibernate.service - System Hibernate...", 87_143_103),
    _e("sleeper.scope: Unit now frozen-by-parent.", 88_506_926),
    _e("Failed to freeze unit 'user.slice': Connection timed out", 148_540_119),
    _e("Performing sleep operation 'hibernate'...", 148_838_601),
    _e("Failed to put system to sleep. System resumed again: Device or resource busy", 152_281_515),
    _e("Successfully thawed unit 'user.slice'.", 152_416_474),
    _e("Failed to start systemd-hibernate.service - System Hibernate.", 152_767_750),
]


def test_a_freeze_systemd_gave_up_on_is_timed_and_said():
    metrics, missing = journal.journal_figures(HELD_UP)
    got = {m[0]: m[1] for m in metrics}
    assert got["user_slice_freeze_failed_ms"] == (148_540_119 - 87_143_103) / 1000
    assert got["systemd_sleep_pre_ms"] == (148_838_601 - 87_143_103) / 1000
    assert "user_slice_frozen_ms" not in got  # it never froze: no figure made up
    assert "systemd_sleep_call_ms" not in got  # no return from sleep
    assert journal.freeze_failure(HELD_UP) == "Failed to freeze unit 'user.slice': Connection timed out"
    assert journal.freeze_failure(HELD_UP[:2] + HELD_UP[4:]) is None


def test_one_boots_earlier_cycle_is_not_this_ones():
    ok = [_e("Starting systemd-hibernate.service - System Hibernate...", 200_000_000),
          _e("user.slice: Unit now frozen.", 200_100_000),
          _e("Performing sleep operation 'hibernate'...", 200_200_000),
          _e("System returned from sleep operation 'hibernate'.", 260_000_000),
          _e("Finished systemd-hibernate.service - System Hibernate.", 261_000_000)]
    metrics, missing = journal.journal_figures(HELD_UP + ok)
    got = {m[0]: m[1] for m in metrics}
    assert got["user_slice_frozen_ms"] == 100.0 and got["systemd_hibernate_unit_ms"] == 61_000.0
    # the first cycle's give-up is not the second's
    assert "user_slice_freeze_failed_ms" not in got and "user_slice_freeze_failed_ms" in missing
    assert journal.freeze_failure(HELD_UP + ok) is None


def test_read_cycle_waits_for_systemd_to_finish_and_not_for_a_cycle_it_did_not_start():
    batches = [HELD_UP[:5], HELD_UP[:7], HELD_UP]
    calls = []

    def read(since):
        calls.append(since)
        return batches[min(len(calls) - 1, 2)], None

    t = [0.0]
    entries, why = journal.read_cycle(100.0, read=read, clock=lambda: t[0],
                                      sleep=lambda s: t.__setitem__(0, t[0] + s))
    assert why is None and entries == HELD_UP and calls == [100.0] * 3
    # no "Performing sleep operation": not systemd's; given up after settle_s
    calls.clear()
    t[0] = 0.0
    entries, why = journal.read_cycle(100.0, read=lambda s: ([HELD_UP[0]], None), clock=lambda: t[0],
                                      sleep=lambda s: t.__setitem__(0, t[0] + s), settle_s=2)
    assert entries == [HELD_UP[0]] and t[0] == 2.0


def test_journalctl_is_asked_for_this_boot_since_the_wait_and_its_failure_said():
    seen = {}

    def run(argv, **kw):
        seen["argv"] = argv
        return subprocess.CompletedProcess(argv, 0, b'{"MESSAGE": "x", "__MONOTONIC_TIMESTAMP": "1"}\n', b"")

    entries, why = journal.read(1_700_000_000.7, run=run)
    assert why is None and entries == [{"MESSAGE": "x", "__MONOTONIC_TIMESTAMP": "1"}]
    argv = seen["argv"]
    assert argv[:4] == ["journalctl", "-q", "-b", "-o"] and "--since=@1700000000" in argv
    assert argv[-7:] == ["_PID=1", "+", "_UID=0", "SYSLOG_IDENTIFIER=systemd-sleep", "+", "_UID=0",
                         "SYSLOG_IDENTIFIER=systemd-logind"]  # root's only: anyone can use a name

    def bad(argv, **kw):
        return subprocess.CompletedProcess(argv, 1, b"", b"Failed to open journal\nNo journal files were found.\n")

    assert journal.read(0, run=bad) == ([], "journalctl exit 1: No journal files were found.")

    def missing(argv, **kw):
        raise FileNotFoundError(2, "No such file or directory", "journalctl")

    assert journal.read(0, run=missing)[1].startswith("journalctl could not be run:")


def test_without_systemd_every_figure_says_why(tmp_path):
    metrics, missing, notes, events = journal.cycle_part(0, root=str(tmp_path))
    assert metrics == [] and notes == [] and events == []
    assert set(missing) == {s[0] for s in journal.SPANS}
    assert all(w == "systemd's journal not read: this machine does not run systemd "
               "(no /run/systemd/system)" for w in missing.values())
    (tmp_path / "run" / "systemd" / "system").mkdir(parents=True)
    metrics, missing, notes, events = journal.cycle_part(
        0, root=str(tmp_path), read_cycle=lambda since: (HELD_UP, None), before_ns=5, after_ns=7)
    assert {e[5] for e in events} >= {"systemd:logind", "systemd:slice_freeze"}
    assert notes == ["systemd-sleep: Failed to freeze unit 'user.slice': Connection timed out"]
    assert {m[0] for m in metrics} >= {"user_slice_freeze_failed_ms", "systemd_logind_ms"}


# -- the report ---------------------------------------------------------------------------------

def _capture(path, failed=True):
    holder = ("cgroup", "user.slice", 450, 450, "stat", "stat /run/snapprof-stuck/x", "D", "fuse_get_req",
              "fuse_get_req\n__fuse_simple_request\nfuse_lookup_name", "/proc/PID/stack while the cgroup "
              "freeze was pending", "in /user.slice/snapprof-lab-stuck.scope: not parked by the cgroup "
              "freezer 59.8 s after user.slice's freeze was asked for", None)
    refused = ("freeze", "user", 450, 450, "stat", "stat /run/snapprof-stuck/x", "D", None,
               "__schedule\nschedule\nfuse_get_req\n__fuse_simple_request", "kernel log at the failure "
               "(sched_show_task)", None, None)
    w = CaptureWriter(str(path))
    w.set_meta({"kernel_release": "6.12.117+deb13-amd64", "trigger": "none", "pm_freeze_timeout": "20000"})
    w.add_run(Run(trigger="none", status="failed" if failed else "complete",
                  error=("kernel: Freezing user space processes failed after 3.004 seconds (1 tasks "
                         "refusing to freeze, wq_busy=0):; systemd-sleep: Failed to freeze unit "
                         "'user.slice': Connection timed out") if failed else None,
                  kmsg=[(1, 1, 6, "Freezing user space processes"),
                        (2, 2, 3, "Freezing user space processes failed after 3.004 seconds (1 tasks "
                                  "refusing to freeze, wq_busy=0):")] if failed else [],
                  metrics=[("user_slice_freeze_failed_ms", 61397.016, "ms", "journal", "x"),
                           ("freeze_timeout_setting_ms", 3000.0, "ms", "sysfs", "x")],
                  culprits=[holder, refused] if failed else [holder]))
    w.add_run(Run(trigger="none", status="complete", metrics=[("image_pages", 1000.0, "pages", "probe", "x")]))
    w.close()
    return path


@pytest.mark.parametrize("failed", [True, False])
def test_the_report_names_what_held_systemds_freeze_up(tmp_path, failed):
    from snapprof.report.html import render_html
    from snapprof.report.model import build_model
    from snapprof.report.text import render_text

    f = load_capture(_capture(tmp_path / "h.snap", failed))
    (h,) = fa.slice_holdups(f)
    assert (h["run_id"], h["slice"], h["waited_ms"]) == (1, "user.slice", 61397.016)
    assert h["systemd"] == ("Failed to freeze unit 'user.slice': Connection timed out" if failed else None)
    (c,) = h["holders"]
    assert c["signature"] == "FUSE daemon" and c["also_refused"] is failed
    assert c["top_frames"][0] == "fuse_get_req"
    if failed:  # the run's own freeze timeout, not the recording's (meta: 20 s)
        assert fa.failed_runs(f)[0]["freeze"]["timeout_ms"] == 3000
    model = build_model(f)
    text = render_text(model)
    status = "failed" if failed else "complete"
    assert (f"SYSTEMD'S FREEZE OF user.slice HELD UP in run 1 ({status}): systemd-sleep waited 61.4 s "
            "and gave up") in text
    assert ("pid 450 stat state D, in fuse_get_req: stat /run/snapprof-stuck/x"
            + (" (the kernel's freezer named it too)" if failed else "")) in text
    assert "FUSE daemon:" in text and "fusermount -u" in text
    page = render_html(model)
    assert 'id="slice-holdup"' in page and "systemd-sleep waited 61.4 s" in page
    if not failed:  # a held-up freeze is shown even when the hibernation went through
        assert "HIBERNATION FAILED" not in text and 'id="failure"' not in page


def test_captures_without_a_held_up_freeze_have_no_such_section():
    f = load_capture(Path(__file__).parent / "data" / "trixie-6.12-trigger-hibernate.snap")
    assert fa.slice_holdups(f) == []


def test_systemds_spans_go_on_the_timeline_on_the_probes_clock(tmp_path):
    """The marks' sender wall-clock times minus CLOCK_REALTIME - CLOCK_BOOTTIME, read before
    the cycle for the marks before the sleep operation and after it for the rest; the report's
    timeline draws them above the kernel's phases, from the first of them."""
    from snapprof.analysis.phases import SYSTEMD_SPANS
    from snapprof.report.html import render_html
    from snapprof.report.model import build_model

    assert set(SYSTEMD_SPANS) == set(journal.TIMELINE)
    before, after = 86_000_000_000, 80_000_000_000  # the RTC set the wall clock back 6 s at resume
    ev = journal.timeline_events(HELD_UP, before, after)
    spans = {}
    for ts, cpu, pid, comm, kind, name, value, detail in ev:
        spans.setdefault(name, {})[kind] = ts
        assert detail.startswith("systemd journal: ") and "CLOCK_BOOTTIME" in detail
    assert set(spans) == {"systemd:logind", "systemd:sleep_pre", "systemd:slice_freeze",
                          "systemd:sleep", "systemd:sleep_post"}  # no thaw: the sleep failed
    assert spans["systemd:logind"] == {"begin": 86_543_212_000 - before, "end": 87_143_103_000 - before}
    # the freeze systemd gave up on: from the unit's start to "Failed to freeze unit"
    assert spans["systemd:slice_freeze"]["end"] == 148_540_119_000 - before
    # across the sleep operation: its end mark on the offset read after the cycle
    assert spans["systemd:sleep"] == {"begin": 148_838_601_000 - before, "end": 152_281_515_000 - after}
    assert journal.timeline_events(HELD_UP, None, after) == [
        e for e in ev if e[5] == "systemd:sleep_post"]  # no offset before: only the spans after

    w = CaptureWriter(str(tmp_path / "t.snap"))
    w.set_meta({"kernel_release": "6.12.117+deb13-amd64", "trigger": "none"})
    kernel = [(148_900_000_000 - before, 0, 9, "systemd-sleep", "begin", "freeze_processes", None, None),
              (148_910_000_000 - before, 0, 9, "systemd-sleep", "end", "freeze_processes", None, None)]
    w.add_run(Run(trigger="none", status="complete", events=kernel + ev, started_ns=148_880_000_000 - before))
    w.close()
    model = build_model(load_capture(tmp_path / "t.snap"))
    (t,) = model["timelines"]["runs"]
    rows = {p["phase"]: p for p in t["phases"]}
    assert [p["phase"] for p in t["phases"]][:2] == ["systemd:logind", "systemd:sleep_pre"]
    assert rows["systemd:logind"]["start_ms"] == 0  # the timeline starts with systemd's part
    assert rows["systemd:slice_freeze"]["duration_ms"] == pytest.approx((148_540_119 - 87_143_103) / 1000)
    assert rows["freeze_user"]["start_ms"] == pytest.approx((148_900_000 - 86_543_212) / 1000)
    assert rows["systemd:sleep"]["method"] == "journal, wall clock"
    page = render_html(model)
    assert "systemd: user.slice freeze" in page
