"""Why hibernation failed: the kind of each failed run, the tasks that refused to freeze
with a hint from their stack, what memory looked like when the image could not be made,
the failure rate with its exact interval, and the threads that held up systemd's cgroup
freeze of user.slice (slice_holdups: failed run or not, systemd waits 60 s for them).

Frames in, plain data out (no paths). The hint table, SIGNATURES, is documented in
docs/failures.md: a signature is a list of frame-name patterns (``fnmatch``: ``nfs_*``)
any of which, found in the stack of a task that refused to freeze, names what it waits
for and what would help. The first signature that matches wins; a stack none matches says
so ("unknown signature"), and a task without a stack gets no hint at all.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

import pandas as pd

#: frames of the scheduler and of generic sleeping: never what a task waits *for*
SCHED_FRAMES = ("__schedule", "schedule", "__switch_to*", "preempt_schedule*", "schedule_timeout",
                "schedule_preempt_disabled", "io_schedule*", "bit_wait*", "out_of_line_wait_on_bit*",
                "__wait_on_bit*", "__wait_for_common", "wait_for_completion*", "do_nanosleep",
                "hrtimer_nanosleep", "ret_from_fork*", "entry_SYSCALL_64*", "do_syscall_64",
                "__x64_sys_*", "x64_sys_call", "kthread", "ret_from_fork_asm")


@dataclass(frozen=True)
class Signature:
    name: str
    frames: tuple[str, ...]  # fnmatch patterns of frame names (module suffix stripped)
    what: str  # what the task waits for
    hint: str  # what would help


SIGNATURES: tuple[Signature, ...] = (
    Signature("frozen filesystem",
              ("percpu_rwsem_wait", "__percpu_down_read", "__sb_start_write", "sb_start_write",
               "sb_start_pagefault", "sb_start_intwrite", "mnt_want_write"),
              "a writer blocked on a frozen filesystem (fsfreeze / FIFREEZE: a backup or "
              "snapshot tool, or a filesystem left frozen)",
              "thaw it (fsfreeze -u MOUNTPOINT) or stop the tool that froze it before "
              "hibernating"),
    Signature("FUSE daemon",
              ("request_wait_answer", "fuse_simple_request", "fuse_wait_on_page_writeback",
               "fuse_*"),
              "a FUSE request waiting on its daemon (the daemon is frozen first, or stuck)",
              "unmount the FUSE filesystem (fusermount -u) or stop the program using it "
              "before hibernating"),
    Signature("NFS",
              ("nfs_*", "nfs4_*", "rpc_wait_bit_killable", "__rpc_execute", "rpc_*"),
              "NFS I/O waiting on its server",
              "the server is slow or unreachable: unmount the NFS share (or finish the I/O) "
              "before hibernating"),
    Signature("9p share",
              ("p9_client_rpc", "p9_*", "v9fs_*"),
              "I/O on a 9p filesystem (a virtual machine's shared folder) waiting on its server",
              "a 9p share does not answer across a device freeze (virtio-9p has no PM callbacks): "
              "unmount it, or keep processes off it, before hibernating"),
    Signature("CIFS/SMB",
              ("cifs_*", "smb2_*", "wait_for_response", "compound_send_recv"),
              "SMB/CIFS I/O waiting on its server",
              "the server is slow or unreachable: unmount the share before hibernating"),
    Signature("directory lock",
              ("filename_create", "lock_rename*", "lock_two_directories", "start_creating*",
               "start_dirop*", "__start_renaming*", "do_rmdir", "do_unlinkat"),
              "a directory operation (create, remove, rename) waiting for the directory's lock "
              "(i_rwsem), which another task holds: a lock wait is never freezable",
              "find the task holding the directory (often one waiting on the same filesystem, "
              "listed beside it) and what it waits for; stop the program working in that "
              "directory before hibernating"),
    Signature("block I/O",
              ("blk_mq_get_tag", "folio_wait_bit*", "wait_on_page_bit*", "__folio_lock*",
               "__wait_on_buffer", "jbd2_log_wait_commit", "submit_bio_wait", "blkdev_*",
               "dm_wait_*"),
              "block I/O that does not complete (a slow, hung or failing disk)",
              "look for I/O errors or timeouts in the kernel log; the disk or its driver is "
              "not answering"),
)

DRIVER_WAIT = Signature(
    "driver wait", (), "an uninterruptible wait inside a driver module",
    "the driver keeps the task from freezing: update or unload it (modprobe -r) before "
    "hibernating, and report it to its maintainers")


def frame_base(frame: str) -> str:
    """'func [module]' -> 'func'."""
    return frame.split(" [", 1)[0].strip()


def frame_module(frame: str) -> str | None:
    m = re.search(r"\[(\w+)\]\s*$", frame)
    return m.group(1) if m else None


def top_frames(frames: list[str], n: int = 5) -> list[str]:
    """The first n frames past the scheduler's own: where the task is, innermost first."""
    own = [f for f in frames if not any(fnmatchcase(frame_base(f), p) for p in SCHED_FRAMES)]
    return (own or frames)[:n]


def classify(frames: list[str], state: str | None = None) -> dict:
    """{signature, what, hint}: the first signature any frame matches; a D-state task in a
    module's frames is a driver wait; otherwise unknown, said so. No frames: no hint."""
    if not frames:
        return {"signature": None, "what": None,
                "hint": "no stack recorded: snapprof cannot say where it was stuck"}
    bases = [frame_base(f) for f in frames]
    for sig in SIGNATURES:
        if any(fnmatchcase(b, p) for b in bases for p in sig.frames):
            return {"signature": sig.name, "what": sig.what, "hint": sig.hint}
    modules = [m for m in (frame_module(f) for f in top_frames(frames, 8)) if m]
    if modules and state in (None, "D"):
        return {"signature": f"{DRIVER_WAIT.name} ({modules[0]})",
                "what": f"{DRIVER_WAIT.what} ({modules[0]})", "hint": DRIVER_WAIT.hint}
    return {"signature": "unknown", "what": None,
            "hint": "unknown stack signature (no entry in snapprof's table, docs/failures.md): "
                    "the top frames say where it waits"}


# -- kinds of failure ------------------------------------------------------------------------
_FREEZE = re.compile(r"Freezing (?:of tasks|(user space processes|remaining freezable tasks)) "
                     r"(failed|aborted) after (\d+)\.(\d{3}) seconds \((\d+) tasks refusing")
_BEGIN = re.compile(r"Freezing (user space processes|remaining freezable tasks)\s*$")
_SHORT = re.compile(r"Image allocation is (\d+) pages short")
_NOMEM = re.compile(r"Error -12 creating (?:hibernation )?image|Cannot allocate memory|\bENOMEM\b|"
                    r"Memory allocation failed|Not enough free memory")


def failure_kind(error: str | None, log: list[str]) -> str:
    """freeze / image allocation / devices / other, from the run's error and its log."""
    text = " ".join([error or "", *log])
    if _FREEZE.search(text):
        return "freeze"
    if _SHORT.search(text) or _NOMEM.search(text):
        return "image allocation"
    if re.search(r"devices? failed|failed to (?:freeze|suspend|quiesce)", text, re.I):
        return "devices"
    return "other"


def _metric(frames, run_id: int, name: str):
    m = frames.metrics
    row = m[(m["run_id"] == run_id) & (m["name"] == name)]
    return None if row.empty else float(row["value"].iloc[0])


def failed_runs(frames) -> list[dict]:
    """Per failed or incomplete run: {run_id, status, kind, error, freeze (stage, tried_ms,
    tasks, timeout_ms), memory (image allocation: figures the capture has), culprits}."""
    out = []
    runs = frames.runs
    bad = runs[runs["status"] != "complete"]
    if bad.empty:
        return out
    timeout = frames.meta.get("pm_freeze_timeout")
    for _, r in bad.iterrows():
        rid = int(r["run_id"])
        log = [str(t) for t in frames.kmsg.loc[frames.kmsg["run_id"] == rid, "text"]]
        kind = failure_kind(r["error"], log)
        item = {"run_id": rid, "status": r["status"], "kind": kind, "error": r["error"],
                "culprits": [], "freeze": None, "memory": None}
        began = None  # 6.1 says "Freezing of tasks failed": the stage is the line before's
        for line in log:
            b = _BEGIN.search(line)
            if b:
                began = b.group(1)
            m = _FREEZE.search(line)
            if m:
                stage = {"user space processes": "user space", "remaining freezable tasks":
                         "kernel threads"}.get(m.group(1) or began or "", "tasks")
                # the setting read before this cycle; older captures: the recording's start
                run_timeout = _metric(frames, rid, "freeze_timeout_setting_ms")
                item["freeze"] = {"stage": stage, "word": m.group(2),
                                  "tried_ms": int(m.group(3)) * 1000 + int(m.group(4)),
                                  "tasks": int(m.group(5)),
                                  "timeout_ms": int(run_timeout) if run_timeout is not None else
                                  int(timeout) if str(timeout or "").isdigit() else None}
                break
        cul = frames.culprits[frames.culprits["run_id"] == rid] if not frames.culprits.empty else frames.culprits
        item["memory_users"] = [
            {"pid": _int(c["pid"]), "comm": _str(c["comm"]), "cmdline": _str(c["cmdline"]),
             "note": _str(c["note"])} for _, c in cul[cul["kind"] == "memory"].iterrows()]
        for _, c in cul[cul["kind"] == "freeze"].iterrows():
            stack = [f for f in str(c["stack"] or "").split("\n") if f] if isinstance(c["stack"], str) else []
            info = classify(stack, c["state"] if isinstance(c["state"], str) else None)
            top = top_frames(stack)
            item["culprits"].append({
                "pid": _int(c["pid"]), "tgid": _int(c["tgid"]), "comm": _str(c["comm"]),
                "cmdline": _str(c["cmdline"]), "stage": _str(c["stage"]), "state": _str(c["state"]),
                # the kernel's wait channel (/proc), else where the stack says it waits
                "wchan": _str(c["wchan"]) or (top[0] if top else None),
                "top_frames": top, "frames": stack,
                "stack_source": _str(c["stack_source"]), "note": _str(c["note"]), **info})
        if kind == "image allocation":
            item["memory"] = memory_at_failure(frames, rid, log, item["memory_users"])
        out.append(item)
    return out


_SYSTEMD_FREEZE = re.compile(r"systemd-sleep: (Failed to freeze unit '[^']*'[^;]*)")


def slice_holdups(frames) -> list[dict]:
    """Per run (failed or not) in which systemd's cgroup freeze of user.slice was held up
    (culprits of kind "cgroup", snapprof.record.slicewatch): {run_id, status, slice,
    waited_ms (systemd-sleep's wait until it gave up, from the journal, or None), systemd
    (its message, or None), holders: the threads the cgroup freezer could not park, each
    with the top of its stack, a hint, and whether the kernel's freezer named it too}."""
    cul = frames.culprits
    if cul.empty or "kind" not in cul or not (cul["kind"] == "cgroup").any():
        return []
    out = []
    runs = frames.runs.set_index("run_id")
    for rid, group in cul[cul["kind"] == "cgroup"].groupby("run_id", sort=True):
        rid = int(rid)
        refused = {_int(p) for p in cul.loc[(cul["run_id"] == rid) & (cul["kind"] == "freeze"), "pid"]}
        error = _str(runs.loc[rid, "error"]) if rid in runs.index else None
        m = _SYSTEMD_FREEZE.search(error or "")
        holders = []
        for _, c in group.iterrows():
            stack = [f for f in c["stack"].split("\n") if f] if isinstance(c["stack"], str) else []
            state = c["state"] if isinstance(c["state"], str) else None
            top = top_frames(stack)
            holders.append({
                "pid": _int(c["pid"]), "tgid": _int(c["tgid"]), "comm": _str(c["comm"]),
                "cmdline": _str(c["cmdline"]), "state": state,
                "wchan": _str(c["wchan"]) or (top[0] if top else None), "top_frames": top,
                "stack_source": _str(c["stack_source"]), "note": _str(c["note"]),
                "also_refused": _int(c["pid"]) in refused, **classify(stack, state)})
        out.append({"run_id": rid, "status": str(runs.loc[rid, "status"]) if rid in runs.index else None,
                    "slice": _str(group["stage"].iloc[0]) or "user.slice",
                    "waited_ms": _metric(frames, rid, "user_slice_freeze_failed_ms"),
                    "systemd": m.group(1).strip() if m else None, "holders": holders})
    return out


def memory_at_failure(frames, rid: int, log: list[str], item_users: list[dict] | None = None) -> dict:
    """What the capture says of memory in an image-allocation failure, and one sentence
    of why and what would help. Only figures that were measured; none made up."""
    mem = {name: _metric(frames, rid, name) for name in (
        "saveable_pages", "prealloc_requested_pages", "prealloc_got_pages", "preallocated_pages",
        "mem_total_kb", "mem_free_kb", "mem_available_kb", "swap_free_kb",
        "image_size_setting_bytes", "reserved_size_setting_bytes")}
    mem = {k: v for k, v in mem.items() if v is not None}
    short = next((int(m.group(1)) for m in map(_SHORT.search, log) if m), None)
    if short is not None:
        mem["short_pages"] = short
    meta = frames.meta
    for key in ("swap_total_kb",):
        if str(meta.get(key) or "").isdigit():
            mem[key] = int(meta[key])
    helps = []
    if mem.get("swap_total_kb") == 0 or mem.get("swap_free_kb") == 0:
        helps.append("add swap (the image is written there, and with swap the kernel can "
                     "page anonymous memory out to make room)")
    if mem.get("image_size_setting_bytes", 1) > 0:
        helps.append("lower /sys/power/image_size (0 asks for the smallest image)")
    users = [u for u in (item_users or []) if u.get("comm")]
    helps.append("free memory held by the largest users" + (
        f" ({', '.join(u['comm'] for u in users[:3])})" if users else ""))
    why = "the kernel could not allocate room for a copy of every page it must save"
    if "short_pages" in mem:
        why += f" ({mem['short_pages']:,} pages short)"
    mem["sentence"] = f"The image could not be made: {why}. What would help: {'; '.join(helps)}."
    return mem


def _int(v):
    try:
        return None if v is None or pd.isna(v) else int(v)
    except (TypeError, ValueError):
        return None


def _str(v):
    return v if isinstance(v, str) and v != "" else None


# -- the rate --------------------------------------------------------------------------------
def _binom_cdf(k: int, n: int, p: float) -> float:
    if p <= 0:
        return 1.0
    if p >= 1:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(0, k + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                          + i * lp + (n - i) * lq)
    return min(1.0, total)


def _solve(f, target: float) -> float:
    lo, hi = 0.0, 1.0  # f decreasing in p
    for _ in range(100):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion k/n."""
    if n <= 0:
        raise ValueError("no trials")
    a = (1 - level) / 2
    # low: P(X >= k | p) = a, i.e. cdf(k - 1) = 1 - a; high: P(X <= k | p) = a
    low = 0.0 if k == 0 else _solve(lambda p: _binom_cdf(k - 1, n, p), 1 - a)
    high = 1.0 if k == n else _solve(lambda p: _binom_cdf(k, n, p), a)
    return low, high


RATE_METHOD = "exact binomial (Clopper-Pearson) 95 % interval"


def failure_rate(frames) -> dict | None:
    """{failed, runs, rate, ci_low, ci_high, kinds: {kind: n}, method} over the capture's
    runs (failed and incomplete runs both count as failed cycles); None without runs."""
    return rate_of([frames])


def rate_of(frames_list) -> dict | None:
    """failure_rate over several captures pooled (one kernel's, in compare)."""
    n = sum(len(f.runs) for f in frames_list)
    if n == 0:
        return None
    kinds: dict[str, int] = {}
    k = 0
    for f in frames_list:
        for it in failed_runs(f):
            k += 1
            kinds[it["kind"]] = kinds.get(it["kind"], 0) + 1
    low, high = clopper_pearson(k, n)
    return {"failed": k, "runs": n, "rate": k / n, "ci_low": low, "ci_high": high, "kinds": kinds,
            "method": RATE_METHOD}


def grouped_culprits(items: list[dict]) -> list[dict]:
    """Culprits repeated across runs, grouped by command and stack signature."""
    groups: dict[tuple, dict] = {}
    for it in items:
        for c in it["culprits"]:
            key = (c["cmdline"] or c["comm"] or "?", c["signature"] or "no stack",
                   tuple(c["top_frames"][:3]))
            g = groups.setdefault(key, {"command": key[0], "signature": key[1],
                                        "top_frames": list(key[2]), "hint": c["hint"],
                                        "runs": [], "pids": []})
            if it["run_id"] not in g["runs"]:
                g["runs"].append(it["run_id"])
            if c["pid"] not in g["pids"]:
                g["pids"].append(c["pid"])
    return sorted(groups.values(), key=lambda g: -len(g["runs"]))
