"""Turn what the probes saw in one cycle into capture rows and metrics.

Standard library only, and no bcc: probeset.py decodes the BPF records into the Raw*
classes below, and everything here is plain Python that unit tests drive with synthetic
records. Rules:
- a figure that was not seen has no metric row; it gets a not_measured reason instead
  (probe missing, fast path taken, phase not reached ...), never a 0;
- timestamps are CLOCK_BOOTTIME ns from BPF, which stand still during the atomic copy:
  the copy window is only ever the kernel's own sleep-time report.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from snapprof import metrics as registry

KIND_NAMES = {0: "begin", 1: "end", 2: "instant"}
STAGES = {1: "user", 2: "kernel"}
COUNTERS = ("event_drops", "devcall_drops", "tasks_full", "dev_unpaired")  # probes/common.h C_*

PM_VERBS = {0: "on", 0x1: "freeze", 0x2: "suspend", 0x4: "hibernate", 0x8: "quiesce",
            0x10: "resume", 0x20: "thaw", 0x40: "restore", 0x80: "recover"}
RESUME_EVENTS = {0x10, 0x20, 0x40, 0x80}
DPM_STAGES = {
    "pm:dpm_prepare": "prepare", "pm:dpm_suspend": "suspend",
    "pm:dpm_suspend_late": "suspend_late", "pm:dpm_suspend_noirq": "suspend_noirq",
    "pm:dpm_resume_noirq": "resume_noirq", "pm:dpm_resume_early": "resume_early",
    "pm:dpm_resume": "resume", "pm:dpm_complete": "complete",
}
SUSPEND_PHASES = ("pm:dpm_prepare", "pm:dpm_suspend", "pm:dpm_suspend_late", "pm:dpm_suspend_noirq")
RESUME_PHASES = ("pm:dpm_resume_noirq", "pm:dpm_resume_early", "pm:dpm_resume", "pm:dpm_complete")
SNAPSHOT_IOCTLS = {
    0x3301: "SNAPSHOT_FREEZE", 0x3302: "SNAPSHOT_UNFREEZE", 0x3304: "SNAPSHOT_ATOMIC_RESTORE",
    0x3305: "SNAPSHOT_FREE", 0x3309: "SNAPSHOT_FREE_SWAP_PAGES", 0x330B: "SNAPSHOT_S2RAM",
    0x400C330D: "SNAPSHOT_SET_SWAP_AREA", 0x8008330E: "SNAPSHOT_GET_IMAGE_SIZE",
    0x330F: "SNAPSHOT_PLATFORM_SUPPORT", 0x3310: "SNAPSHOT_POWER_OFF",
    0x40043311: "SNAPSHOT_CREATE_IMAGE", 0x3312: "SNAPSHOT_PREF_IMAGE_SIZE",
    0x80083313: "SNAPSHOT_AVAIL_SWAP_SIZE", 0x80083314: "SNAPSHOT_ALLOC_SWAP_PAGE",
}
COUNT_DATA_CALLS = {1: "prealloc#1 before shrinking", 2: "prealloc#2 after preallocation",
                    3: "swsusp_save pages to copy"}
SYNC_FUNCS = ("ksys_sync_helper", "pm_sleep_fs_sync")
CYCLE_STARTS = ("ksys_sync_helper", "pm_sleep_fs_sync", "freeze_processes", "hibernate")
CYCLE_ENDS = ("thaw_processes", "pm:thaw_processes")


@dataclass
class RawEvent:
    ts: int
    cpu: int
    pid: int
    tgid: int
    comm: str
    kind: int  # 0 begin, 1 end, 2 instant
    name: str
    value: int | None = None
    aux1: int | None = None
    aux2: int | None = None
    text: str = ""


@dataclass
class RawDevcall:
    start: int
    duration: int
    error: int
    event: int
    pid: int
    device: str
    driver: str
    parent: str
    pm_ops: str


@dataclass
class RawTask:
    pid: int
    tgid: int
    comm: str
    stage: int  # 1 user, 2 kernel
    kthread: int
    in_place: int
    t_true: int  # 0 = never
    t_refrig: int  # 0 = never
    pass_true: int
    n_true: int


@dataclass
class CycleData:
    """What the probes saw since the last collect(), as capture rows."""

    events: list[tuple] = field(default_factory=list)  # (ts_ns, cpu, pid, comm, kind, name, value, detail)
    tasks: list[tuple] = field(default_factory=list)  # (pid, tgid, comm, kthread, stage, freeze_latency_ns, frozen)
    devices: list[tuple] = field(default_factory=list)  # (device, driver, parent, event, stage, start_ns, duration_ns, error, pid)
    metrics: list[tuple] = field(default_factory=list)  # (name, value, unit, method, source)
    not_measured: list[tuple] = field(default_factory=list)  # (name, reason)
    drops: int | None = None
    started: bool = False
    ended: bool = False
    counters: dict = field(default_factory=dict)  # raw BPF counters (event_drops, tasks_full, ...)
    drop_notes: list[str] = field(default_factory=list)  # what the counted drops lost, one line each
    stuck: dict = field(default_factory=dict)  # pid -> culprits.StuckStack (fentry only)


# -- events ----------------------------------------------------------------------------

def event_detail(e: RawEvent) -> str | None:
    """A short human-readable note for an event row; None when the value says it all."""
    if e.name == "try_to_freeze_tasks":
        if e.kind == 0:
            return "stage=user" if e.value else "stage=kernel"
        stage = "user" if e.text == "u" else "kernel"
        swept = f" swept={e.aux2}" if e.aux2 else ""  # 0: the sweep hooks were off, not counted
        return f"stage={stage} passes={e.aux1}{swept}"
    if e.name == "freeze_sweeps":
        stage = "user" if e.text[:1] == "u" else "kernel"
        if e.text[1:2] == "c":
            return f"stage={stage} the kernel's start read {e.aux1} .. its end read {e.aux2}"
        return f"stage={stage} start {e.aux1} .. result line {e.aux2}"
    if e.name == "count_data_pages" and e.kind == 1:
        return COUNT_DATA_CALLS.get(e.aux1 or 0)
    if e.name == "preallocate_image_memory" and e.kind == 0:
        return f"avail_normal={e.aux1}"
    if e.name == "swsusp_show_speed":
        return f"{e.text} ns={e.aux1}"
    if e.name == "snapshot_ioctl" and e.kind == 0 and e.value is not None:
        cmd = e.value & 0xFFFFFFFF
        return SNAPSHOT_IOCTLS.get(cmd, f"cmd={cmd:#x}")
    if e.name == "swsusp_write" and e.kind == 0 and e.value is not None:
        return f"flags={e.value:#x}"
    return None


def event_rows(events: list[RawEvent]) -> list[tuple]:
    return [(e.ts, e.cpu, e.pid, e.comm, KIND_NAMES[e.kind], e.name, e.value, event_detail(e))
            for e in events]


@dataclass
class Span:
    name: str
    begin: RawEvent
    end: RawEvent

    @property
    def ns(self) -> int:
        return self.end.ts - self.begin.ts


def pair_spans(events: list[RawEvent]) -> dict[str, list[Span]]:
    """Begin/end pairs, in the (ring) order of their begin. Function spans pair per thread; pm:* phases
    pair per (action, val) since CPU_OFF/CPU_ON carry the CPU in val."""
    open_: dict[tuple, list[RawEvent]] = defaultdict(list)
    out: dict[str, list[Span]] = defaultdict(list)
    for e in events:
        if e.kind == 2:
            continue
        key = (e.name, e.value) if e.name.startswith("pm:") else (e.name, e.pid)
        if e.kind == 0:
            open_[key].append(e)
        elif open_[key]:
            b = open_[key].pop()
            out[e.name].append(Span(e.name, b, e))
    order = {id(e): i for i, e in enumerate(events)}
    for spans in out.values():
        spans.sort(key=lambda s: order.get(id(s.begin), 0))
    return out


# -- the derivation ----------------------------------------------------------------------

class _Figures:
    """Collects metrics and the specific reasons figures were not measured."""

    def __init__(self):
        self.metrics: dict[str, tuple] = {}
        self.reasons: dict[str, str] = {}

    def add(self, name: str, value, method: str, source: str) -> None:
        if value is None or name in self.metrics:
            return
        self.metrics[name] = (name, float(value), registry.get(name).unit, method, source)

    def why(self, names, reason: str) -> None:
        for name in ([names] if isinstance(names, str) else names):
            self.reasons.setdefault(name, reason)


def _first(spans: dict[str, list[Span]], *names: str) -> Span | None:
    for n in names:
        if spans.get(n):
            return spans[n][0]
    return None


#: Source of freeze_user_ms / freeze_kernel_ms: the kernel's "elapsed" quantity, from its own
#: two clock reads where the probes saw both, else between its two log lines.
KERNEL_READS_SOURCE = ("try_to_freeze_tasks' own start and end reads (the values its two "
                       "ktime_get_boottime() calls returned), as it times its '(elapsed N seconds)'")
SWEEPS_SOURCE = ("try_to_freeze_tasks' start (its 'Freezing' line's printk return, or its "
                 "entry where it prints none; kernel threads: freeze_workqueues_begin's entry) "
                 "to its result line's printk, as it times its '(elapsed N seconds)'")
#: Source of freeze_*_call_ms: the whole call, the freezing's log lines and set-up included.
CALL_SOURCE = "{fn}: the whole call (kprobe to return probe)"


def _freezer(f: _Figures, spans, events, tasks: list[RawTask],
             tasks_lost: str | None = None) -> tuple[list[tuple], dict]:
    sync = _first(spans, *SYNC_FUNCS)
    if sync:
        f.add("sync_ms", sync.ns / 1e6, "probe", sync.name)
    for metric, fn in (("freeze_user_call_ms", "freeze_processes"),
                       ("freeze_kernel_call_ms", "freeze_kernel_threads")):
        s = _first(spans, fn)
        if s:
            f.add(metric, s.ns / 1e6, "probe", CALL_SOURCE.format(fn=fn))
    for metric, fn in (("thaw_kernel_ms", "thaw_kernel_threads"), ("thaw_ms", "thaw_processes")):
        s = _first(spans, fn)
        if s:
            f.add(metric, s.ns / 1e6, "probe", fn)
    if not spans.get("freeze_kernel_threads"):
        f.why("freeze_kernel_call_ms", "not reached in this cycle (kernel threads were not frozen)")
    # the freezing itself, per stage: the first "freeze_sweeps" of each
    for e in events:
        if e.name == "freeze_sweeps" and e.kind == 2 and e.value is not None and e.value >= 0:
            f.add(f"freeze_{'user' if e.text[:1] == 'u' else 'kernel'}_ms", e.value / 1e6, "probe",
                  KERNEL_READS_SOURCE if e.text[1:2] == "c" else SWEEPS_SOURCE)

    # stage -> (ret, passes, swept) from try_to_freeze_tasks returns
    stage_end: dict[str, tuple[int, int, int]] = {}
    for e in events:
        if e.name == "try_to_freeze_tasks" and e.kind == 1:
            stage = "user" if e.text == "u" else "kernel"
            stage_end.setdefault(stage, (e.value, e.aux1, e.aux2))
    rows = []
    for t in sorted(tasks, key=lambda t: (t.stage, t.t_true or t.t_refrig, t.pid)):
        stage = STAGES.get(t.stage)
        latency = t.t_refrig - t.t_true if t.t_true and t.t_refrig and t.t_refrig >= t.t_true else None
        end = stage_end.get(stage)
        if t.t_refrig or t.in_place:
            frozen = 1
        elif end is None:
            frozen = None  # the freezer had not finished when the probes were read
        elif end[0] != 0 and t.pass_true == end[1]:
            frozen = 0  # still refusing in the freezer's last sweep
        else:
            frozen = 1
        rows.append((t.pid, t.tgid, t.comm, t.kthread, stage, latency, frozen))
    if tasks_lost:  # the counts below come from the tasks map, which lost some
        f.why(["freeze_user_tasks", "freeze_kernel_tasks", "freeze_user_woken",
               "freeze_kernel_woken", "freeze_failed_tasks"], tasks_lost)
    for stage in ("user", "kernel"):
        if stage in stage_end:
            ret, passes, _swept = stage_end[stage]
            f.add(f"freeze_{stage}_passes", passes, "probe", "try_to_freeze_tasks,usleep_range_state")
            if not tasks_lost:
                # every task of the stage the probes saw freeze or refuse; the tasks frozen in
                # place are among them only with the sweep hooks (a metric of theirs alone)
                f.add(f"freeze_{stage}_tasks", sum(1 for r in rows if r[4] == stage), "probe",
                      "freeze_task,signal_wake_up_state,wake_up_state,__refrigerator")
                f.add(f"freeze_{stage}_woken",
                      sum(1 for t in tasks if STAGES.get(t.stage) == stage and t.t_true), "probe",
                      "signal_wake_up_state,wake_up_state (the freezer thread's, in its sweeps)")
            f.why(f"freeze_{stage}_ms", "try_to_freeze_tasks returned without its start and "
                  "result line both seen (no sweep recorded)")
        else:
            f.why([f"freeze_{stage}_ms", f"freeze_{stage}_passes", f"freeze_{stage}_tasks",
                   f"freeze_{stage}_woken"],
                  f"not reached in this cycle ({stage} freezing did not run to its end)")
    if stage_end and not tasks_lost:
        f.add("freeze_failed_tasks", sum(1 for r in rows if r[6] == 0), "probe",
              "signal_wake_up_state,wake_up_state in the last sweep of a failed freeze")
    return rows, stage_end


def _shrink(f: _Figures, spans, events) -> None:
    pre = _first(spans, "hibernate_preallocate_memory")
    if pre is None:
        f.why(["prealloc_ms", "prealloc_result", "saveable_pages", "saveable_after_pages",
               "prealloc_requested_pages", "prealloc_got_pages", "shrink_requested_pages",
               "shrink_reclaimed_pages", "shrink_ms", "preallocated_pages"],
              "not reached in this cycle (no image memory preallocation)")
        return
    f.add("prealloc_ms", pre.ns / 1e6, "probe", "hibernate_preallocate_memory")
    f.add("prealloc_result", pre.end.value, "probe", "hibernate_preallocate_memory")
    inside = [e for e in events if pre.begin.ts <= e.ts <= pre.end.ts]
    for e in inside:
        if e.name == "count_data_pages" and e.kind == 1:
            if e.aux1 == 1:
                f.add("saveable_pages", e.value, "probe", "count_data_pages#1")
            elif e.aux1 == 2:
                f.add("saveable_after_pages", e.value, "probe", "count_data_pages#2")
    req = [e.value for e in inside if e.name == "preallocate_image_memory" and e.kind == 0]
    got = [e.value for e in inside if e.name == "preallocate_image_memory" and e.kind == 1]
    if req:
        f.add("prealloc_requested_pages", sum(req), "probe", "preallocate_image_memory")
    if got:
        f.add("prealloc_got_pages", sum(got), "probe", "preallocate_image_memory")
    shrink = [s for s in spans.get("shrink_all_memory", []) if pre.begin.ts <= s.begin.ts <= pre.end.ts]
    if shrink:
        s = shrink[0]
        f.add("shrink_requested_pages", s.begin.value, "probe", "shrink_all_memory")
        f.add("shrink_reclaimed_pages", s.end.value, "probe", "shrink_all_memory")
        f.add("shrink_ms", s.ns / 1e6, "probe", "shrink_all_memory")
    elif pre.end.value == 0:
        f.why(["shrink_requested_pages", "shrink_reclaimed_pages", "shrink_ms"],
              "fast path: shrink_all_memory not called")
        f.why("saveable_after_pages",
              "fast path: no second count_data_pages (free_unnecessary_pages not reached)")
    else:
        f.why(["shrink_requested_pages", "shrink_reclaimed_pages", "shrink_ms", "saveable_after_pages"],
              f"preallocation failed ({pre.end.value}) before shrinking")


def _show_speed(f: _Figures, events, page_size: int) -> None:
    seen = set()
    for e in events:
        if e.name != "swsusp_show_speed" or e.text in seen:
            continue
        seen.add(e.text)
        pages, ns = e.value, e.aux1
        if e.text == "Allocated":
            f.add("preallocated_pages", pages, "probe", "swsusp_show_speed")
        elif e.text in ("Wrote", "Read"):
            p = "write" if e.text == "Wrote" else "read"
            kbytes = pages * page_size // 1024
            f.add(f"{p}_ms", ns / 1e6, "probe", "swsusp_show_speed")
            f.add(f"{p}_kbytes", kbytes, "probe", "swsusp_show_speed")
            if ns > 0:
                f.add(f"{p}_mbps", kbytes / 1000 / (ns / 1e9), "probe", "swsusp_show_speed")
    if "Wrote" not in seen:
        f.why(["write_ms", "write_kbytes", "write_mbps"], "no image written in this cycle")
    if "Read" not in seen:
        f.why(["read_ms", "read_kbytes", "read_mbps"], "no image read in this cycle")


# kernel/time/timekeeping.c timekeeping_resume(): without a clocksource that keeps running
# through suspend (CLOCK_SOURCE_SUSPEND_NONSTOP), the pause is measured with the persistent
# clock (x86: the CMOS RTC, whole seconds) and nothing is injected or reported unless the
# RTC has ticked past the (sub-second adjusted) time noted at suspend.
NO_SLEEP_TIME = ("the kernel reported no sleep time for the copy window: with no clocksource "
                 "running through suspend it measures the pause with the persistent clock "
                 "(RTC, whole seconds) and reports nothing when the RTC has not ticked past "
                 "the time noted at suspend")


# Where a real hibernation may run, swsusp_save's return probe is left out (catalogue
# pending_across_copy), and a cycle's events then never show whether the image was restored.
NO_SAVE_RETURN = ("swsusp_save's return probe is left out where a real hibernation may run, so "
                  "this cycle's sleep-time report cannot be told apart from a restored image's "
                  "time away")


def _copy(f: _Figures, spans, events, save_return: bool = True) -> None:
    """Copy figures; ``save_return``: swsusp_save's return probe was attached."""
    saves = spans.get("swsusp_save") or []
    save_begin = [e for e in events if e.name == "swsusp_save" and e.kind == 0]
    save_end = [e for e in events if e.name == "swsusp_save" and e.kind == 1]
    copy_metrics = ["copy_pages", "meta_pages", "zero_pages", "image_pages", "copy_window_ms"]
    if not save_begin and not save_end:
        f.why(copy_metrics, "not reached in this cycle (no atomic copy: swsusp_save did not run)")
        return
    if not save_end and not save_return:
        f.why("copy_window_ms", NO_SAVE_RETURN)
        size = _first(spans, "snapshot_get_image_size")  # a /dev/snapshot cycle asks after the copy
        if size is not None and size.end.value:
            f.add("image_pages", size.end.value, "probe", "snapshot_get_image_size")
        f.why("image_pages", "no snapshot_get_image_size call after the copy in this cycle (and "
              "swsusp_save's return probe is left out where a real hibernation may run)")
        return
    if not save_end:
        # A real hibernation resumed: memory is the image, taken inside swsusp_save, which
        # therefore never returns here; the sleep time then spans the whole power-off.
        f.why(copy_metrics, "resumed from the image: swsusp_save's return is not in this kernel's past")
        return
    # The clocks also stop without a copy (pm_test=core waits 5 s with timekeeping
    # suspended): a sleep-time report is the copy window only right after swsusp_save (in
    # ring order: from 7.1 the stamps after the copy are set back).
    after = events[events.index(save_end[0]):]
    sleep = [e for e in after if e.name == "sleep_time" and e.kind == 2]
    ran = save_end[0].ts - save_begin[0].ts if save_begin else 0
    if ran > 0:
        # 7.1+: the BPF clock runs through the copy (6.1-7.0 stamp entry and return alike);
        # it times swsusp_save() itself, the copy with its page counting, to the microsecond
        f.add("copy_window_ms", ran / 1e6, "bpf-clock", COPY_BY_BPF_CLOCK)
    elif sleep:
        f.add("copy_window_ms", sleep[0].value / 1e6, "sleep-time", "tk_debug_account_sleep_time")
    statics = {}
    for e in events:
        if e.kind == 2 and e.name in ("nr_copy_pages", "nr_meta_pages", "nr_zero_pages"):
            statics.setdefault(e.name, e.value)
    if "nr_copy_pages" in statics:
        f.add("copy_pages", statics["nr_copy_pages"], "probe", "swsusp_save:&nr_copy_pages")
    if "nr_meta_pages" in statics:
        f.add("meta_pages", statics["nr_meta_pages"], "probe", "swsusp_save:&nr_meta_pages")
    if "nr_zero_pages" in statics:
        f.add("zero_pages", statics["nr_zero_pages"], "probe", "swsusp_save:&nr_zero_pages")
    if "nr_copy_pages" in statics and "nr_meta_pages" in statics:
        f.add("image_pages", statics["nr_copy_pages"] + statics["nr_meta_pages"] + 1, "probe",
              "swsusp_save:&nr_copy_pages+&nr_meta_pages+1")
    size = _first(spans, "snapshot_get_image_size")
    if size is not None and size.end.value:
        f.add("image_pages", size.end.value, "probe", "snapshot_get_image_size")
    if saves and saves[0].end.value not in (0, None):
        f.why(["copy_pages", "meta_pages", "zero_pages", "image_pages"],
              f"atomic copy failed ({saves[0].end.value})")
    f.why("copy_window_ms", NO_SLEEP_TIME)


#: Source of copy_window_ms where the BPF clock ran through the copy.
COPY_BY_BPF_CLOCK = ("swsusp_save entry to return on the BPF clock, which keeps running through the "
                     "copy on this kernel (resolution 1 us)")

#: Source of copy_needed_pages from the probes: counted in swsusp_save() before the copy.
PAGES_TO_COPY_SOURCE = ("count_data_pages#3: swsusp_save's count before the copy (the kernel's "
                        "'Need to copy N pages'; zero pages included on 6.6+)")


def _pages_to_copy(f: _Figures, events, highmem: bool) -> None:
    """copy_needed_pages from count_data_pages() inside swsusp_save(): it returns before the
    copy, so a restored image holds it too (unlike everything read at swsusp_save's return)."""
    for e in events:
        if e.name == "count_data_pages" and e.kind == 1 and e.aux1 == 3 and e.value is not None:
            if highmem:  # "Need to copy" adds count_highmem_pages(), which is not probed
                f.why("copy_needed_pages", "a 32-bit kernel counts its highmem pages apart "
                      "(count_highmem_pages, not probed): the kernel log's line has the total")
                return
            f.add("copy_needed_pages", e.value, "probe", PAGES_TO_COPY_SOURCE)
            return
    f.why("copy_needed_pages", "no count_data_pages call inside swsusp_save in this cycle "
          "(the atomic copy was not reached)")


def _devices(f: _Figures, spans, devcalls: list[RawDevcall], lost: str | None = None) -> list[tuple]:
    """Device rows and figures; ``lost`` (why some callbacks were not recorded) leaves the
    callback counts out with that reason: a count missing some of its members is no count."""
    windows = []
    for name, stage in DPM_STAGES.items():
        for s in spans.get(name, []):
            windows.append((s.begin.ts, s.end.ts, stage))
    rows = []
    for d in sorted(devcalls, key=lambda d: d.start):
        stage = next((st for b, e, st in windows if b <= d.start <= e), None)
        if stage is None:
            stage = _stage_from_ops(d.pm_ops, d.event)
        parent = None if d.parent in ("", "none") else d.parent  # the tracepoint says "none"
        rows.append((d.device, d.driver or None, parent,
                     PM_VERBS.get(d.event, f"{d.event:#x}"), stage, d.start, d.duration,
                     d.error, d.pid))
    sus = [s for n in SUSPEND_PHASES for s in spans.get(n, [])]
    res = [s for n in RESUME_PHASES for s in spans.get(n, [])]
    # Only a cycle that suspended the devices has their suspend (and resume) time: 7.2+
    # prepares devices before preallocating, so a pm_test=freezer cycle has dpm_prepare and
    # dpm_complete alone, a part that is not comparable with a whole suspend.
    suspended = bool(spans.get("pm:dpm_suspend"))
    if sus and suspended:
        f.add("device_suspend_ms", sum(s.ns for s in sus) / 1e6, "tracepoint", "power:suspend_resume")
    else:
        f.why("device_suspend_ms", "not reached in this cycle (devices were not suspended"
              + (", only prepared)" if sus else ")"))
    if res and suspended:
        f.add("device_resume_ms", sum(s.ns for s in res) / 1e6, "tracepoint", "power:suspend_resume")
    else:
        f.why("device_resume_ms", "not reached in this cycle (devices were not resumed"
              + (", only completed)" if res else ")"))
    if lost:
        f.why(["device_callbacks", "device_errors"], lost)
    elif devcalls or sus:
        f.add("device_callbacks", len(rows), "tracepoint", "power:device_pm_callback_start/end")
        f.add("device_errors", sum(1 for r in rows if r[7]), "tracepoint", "power:device_pm_callback_end")
    else:
        f.why(["device_callbacks", "device_errors"], "not reached in this cycle (no device PM callbacks)")
    return rows


def _stage_from_ops(pm_ops: str, event: int) -> str | None:
    """The noirq/late/early phase a callback outside every dpm_* window belongs to, from
    the start of its pm_ops ("noirq bus ", "late type ", ...; the probe keeps 3 bytes)."""
    resume = event in RESUME_EVENTS
    if pm_ops.startswith("noi"):
        return "resume_noirq" if resume else "suspend_noirq"
    if pm_ops.startswith("lat"):
        return "suspend_late"
    if pm_ops.startswith("ear"):
        return "resume_early"
    return None


def derive(events: list[RawEvent], devcalls: list[RawDevcall], tasks: list[RawTask],
           counters: dict[str, int], measurements: dict[str, tuple[bool, str | None]],
           metric_owners: dict[str, list[str]], page_size: int = 4096,
           highmem: bool = False) -> CycleData:
    """Build one cycle's rows.

    measurements: measurement name -> (attached, reason if not); metric_owners: metric name ->
    names of the measurements that can yield it (catalogue order). Every metric in
    metric_owners ends up either in metrics or in not_measured. highmem: a 32-bit kernel
    with highmem, whose pages to copy the probes cannot count whole.
    """
    # Ring order, not timestamp order: the ring is filled in the order things happened, while
    # from 7.1 on the BPF clock runs through the atomic copy and is set back when timekeeping
    # resumes (7.3: syscore_resume stamped ~0.2-1 s after the dpm_resume_* phases that
    # follow it), so a sort by stamp would put effects before their causes.
    events = list(events)
    spans = pair_spans(events)
    f = _Figures()
    notes = drop_notes(counters)
    task_rows, _ = _freezer(f, spans, events, tasks, notes.get("tasks_full"))
    _shrink(f, spans, events)
    _show_speed(f, events, page_size)
    _copy(f, spans, events, measurements.get("swsusp_save", (True, None))[0])
    _pages_to_copy(f, events, highmem)
    lost = "; ".join(notes[k] for k in ("devcall_drops", "dev_unpaired") if k in notes)
    dev_rows = _devices(f, spans, devcalls, lost or None)

    def attached(metric: str) -> list[str]:
        return [o for o in metric_owners[metric] if measurements.get(o, (False, None))[0]]

    # a figure whose probes never attached is absent with their reason, never a 0 made up
    # from another probe's events (device_callbacks from the suspend phases alone, ...)
    kept = [k for k in f.metrics if k in metric_owners and attached(k)]
    not_measured = []
    for metric, owners in metric_owners.items():
        if metric in kept:
            continue
        if not attached(metric):
            o = owners[0]
            why = measurements.get(o, (False, None))[1] or "not attached"
            not_measured.append((metric, f"probe {o} not attached: {why}"))
        else:
            not_measured.append((metric, f.reasons.get(metric, "not seen in this cycle")))
    drops = None
    if counters:
        drops = sum(counters.get(k, 0) for k in COUNTERS)
    names_begin = {e.name for e in events if e.kind == 0}
    names_end = {e.name for e in events if e.kind == 1}
    return CycleData(
        events=event_rows(events), tasks=task_rows, devices=dev_rows,
        metrics=[f.metrics[k] for k in kept],
        not_measured=not_measured, drops=drops,
        started=any(n in names_begin for n in CYCLE_STARTS),
        ended=any(n in names_end for n in CYCLE_ENDS),
        counters=dict(counters), drop_notes=list(notes.values()))


# What each BPF counter (probes/common.h C_*) counts: a record or map entry lost in a cycle.
DROP_WHAT = {
    "event_drops": "events lost: the events ring buffer was full",
    "devcall_drops": ("device callbacks lost: the device-callback ring buffer or the "
                      "devstart/devnames map was full (--callbacks-per-device sizes the ring)"),
    "tasks_full": ("tasks the freezer acted on not stored: the tasks map was full "
                   "(TASKS_MAX, sized from the threads counted at start)"),
    "dev_unpaired": ("device callbacks lost: a callback's end named another device than the "
                     "start recorded on its thread"),
}


def drop_notes(counters: dict[str, int]) -> dict[str, str]:
    """counter -> "N <what was lost>", for every counter above 0."""
    return {k: f"{counters[k]} {DROP_WHAT[k]}" for k in COUNTERS if counters.get(k, 0) > 0}
