"""systemd's cgroup freeze of user.slice, watched while the recorder waits (--trigger none).

Standard library only (the recorder). systemd 256 and later freezes user.slice with the
cgroup v2 freezer before it asks the kernel to hibernate: it writes 1 to cgroup.freeze (the
slice's scopes first, then the slice) and waits for "frozen 1" in the slice's cgroup.events.
systemd 257 waits 60 s, logs "Failed to freeze unit 'user.slice': Connection timed out" and
hibernates anyway (measured in the lab, docs/systemd.md). A thread the cgroup freezer cannot
park holds that wait up to its end: the freezer parks a thread in do_freezer_trap() on its way
back to user space (its wait channel is "do_freezer_trap", or "get_signal" where that is
inlined, as in 6.12), so a thread asleep uninterruptibly in the kernel (state D: a FUSE request
its daemon does not answer, NFS, a driver) never gets there. The kernel's own freezer then
usually fails on the same thread.

The recorder runs outside user.slice (the service is in system.slice), so it sees all this.
Every poll of the wait it reads the slice's cgroup.freeze and cgroup.events; once a freeze has
been pending for HOLD_S without "frozen 1", it lists the slice's threads that are not parked
(SliceWatch.holders) with what /proc says of each then: state, wait channel, kernel stack (as
root), command line and cgroup. The last list before the kernel froze the recorder is kept.
Threads stopped or traced (state T/t) count as frozen for the cgroup freezer, so do a vfork
parent's (wait_for_vfork_done), and neither is listed.

    watch = SliceWatch()          # root=/sys/fs/cgroup, proc=/proc, slice=user.slice
    watch.poll()                  # each poll of the wait until a cycle begins (two small reads)
    watch.take() -> Seen          # what one cycle saw; the watch starts over

A freeze thawed again before any cycle began (`systemctl freeze`, a suspend systemd gave up
on) is forgotten at the poll that finds it thawed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from snapprof.record.culprits import MAX_CMDLINE, MAX_FRAMES, _read, frame_name

SLICE = "user.slice"
HOLD_S = 1.0  # a freeze pending this long is being held up (a normal one takes 8-60 ms in the lab)
REFRESH_S = 1.0  # how often the list of holders is read again while it lasts
MAX_HOLDERS = 32
#: wait channels of a thread the cgroup v2 freezer has parked (do_freezer_trap() inlined
#: into get_signal() in some builds), or that it counts as frozen (a vfork parent)
PARKED = ("do_freezer_trap", "get_signal", "wait_for_vfork_done")
STACK_SOURCE = "/proc/PID/stack while the cgroup freeze was pending"


@dataclass
class Seen:
    """What the watch saw of one cycle's cgroup freeze (CLOCK_BOOTTIME ns, as polled)."""

    slice: str = SLICE
    requested_ns: int | None = None  # the first poll that found the freeze asked for
    frozen_ns: int | None = None  # the first poll that found the slice frozen
    holders: list[tuple] = field(default_factory=list)  # culprit rows (kind "cgroup")
    held_s: float | None = None  # how long the freeze had been pending at the last listing
    poll_s: float | None = None  # the longest gap between polls while it was pending

    @property
    def held_up(self) -> bool:
        return bool(self.holders)


def _events(text: str | None) -> dict[str, str]:
    out = {}
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        out[k] = v.strip()
    return out


class SliceWatch:
    """Polls one slice's cgroup freezer (see the module doc)."""

    def __init__(self, root: str = "/sys/fs/cgroup", proc: str = "/proc", slice: str = SLICE,
                 hold_s: float = HOLD_S, clock=None):
        self.root, self.proc, self.slice = root, proc, slice
        self.dir = os.path.join(root, slice)
        self.hold_s = hold_s
        self.clock = clock or (lambda: time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        self.seen = Seen(slice=slice)
        self._last_poll: int | None = None
        self._listed_at: int | None = None

    @property
    def available(self) -> bool:
        """Whether this machine has the slice under a cgroup v2 freezer."""
        return os.path.isfile(os.path.join(self.dir, "cgroup.freeze"))

    def poll(self) -> None:
        now = self.clock()
        s = self.seen
        freeze = (_read(os.path.join(self.dir, "cgroup.freeze"), 16) or "").strip()
        if freeze != "1":
            if s.requested_ns is not None:  # thawed before any cycle began: not a hibernation's
                self.take()
            self._last_poll = now
            return
        if s.requested_ns is None:
            s.requested_ns = now
        elif self._last_poll is not None and s.frozen_ns is None:
            gap = (now - self._last_poll) / 1e9
            s.poll_s = max(s.poll_s or 0.0, gap)
        self._last_poll = now
        if s.frozen_ns is not None:
            return
        if _events(_read(os.path.join(self.dir, "cgroup.events"), 256)).get("frozen") == "1":
            s.frozen_ns = now
            return
        pending = (now - s.requested_ns) / 1e9
        if pending >= self.hold_s and (self._listed_at is None
                                        or (now - self._listed_at) / 1e9 >= REFRESH_S):
            self._listed_at = now
            rows = self.holders(pending, {r[2]: r for r in s.holders})
            if rows:  # the last list of a freeze that never completed stays
                s.holders, s.held_s = rows, pending

    def take(self) -> Seen:
        """What the watch saw since the last take(); it starts over."""
        seen, self.seen = self.seen, Seen(slice=self.slice)
        self._last_poll = self._listed_at = None
        return seen

    # -- the threads holding the freeze up ------------------------------------------------

    def _threads(self) -> list[tuple[str, int]]:
        """(cgroup path relative to the root, tid) of every thread in the slice."""
        out = []
        for here, dirs, _files in os.walk(self.dir):
            dirs.sort()
            text = _read(os.path.join(here, "cgroup.threads")) or ""
            rel = "/" + os.path.relpath(here, self.root)
            out += [(rel, int(t)) for t in text.split() if t.isdigit()]
            if len(out) > 100_000:
                break
        return out

    def holders(self, pending_s: float, before: dict | None = None) -> list[tuple]:
        """Culprit rows (kind "cgroup", stage = the slice) for the slice's threads that the
        cgroup freezer has not parked, read now. A wait channel or stack that reads empty
        this time (/proc gives 0 while the task is being woken, seen in the lab) is taken
        from `before` ({tid: row}, the last list) for the same thread."""
        rows = []
        for cg, tid in self._threads():
            base = os.path.join(self.proc, str(tid))
            stat = _read(os.path.join(base, "stat"), 4096)
            if not stat or ")" not in stat:
                continue  # gone
            comm = stat[stat.find("(") + 1:stat.rfind(")")]
            rest = stat[stat.rfind(")") + 2:].split()
            state = rest[0] if rest else None
            wchan = (_read(os.path.join(base, "wchan"), 256) or "").strip() or None
            if wchan == "0":
                wchan = None
            if state in ("T", "t") or wchan in PARKED:
                continue
            status = _read(os.path.join(base, "status"), 8192) or ""
            tgid = next((int(v) for k, _, v in (ln.partition(":") for ln in status.splitlines())
                         if k == "Tgid" and v.strip().isdigit()), None)
            raw = _read(os.path.join(self.proc, str(tgid or tid), "cmdline"), MAX_CMDLINE) or ""
            cmdline = " ".join(a for a in raw.split("\0") if a) or None
            frames = [f for f in (frame_name(ln) for ln in
                                  (_read(os.path.join(base, "stack")) or "").splitlines()) if f]
            note = (f"in {cg}: not parked by the cgroup freezer {pending_s:.1f} s after "
                    f"{self.slice}'s freeze was asked for")
            stack = "\n".join(frames[:MAX_FRAMES]) or None
            old = (before or {}).get(tid)
            if old is not None and old[4] == comm:  # the same thread, read a second ago
                wchan = wchan or old[7]
                stack = stack or old[8]
            rows.append(("cgroup", self.slice, tid, tgid, comm, cmdline, state, wchan,
                         stack, STACK_SOURCE if stack else None, note, None))
            if len(rows) >= MAX_HOLDERS:
                break
        return rows
