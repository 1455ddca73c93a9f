"""The tasks that made a freeze fail, and where each was stuck.

Standard library only (the recorder). When try_to_freeze_tasks() gives up ("Freezing user
space processes failed after 3.004 seconds (1 tasks refusing to freeze, wq_busy=0):")
the kernel prints, for every task still not frozen, sched_show_task(): a header

    task:sh              state:D stack:0     pid:273   ppid:1      flags:0x00004002   (6.1)
    task:sh              state:D stack:0     pid:273   tgid:273   ppid:1      flags:0x00004002

and its kernel stack ("Call Trace:", "<TASK>", one frame a line, "</TASK>"; a frame the
unwinder is unsure of starts with "? "). On a failed *freeze of kernel threads* with
wq_busy set it also dumps the busy workqueues, which are not tasks and are left aside.
After the thaw, a task that is still there is looked up in /proc: its command line, state,
wait channel and, as root, its stack at that moment (a second opinion; the log's is the
one taken at the failure).

Where the log has no dump of a task (an aborted freeze prints none; a lost log record),
the probes' own stack of it is used: with fentry/fexit on freeze_task() the probes take
bpf_get_task_stack() of a task still refusing once the freeze has run half the freeze
timeout (at most 1 s), at every sweep from then on (the last one stays), and the addresses are named here, after the thaw, from
/proc/kallsyms. The probes' stack is kept beside the log's (probe_frames) as a check.

    culprits(records, probe_tasks, proc="/proc", probe_stacks=None) -> [Culprit]
    rows(culprits) -> rows for CaptureWriter (table culprits)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

_FAIL = re.compile(r"Freezing (?:of tasks|(user space processes|remaining freezable tasks)) "
                   r"(failed|aborted) after")
_START = re.compile(r"^(?:PM: )?Freezing (user space processes|remaining freezable tasks)\s*$")
_STAGE = {"user space processes": "user", "remaining freezable tasks": "kernel"}
# sched_show_task(): "task:%-15.15s state:%c" then " stack:%-5lu pid:%-5d [tgid:%-5d] ppid:%-6d ..."
_TASK = re.compile(r"^task:(.{1,15}?)\s*state:(\S)\b.*?\bpid:\s*(\d+)(?:\s+tgid:\s*(\d+))?"
                   r"(?:\s+ppid:\s*(\d+))?")
# a stack frame: "[<0>] " (procfs), "? " (unreliable), "func+0x1a/0x40 [module]"
_FRAME = re.compile(r"^(?:\[<[0-9a-f]+>\]\s+)?(\?\s+)?([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+"
                    r"(?:\s+\[(\w+)\])?")
MAX_FRAMES = 40
MAX_CMDLINE = 4096


@dataclass
class Culprit:
    """One task that refused to freeze."""

    pid: int
    stage: str | None = None  # user / kernel
    tgid: int | None = None
    comm: str | None = None
    cmdline: str | None = None
    state: str | None = None  # one letter, as the kernel shows it (D, R, S ...)
    wchan: str | None = None
    frames: list[str] = field(default_factory=list)  # innermost first: "func" or "func [module]"
    stack_source: str | None = None
    notes: list[str] = field(default_factory=list)
    probe_frames: list[str] = field(default_factory=list)  # the probes' stack at the last sweep


def frame_name(line: str) -> str | None:
    """'func' or 'func [module]' of a stack line, None if it is not a frame; the unwinder's
    unreliable frames ('? func+...') are left out."""
    m = _FRAME.match(line.strip())
    if not m or m.group(1):
        return None
    return f"{m.group(2)} [{m.group(3)}]" if m.group(3) else m.group(2)


def from_log(records) -> list[Culprit]:
    """The tasks the kernel dumped after each failed freeze in this log, in order."""
    out: list[Culprit] = []
    stage: str | None = None
    failing: str | None = None  # the stage whose failure dump we are in
    cur: Culprit | None = None
    for rec in records:
        text = (rec[3] if isinstance(rec, (tuple, list)) else str(rec)).strip()
        m = _START.match(text)
        if m:
            stage, failing, cur = _STAGE[m.group(1)], None, None
            continue
        m = _FAIL.search(text)
        if m:
            failing = _STAGE.get(m.group(1) or "", stage) or "unknown"
            cur = None
            continue
        if failing is None:
            continue
        m = _TASK.match(text)
        if m:
            cur = Culprit(pid=int(m.group(3)), stage=failing, comm=m.group(1).strip(),
                          state=m.group(2), tgid=int(m.group(4)) if m.group(4) else None,
                          stack_source="kernel log at the failure (sched_show_task)")
            out.append(cur)
            continue
        if cur is None:
            continue
        if text in ("Call Trace:", "<TASK>") or text.startswith(("RIP:", "Code:", "RSP:", "RAX:",
                                                                   "RDX:", "RBP:", "R10:", "R13:")):
            continue
        if text == "</TASK>":
            cur = None
            continue
        name = frame_name(text)
        if name is not None:
            if len(cur.frames) < MAX_FRAMES:
                cur.frames.append(name)
        elif not _FRAME.match(text):
            cur = None  # something else: the dump of this task is over
    return out


def _read(path: str, limit: int = 65536) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def from_proc(c: Culprit, proc: str = "/proc") -> None:
    """Fill in what /proc still says of the task (after the thaw): command line, tgid,
    state, wait channel, and the stack where the log had none."""
    base = os.path.join(proc, str(c.pid))
    status = _read(os.path.join(base, "status"))
    if status is None:
        c.notes.append("gone from /proc after the thaw: no command line")
        return
    fields = {}
    for line in status.splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    name = fields.get("Name")
    if c.comm and name and name[:15] != c.comm[:15]:
        c.notes.append(f"pid {c.pid} belongs to another task after the thaw ({name}): nothing read from /proc")
        return
    if c.comm is None and name:
        c.comm = fields["Name"]
    if c.tgid is None and fields.get("Tgid", "").isdigit():
        c.tgid = int(fields["Tgid"])
    kthread = fields.get("Kthread") == "1" or (fields.get("VmSize") is None and c.stage == "kernel")
    raw = _read(os.path.join(base, "cmdline"), MAX_CMDLINE)
    if raw:
        c.cmdline = " ".join(a for a in raw.split("\0") if a) or None
    elif raw is not None and kthread:
        c.cmdline = f"[{c.comm}]" if c.comm else None  # kernel threads have none: ps shows [name]
    if c.cmdline is None:
        c.notes.append("no command line in /proc")
    state_now = fields.get("State", "")[:1] or None
    if c.state is None:
        c.state = state_now
    elif state_now and state_now != c.state:
        c.notes.append(f"state {state_now} after the thaw")
    wchan = _read(os.path.join(base, "wchan"))
    if wchan and wchan.strip() not in ("", "0"):
        c.wchan = wchan.strip()
    if not c.frames:
        stack = _read(os.path.join(base, "stack"))
        frames = [f for f in (frame_name(line) for line in (stack or "").splitlines()) if f]
        if frames:
            c.frames = frames[:MAX_FRAMES]
            c.stack_source = "/proc/PID/stack after the thaw"
        else:
            c.notes.append("no stack: none in the kernel log, /proc/PID/stack unreadable or empty")



def culprits(records, probe_tasks=(), proc: str = "/proc", probe_stacks=None,
             kallsyms: str = "/proc/kallsyms") -> list[Culprit]:
    """Every task that refused to freeze in this cycle: the kernel's dump first, then the
    tasks the probes saw still refusing at the last sweep (RawTask-like: pid, tgid, comm,
    stage 1/2 or 'user'/'kernel', frozen or n_true), each looked up in /proc.
    probe_stacks: {pid: StuckStack} from the probes (fentry only), named from kallsyms."""
    out = from_log(records)
    seen = {c.pid for c in out}
    if probe_stacks:
        _probe_frames(out, probe_tasks, probe_stacks, kallsyms)
        seen = {c.pid for c in out}
    for t in probe_tasks:
        pid, frozen = _get(t, "pid"), _get(t, "frozen")
        if pid is None or pid in seen or frozen != 0:
            continue
        stage = _get(t, "stage")
        stage = {1: "user", 2: "kernel"}.get(stage, stage)
        out.append(Culprit(pid=pid, stage=stage, tgid=_get(t, "tgid"), comm=_get(t, "comm"),
                           notes=["seen by the probes still refusing at the last sweep; the "
                                  "kernel log has no dump of it"]))
        seen.add(pid)
    for c in out:
        from_proc(c, proc)
    return out


@dataclass
class StuckStack:
    """The probes' stack of a task still refusing to freeze (probes/freezer.c, map stuck)."""

    pid: int
    ms_into_freeze: float  # when it was taken, after the freeze's first sweep began
    sweep: int
    addresses: list[int]
    error: int | None = None  # bpf_get_task_stack's -errno, if it failed


def _probe_frames(out: list[Culprit], probe_tasks, stacks: dict, kallsyms: str) -> None:
    """Name the probes' stacks and put each on its culprit: the stack where the log had none,
    always in probe_frames. A task the probes saw stuck but the log did not name is added
    (with the probe task's comm and stage) when the probes' tasks say it never froze."""
    by_pid = {c.pid: c for c in out}
    tasks = {_get(t, "pid"): t for t in probe_tasks}
    names = resolve(sorted({a for st in stacks.values() for a in st.addresses}), kallsyms)
    for pid, st in sorted(stacks.items()):
        c = by_pid.get(pid)
        if c is None:
            t = tasks.get(pid)
            if t is None or _get(t, "frozen") != 0:
                continue  # stuck for a while, then froze: not a culprit
            stage = _get(t, "stage")
            c = Culprit(pid=pid, stage={1: "user", 2: "kernel"}.get(stage, stage),
                        tgid=_get(t, "tgid"), comm=_get(t, "comm"),
                        notes=["seen by the probes still refusing at the last sweep; the "
                               "kernel log has no dump of it"])
            out.append(c)
            by_pid[pid] = c
        if st.error is not None:
            c.notes.append(f"the probes could not take its stack (bpf_get_task_stack: {st.error})")
            continue
        frames = [names.get(a) or f"0x{a:x}" for a in st.addresses][:MAX_FRAMES]
        c.probe_frames = frames
        where = f"probes at the freezer's sweep {st.sweep}, {st.ms_into_freeze:.0f} ms into the freeze"
        if not c.frames and frames:
            c.frames = list(frames)
            c.stack_source = f"{where} (bpf_get_task_stack)"


def resolve(addresses: list[int], path: str = "/proc/kallsyms") -> dict[int, str]:
    """{address: "func" or "func [module]"} for kernel text addresses, from kallsyms, in one
    pass and O(len(addresses)) memory: for each address the text symbol with the greatest
    start at or below it. Unknown (kallsyms unreadable, or addresses hidden as 0 to a
    process without the privilege): left out."""
    want = sorted(set(addresses))
    if not want:
        return {}
    import bisect  # noqa: PLC0415 (only on a failure)

    # best[j]: the greatest symbol start whose first wanted address at or above it is want[j];
    # the answer for want[k] is the greatest of best[0..k] (a symbol covers every address
    # above its start until a greater start)
    best: list[tuple[int, str] | None] = [None] * len(want)
    try:
        with open(path, "rb") as f:
            for raw in f:
                parts = raw.split()
                if len(parts) < 3 or parts[1] not in (b"t", b"T", b"w", b"W"):
                    continue
                try:
                    start = int(parts[0], 16)
                except ValueError:
                    continue
                if start == 0:
                    continue
                j = bisect.bisect_left(want, start)
                if j < len(want) and (best[j] is None or start > best[j][0]):
                    name = parts[2].decode("ascii", "replace")
                    if len(parts) > 3:
                        name += " " + parts[3].decode("ascii", "replace")
                    best[j] = (start, name)
    except OSError:
        return {}
    out, cur = {}, None
    for addr, b in zip(want, best):
        if b is not None and (cur is None or b[0] > cur[0]):
            cur = b
        if cur is not None and addr - cur[0] < 1 << 20:  # a text symbol is never a MiB long
            out[addr] = cur[1]
    return out


def _get(obj, name):
    if isinstance(obj, dict):
        return obj.get(name)
    if isinstance(obj, (tuple, list)):  # capture row order (pid, tgid, comm, kthread, stage, latency, frozen)
        idx = {"pid": 0, "tgid": 1, "comm": 2, "stage": 4, "frozen": 6}.get(name)
        return obj[idx] if idx is not None and idx < len(obj) else None
    return getattr(obj, name, None)


def rows(found: list[Culprit]) -> list[tuple]:
    """Rows of the capture's culprits table (without run_id)."""
    return [("freeze", c.stage, c.pid, c.tgid, c.comm, c.cmdline, c.state, c.wchan,
             "\n".join(c.frames) or None, c.stack_source if c.frames else None,
             "; ".join(c.notes) or None, "\n".join(c.probe_frames) or None) for c in found]


def freeze_failed(records) -> bool:
    """Whether this cycle's log says a freeze failed or was aborted."""
    return any(_FAIL.search(rec[3] if isinstance(rec, (tuple, list)) else str(rec)) for rec in records)


_NOMEM = re.compile(r"Image allocation is \d+ pages short|Error -12 creating|Cannot allocate memory|"
                    r"\(-?12\)|errno 12|ENOMEM")


def allocation_failed(records, error: str | None) -> bool:
    """Whether the cycle failed for want of memory for the image (the log's "Image
    allocation is N pages short", or -ENOMEM from CREATE_IMAGE / the hibernation)."""
    texts = [rec[3] if isinstance(rec, (tuple, list)) else str(rec) for rec in records]
    return any(_NOMEM.search(t) for t in [error or "", *texts])


def memory_users(proc: str = "/proc", n: int = 8) -> list[tuple]:
    """Rows (kind "memory") for the n processes with the most resident memory, read now:
    pid, tgid, comm, command line, state, and their RSS split in the note."""
    found = []
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        status = _read(os.path.join(proc, pid, "status"))
        if not status:
            continue
        f = {}
        for line in status.splitlines():
            k, _, v = line.partition(":")
            f[k] = v.strip()
        try:
            rss = int(f.get("VmRSS", "0 kB").split()[0])
        except (ValueError, IndexError):
            continue
        if rss:
            found.append((rss, int(pid), f))
    found.sort(reverse=True)
    out = []
    for rss, pid, f in found[:n]:
        raw = _read(os.path.join(proc, str(pid), "cmdline"), MAX_CMDLINE) or ""
        cmd = " ".join(a for a in raw.split("\0") if a) or None
        parts = [f"rss {rss} kB"] + [f"{k.lower()} {f[k]}" for k in ("RssAnon", "RssFile", "RssShmem")
                                      if f.get(k)]
        tgid = int(f["Tgid"]) if f.get("Tgid", "").isdigit() else None
        out.append(("memory", None, pid, tgid, f.get("Name"), cmd, (f.get("State") or "")[:1] or None,
                    None, None, None, "; ".join(parts), None))
    return out
