"""systemd's part of a `systemctl hibernate`, from the systemd journal.

Standard library only (the recorder reads it; the lab's systemd cycle, snapprof.lab.systemd,
reads the same from the journal its guest leaves). Differences between the messages of
systemd-logind, PID 1 and systemd-sleep, each on one clock (see SPANS): the senders' socket
timestamps (wall clock) for spans on one side of the hibernation, journald's receive times on
CLOCK_MONOTONIC for the sleep call across it (that clock stands still while the clocks are
suspended and never counts the discarded writer's time, the power-off or the boot kernel), and
the wall clock (set from the RTC at resume: 1 s resolution) from systemd-sleep's start to its
return, which is everything the user waited for. PID 1 logs user.slice's freezer state changes
only at debug level.

When systemd cannot freeze user.slice (a task the cgroup freezer cannot park, see
snapprof.record.slicewatch), systemd-sleep logs "Failed to freeze unit 'user.slice': ..." after
its 60 s wait and hibernates anyway; `user_slice_freeze_failed_ms` is that wait and
freeze_failure() the message.

    read_cycle(since_s, ...) -> entries    # journalctl -b, this cycle's messages (the recorder)
    journal_figures(entries) -> (metrics, {name: reason})
    freeze_failure(entries) -> "Failed to freeze unit 'user.slice': ..." or None
    timeline_events(entries, before_ns, after_ns) -> its spans as the run's events (TIMELINE)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Iterable

JOURNAL_FIELDS = ("MESSAGE", "MESSAGE_ID", "SYSLOG_IDENTIFIER", "UNIT", "_PID", "_TRANSPORT",
                  "_SOURCE_REALTIME_TIMESTAMP", "_SOURCE_MONOTONIC_TIMESTAMP", "JOB_RESULT")

JOURNAL_SOURCE = "systemd journal of this boot (the restored system's, after a hibernation)"
_UNIT = "systemd-hibernate.service"
_FREEZER = "user.slice: Freezer state changed "
# name -> (the message, which side of systemd-sleep's "Performing sleep operation" it is on)
_MARKS = {
    "logind": ("The system will hibernate now!", "before"),
    "unit_start": (f"Starting {_UNIT}", "before"),
    # PID 1 logs its freezer's state changes at debug level only (guest_job(debug=True))
    "freeze_start": (_FREEZER + "running -> freezing", "before"),
    "frozen": (_FREEZER + "freezing -> frozen", "before"),
    "slice_frozen": ("user.slice: Unit now frozen", "before"),  # info level
    "sleep_start": ("Performing sleep operation 'hibernate'", None),
    "sleep_return": ("System returned from sleep operation 'hibernate'", "after"),
    "thaw_start": (_FREEZER + "frozen -> thawing", "after"),
    "thawed": (_FREEZER + "thawing -> running", "after"),
    "slice_thawed": ("user.slice: Unit now thawed", "after"),  # info level
    "unit_finish": (f"Finished {_UNIT}", "after"),
    # a cgroup freeze systemd-sleep gave up on (60 s in systemd 257), and a failed sleep
    "freeze_failed": ("Failed to freeze unit 'user.slice'", "before"),
    "sleep_failed": ("Failed to put system to sleep", "after"),
    "unit_failed": (f"Failed to start {_UNIT}", "after"),
}


def read_journal(text: str) -> list[dict]:
    """`journalctl -o json` output (one object a line) -> entries; bad lines skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and isinstance(e.get("MESSAGE"), str):
            out.append(e)
    return out


def _usec(e: dict, key: str) -> int | None:
    try:
        return int(e[key])
    except (KeyError, TypeError, ValueError):
        return None


def sleep_marks(entries: Iterable[dict]) -> dict[str, dict]:
    """The journal entries of systemd's hibernation: the last "Performing sleep operation
    'hibernate'" and, before it, the last of each mark that comes before it (PID 1 starting
    systemd-hibernate.service, user.slice's freezer), after it the first of each mark that
    comes after (systemd-sleep's return, the thaw, the unit finished). The marks before it
    are looked for after the sleep operation before it, if any: one boot's earlier cycles
    (one held up and failed, then one that went through) are not this one's."""
    entries = list(entries)
    starts = [i for i, e in enumerate(entries) if e["MESSAGE"].startswith(_MARKS["sleep_start"][0])]
    if not starts:
        return {}
    s = starts[-1]
    first = starts[-2] + 1 if len(starts) > 1 else 0
    marks = {"sleep_start": entries[s]}
    for name, (text, side) in _MARKS.items():
        if side == "before":
            found = [e for e in entries[first:s] if e["MESSAGE"].startswith(text)]
            if found:
                marks[name] = found[-1]
        elif side == "after":
            hit = next((e for e in entries[s + 1:] if e["MESSAGE"].startswith(text)), None)
            if hit:
                marks[name] = hit
    return marks


# The clocks: journald's receive time on CLOCK_MONOTONIC (of the restored system: it stands
# still while the clocks are suspended, and the writer's time after the copy, the power-off
# and boot 2 belong to a discarded timeline), and the sender's socket timestamp on the wall
# clock (_SOURCE_REALTIME_TIMESTAMP: when the message was sent, not when a busy journald read
# it; the kernel sets the wall clock from the RTC at resume, 1 s resolution, so a span across
# the hibernation includes all the time the user waited).
MONO, SENT = "__MONOTONIC_TIMESTAMP", "_SOURCE_REALTIME_TIMESTAMP"
CLOCKS = {MONO: "journald receive times, CLOCK_MONOTONIC",
          SENT: "the senders' socket timestamps, wall clock"}
# (name, from mark, to mark, clock, what it is)
SPANS = (
    ("systemd_logind_ms", "logind", "unit_start", SENT,
     "systemd-logind's \"The system will hibernate now!\" -> systemd-hibernate.service starting: "
     "logind's go-ahead (its delay inhibitors) and PID 1 queueing hibernate.target"),
    ("systemd_sleep_pre_ms", "unit_start", "sleep_start", SENT,
     "systemd-hibernate.service starting -> systemd-sleep's \"Performing sleep operation\": "
     "systemd-sleep's start, the user.slice freeze, the sleep hooks, the resume settings"),
    ("user_slice_frozen_ms", "unit_start", "slice_frozen", SENT,
     "systemd-hibernate.service starting -> PID 1's \"user.slice: Unit now frozen\": "
     "systemd-sleep's start and the cgroup freeze of user.slice"),
    ("user_slice_freeze_failed_ms", "unit_start", "freeze_failed", SENT,
     "systemd-hibernate.service starting -> systemd-sleep's \"Failed to freeze unit "
     "'user.slice'\": systemd-sleep's start and its wait for a cgroup freeze of user.slice "
     "that did not complete (it hibernates anyway)"),
    ("user_slice_freeze_ms", "freeze_start", "frozen", SENT,
     "PID 1: user.slice's cgroup freezer running -> freezing -> frozen"),
    ("systemd_sleep_call_ms", "sleep_start", "sleep_return", MONO,
     "\"Performing sleep operation\" -> \"System returned from sleep operation\": the kernel's "
     "part as the restored system's CLOCK_MONOTONIC counts it (not the atomic copy, nor the "
     "writing, the power-off and boot 2)"),
    ("user_slice_thawed_ms", "sleep_return", "slice_thawed", SENT,
     "\"System returned from sleep operation\" -> PID 1's \"user.slice: Unit now thawed\": "
     "systemd-sleep asking PID 1 to thaw, and the thaw"),
    ("user_slice_thaw_ms", "thaw_start", "thawed", SENT,
     "PID 1: user.slice's cgroup freezer frozen -> thawing -> running"),
    ("systemd_sleep_post_ms", "sleep_return", "unit_finish", SENT,
     "\"System returned from sleep operation\" -> systemd-hibernate.service finished: the "
     "user.slice thaw and the post hooks"),
    ("systemd_hibernate_unit_ms", "unit_start", "unit_finish", MONO,
     "systemd-hibernate.service starting -> finished"),
    ("systemd_sleep_wall_ms", "sleep_start", "sleep_return", SENT,
     "\"Performing sleep operation\" -> \"System returned from sleep operation\" on the wall "
     "clock, set from the RTC at resume (1 s resolution): everything the user waited for, "
     "the powered-off time included"),
)
METHOD = "journal"
DEBUG_ONLY = {"freeze_start", "frozen", "thaw_start", "thawed"}


def journal_figures(entries: Iterable[dict]) -> tuple[list[tuple], dict[str, str]]:
    """(metrics, not_measured) of systemd's part of one hibernation, from the restored
    system's journal: metrics as ``(name, value_ms, "ms", "journal", source)``, each the
    difference of two timestamps on one clock; not_measured: {name: reason} for those a
    message or a timestamp was missing for."""
    marks = sleep_marks(entries)
    metrics, missing = [], {}
    if not marks:
        why = ("not in the journal: no \"Performing sleep operation "
               "'hibernate'\" (systemd-sleep did not hibernate this system)")
        return [], {name: why for name, *_ in SPANS}
    for name, a, b, clock, what in SPANS:
        ea, eb = marks.get(a), marks.get(b)
        lacking = [m for m, e in ((a, ea), (b, eb)) if e is None]
        if lacking == ["freeze_failed"]:
            missing[name] = ("not in the journal: systemd-sleep logged no \"Failed to freeze unit "
                             "'user.slice'\" (it froze the slice, or does not freeze it: systemd "
                             "before 256, or SYSTEMD_SLEEP_FREEZE_USER_SESSIONS=0)")
            continue
        if lacking:
            texts = " and no ".join(f"\"{_MARKS[m][0]}\"" for m in lacking)
            why = f"not in the journal: no {texts}"
            if set(lacking) <= DEBUG_ONLY:
                why += " (PID 1 logs user.slice's freezer state changes only at debug level)"
            missing[name] = why
            continue
        ta, tb = _usec(ea, clock), _usec(eb, clock)
        if ta is None or tb is None or tb < ta:
            missing[name] = f"the journal's {clock} of {a} and {b} is missing or runs backwards"
            continue
        metrics.append((name, round((tb - ta) / 1000, 3), "ms", METHOD,
                        f"{JOURNAL_SOURCE}, {CLOCKS[clock]}: {what}"))
    return metrics, missing


def freeze_failure(entries: Iterable[dict]) -> str | None:
    """systemd-sleep's "Failed to freeze unit 'user.slice': ..." of this hibernation, if any."""
    e = sleep_marks(entries).get("freeze_failed")
    return e["MESSAGE"].strip()[:300] if e else None


# -- reading it (the recorder) ----------------------------------------------------------------

#: who logs the marks: PID 1, systemd-sleep, systemd-logind (journalctl matches: "+" ORs, fields
#: side by side AND). Any user can log under any SYSLOG_IDENTIFIER (`logger -t systemd-sleep`):
#: the two identifiers count only with the trusted _UID=0 journald stamps.
MATCHES = ("_PID=1", "+", "_UID=0", "SYSLOG_IDENTIFIER=systemd-sleep", "+", "_UID=0",
           "SYSLOG_IDENTIFIER=systemd-logind")
MAX_ENTRIES = 5000


def available(root: str = "/") -> str | None:
    """None if this machine runs systemd with journalctl, else why the journal is not read."""
    if not os.path.isdir(os.path.join(root, "run/systemd/system")):
        return "this machine does not run systemd (no /run/systemd/system)"
    if shutil.which("journalctl") is None:
        return "no journalctl on this machine"
    return None


def read(since_s: float, timeout_s: float = 10.0, run=subprocess.run) -> tuple[list[dict], str | None]:
    """(entries, None) of this boot's journal from the wall-clock time since_s on, from the
    senders of the marks; ([], why) when journalctl could not give them."""
    argv = ["journalctl", "-q", "-b", "-o", "json", f"--output-fields={','.join(JOURNAL_FIELDS)}",
            f"--since=@{max(0, int(since_s))}", "-n", str(MAX_ENTRIES), "--no-pager", *MATCHES]
    try:
        p = run(argv, capture_output=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError) as exc:
        return [], f"journalctl could not be run: {exc}"
    if p.returncode != 0:
        err = (p.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        return [], f"journalctl exit {p.returncode}" + (f": {err[-1][:200]}" if err else "")
    return read_journal((p.stdout or b"").decode("utf-8", "replace")), None


def read_cycle(since_s: float, settle_s: float = 5.0, deadline_s: float = 20.0,
               poll_s: float = 0.5, read=read, clock=time.monotonic,
               sleep=time.sleep) -> tuple[list[dict], str | None]:
    """This cycle's journal once systemd has finished with it: polled until
    systemd-hibernate.service has finished or failed after systemd-sleep's sleep operation
    (journald, frozen like every task, writes what it was sent after the thaw), for at most
    deadline_s; a journal without a sleep operation after settle_s is not a systemd
    hibernation and is returned as it is."""
    t0 = clock()
    while True:
        entries, why = read(since_s)
        if why is not None:
            return [], why
        marks = sleep_marks(entries)
        if marks and ("unit_finish" in marks or "unit_failed" in marks):
            return entries, None
        waited = clock() - t0
        if (not marks and waited >= settle_s) or waited >= deadline_s:
            return entries, None
        sleep(poll_s)


# -- on the run's timeline ---------------------------------------------------------------------

#: systemd's spans as begin/end events of the run (the report's timeline draws them beside the
#: kernel's phases): event name -> the (from mark, to mark) pairs tried in order.
TIMELINE = {
    "systemd:logind": (("logind", "unit_start"),),
    "systemd:sleep_pre": (("unit_start", "sleep_start"),),
    "systemd:slice_freeze": (("freeze_start", "frozen"), ("unit_start", "slice_frozen"),
                             ("unit_start", "freeze_failed")),
    "systemd:sleep": (("sleep_start", "sleep_return"), ("sleep_start", "sleep_failed")),
    "systemd:slice_thaw": (("thaw_start", "thawed"), ("sleep_return", "slice_thawed")),
    "systemd:sleep_post": (("sleep_return", "unit_finish"), ("sleep_failed", "unit_failed")),
}


def wall_minus_boot_ns() -> int:
    """CLOCK_REALTIME - CLOCK_BOOTTIME now (ns): a wall-clock time minus it is on the probes'
    clock. Read once before the cycle and once after it: the restored kernel sets the wall
    clock from the RTC (1 s resolution) and adds the time away to CLOCK_BOOTTIME."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def timeline_events(entries: Iterable[dict], before_ns: int | None, after_ns: int | None) -> list[tuple]:
    """systemd's spans (TIMELINE) as capture event rows (ts_ns, cpu, pid, comm, kind, name,
    value, detail), on CLOCK_BOOTTIME: each mark's sender wall-clock time minus the
    wall-minus-boot offset read before the cycle (marks before systemd-sleep's sleep
    operation) or after it (the marks after)."""
    marks = sleep_marks(entries)
    out = []
    for name, pairs in TIMELINE.items():
        for a, b in pairs:
            ea, eb = marks.get(a), marks.get(b)
            if ea is None or eb is None:
                continue
            ends = []
            for mark, e, kind in ((a, ea, "begin"), (b, eb, "end")):
                side = _MARKS[mark][1] or "before"
                off = before_ns if side == "before" else after_ns
                us = _usec(e, SENT)
                if off is None or us is None:
                    break
                pid = e.get("_PID")
                ends.append((us * 1000 - off, None, int(pid) if str(pid or "").isdigit() else None,
                             str(e.get("SYSLOG_IDENTIFIER") or "")[:16] or None, kind, name, None,
                             f"systemd journal: {e['MESSAGE'].strip()[:200]} (the sender's wall-clock "
                             f"time on CLOCK_BOOTTIME, offset read {side} the cycle)"))
            if len(ends) == 2 and ends[1][0] >= ends[0][0]:
                out += ends
                break
    return out


def cycle_part(since_s: float, read_cycle=read_cycle, root: str = "/", before_ns: int | None = None,
               after_ns: int | None = None) -> tuple[list, dict, list, list]:
    """(metrics, {name: reason}, notes, events) of systemd's part of the cycle that just
    ended, from the journal since the wall-clock time since_s (the recorder's wait began
    then); events: its spans on the timeline (timeline_events), with the wall-minus-boot
    offsets read before the cycle (before_ns) and after it (after_ns; now if None)."""
    why = available(root)
    entries: list[dict] = []
    if why is None:
        entries, why = read_cycle(since_s)
    if why is not None:
        return [], {name: f"systemd's journal not read: {why}" for name, *_ in SPANS}, [], []
    metrics, missing = journal_figures(entries)
    failure = freeze_failure(entries)
    events = timeline_events(entries, before_ns, wall_minus_boot_ns() if after_ns is None else after_ns)
    return metrics, missing, ([f"systemd-sleep: {failure}"] if failure else []), events
