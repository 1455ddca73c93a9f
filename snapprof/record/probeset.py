"""The BPF side of `snapprof record`: resolve, compile and attach the probes, then turn what
they saw into capture rows.

Standard library only, here and at run time: bcc runs in a short-lived child process
(snapprof/record/loader.py) that compiles and attaches, hands over the maps and the perf
events holding the programs, and exits — so the compiler's memory is not in the image the
recorder measures. The maps are read with snapprof/record/bpfsys.py.

    ps = ProbeSet()                   # loads probes/catalogue.json, resolves it (no bcc needed)
    rows = ps.status()                # (name, area, target, attached, reason) -> CaptureWriter.set_probes
    ps.attach()                       # the child compiles probes/*.c (12-46 s in the lab) and attaches
    ... one hibernation cycle ...     # every user task but the trigger thread is frozen meanwhile
    data = ps.collect()               # after thaw: drains the buffers, resets per-cycle state
    ps.close()

After attach(), ps.timings = {"compile_s", "attach_s", "hooks", and where known
"loader_peak_rss_kb", "cache_dropped_kb"}, ps.bpf_memlock_kb (the kernel's accounting, or None) and
ps.sizes (buffer and map sizes, fitted to this machine) go to the capture's meta.
Nothing is read while a cycle runs (the recorder is frozen): events go to BPF ring buffers
sized for a whole cycle and per-task freezer data to a map; collect() reads them after
thaw and reports ring-buffer drops. collect() yields metrics only for what the probes
measured; every other metric of the selected measurements is in not_measured with a
reason. Metrics it can yield: ProbeSet.metric_names(). Metrics the recorder gets another
way (kernel log, /dev/snapshot) may share a name: the recorder keeps one row per name.
"""

from __future__ import annotations

import ctypes as ct
import os
from collections import defaultdict

from snapprof.errors import SnapprofError
from snapprof.record import bpfsys, loader
from snapprof.record import catalogue as cat
from snapprof.record.culprits import StuckStack
from snapprof.record.derive import (COUNTERS, CycleData, RawDevcall, RawEvent, RawTask,
                                    derive)
from snapprof.record.resolve import KernelView, Resolution, resolve

__all__ = ["CycleData", "ProbeSet"]

# Every byte of the probes' maps is in the image they measure, so they are sized to this
# machine, not to the worst case (the sizes go to the capture's meta; a full buffer is
# counted as drops, never silently). Measured per snapshot cycle in the lab: ~75 events of
# 144 B; ~700 device callbacks (~300 devices with callbacks, ~250-500 under /sys/devices)
# of 48 B, their names kept once per device in `devnames`; ~10 tasks needing the
# freezer's attention (every thread on kernels before 6.1).
MAPS = ("events", "devcalls", "tasks", "counters", "cycle", "devstart", "devnames", "stuck")
EVENT_BYTES = 144  # record + ring-buffer header, rounded
EVENTS_PER_CYCLE = 200  # ~75 measured: a margin of ~2.5
DEVCALL_BYTES = 48  # struct devcall (40) + ring-buffer header (8)
# A PM device can have up to 8 callbacks in a cycle (prepare..complete, or freeze..restore
# around a real hibernation's copy; PCI devices have all 8), but in the lab they average
# 2.4 per device under /sys/devices (~735 for ~300). The ring is sized for 4 a device (a
# margin of 1.6 there): 8 would double it, and every page of it is in the image. A machine
# that needs more counts the loss as drops in the run; `snapprof record
# --callbacks-per-device 8` sizes for the worst case.
CALLBACKS_PER_DEVICE = 4
#: --freezer-probes: "light" (no hook once per thread in a sweep), or the per-thread sweep
#: hooks on freeze_task() as well: "sweep" (fentry/fexit where the kernel allows, else
#: kprobes), "fentry" (required) or "kprobe"
FREEZER_PROBES = ("light", "sweep", "fentry", "kprobe")


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def buffer_sizes(n_devices: int, n_threads: int, page_size: int = 4096,
                 callbacks_per_device: int = CALLBACKS_PER_DEVICE) -> dict[str, int]:
    """EVENTS_PAGES, DEVCALLS_PAGES (ring buffers, pages, powers of two) and TASKS_MAX,
    DEVSTART_MAX, DEVNAMES_MAX (hash maps allocated as used: the limit caps them and sizes
    their bucket arrays, 16 B an entry) for a machine with that many PM devices and threads."""
    events = _pow2_at_least(-(-EVENTS_PER_CYCLE * EVENT_BYTES // page_size))
    devcalls = _pow2_at_least(max(4, -(-n_devices * callbacks_per_device * DEVCALL_BYTES // page_size)))
    return {"EVENTS_PAGES": events, "DEVCALLS_PAGES": min(devcalls, 4096),
            "TASKS_MAX": _pow2_at_least(n_threads + 256),
            "DEVSTART_MAX": _pow2_at_least(max(128, n_devices)),
            "DEVNAMES_MAX": _pow2_at_least(max(128, n_devices + n_devices // 8))}


def count_pm_devices(sys_root: str = "/sys") -> int:
    """Devices the PM core calls back: those with a power/ folder under /sys/devices."""
    n = 0
    for _dir, dirs, _files in os.walk(os.path.join(sys_root, "devices")):
        if "power" in dirs:
            n += 1
            dirs.remove("power")
    return n


def count_threads(proc_root: str = "/proc") -> int:
    n = 0
    try:
        pids = [p for p in os.listdir(proc_root) if p.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            n += len(os.listdir(os.path.join(proc_root, pid, "task")))
        except OSError:
            continue
    return n


class EventRecord(ct.Structure):
    """struct event in probes/common.h."""

    _fields_ = [("ts", ct.c_uint64), ("value", ct.c_int64), ("aux1", ct.c_uint64),
                ("aux2", ct.c_uint64), ("pid", ct.c_uint32), ("tgid", ct.c_uint32),
                ("cpu", ct.c_uint32), ("kind", ct.c_uint8), ("has_value", ct.c_uint8),
                ("has_aux", ct.c_uint8), ("pad", ct.c_uint8), ("comm", ct.c_char * 16),
                ("name", ct.c_char * 32), ("str", ct.c_char * 32)]


class DevcallRecord(ct.Structure):
    """struct devcall in probes/devices.c (one device PM callback; names in DevnameRecord)."""

    _fields_ = [("start", ct.c_uint64), ("duration", ct.c_uint64), ("key", ct.c_uint64),
                ("error", ct.c_int32), ("event", ct.c_int32), ("pid", ct.c_uint32),
                ("pm_ops", ct.c_char * 4)]


class DevnameRecord(ct.Structure):
    """struct devname in probes/devices.c (value of the `devnames` map, keyed by u64)."""

    _fields_ = [("device", ct.c_char * 48), ("driver", ct.c_char * 32), ("parent", ct.c_char * 48)]


class TaskRecord(ct.Structure):
    """struct taskrec in probes/freezer.c (value of the `tasks` map, keyed by pid)."""

    _fields_ = [("t_true", ct.c_uint64), ("t_refrig", ct.c_uint64), ("tgid", ct.c_uint32),
                ("pass_true", ct.c_uint32), ("n_true", ct.c_uint32), ("stage", ct.c_uint8),
                ("kthread", ct.c_uint8), ("in_place", ct.c_uint8), ("pad", ct.c_uint8),
                ("comm", ct.c_char * 16)]


STUCK_DEPTH = 32  # probes/freezer.c


class StuckRecord(ct.Structure):
    """struct stuckrec in probes/freezer.c (value of the `stuck` map, keyed by pid)."""

    _fields_ = [("since_t0", ct.c_uint64), ("pass_", ct.c_uint32), ("nbytes", ct.c_int32),
                ("ips", ct.c_uint64 * STUCK_DEPTH)]


def decode_stuck(pid: int, rec: StuckRecord) -> StuckStack:
    if rec.nbytes < 0:
        return StuckStack(pid, rec.since_t0 / 1e6, rec.pass_, [], error=rec.nbytes)
    n = min(rec.nbytes // 8, STUCK_DEPTH)
    return StuckStack(pid, rec.since_t0 / 1e6, rec.pass_, [a for a in rec.ips[:n] if a])


def _s(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_event(rec) -> RawEvent:
    """A RawEvent from an EventRecord (or anything with its fields)."""
    return RawEvent(
        ts=rec.ts, cpu=rec.cpu, pid=rec.pid, tgid=rec.tgid, comm=_s(rec.comm), kind=rec.kind,
        name=_s(rec.name), value=rec.value if rec.has_value else None,
        aux1=rec.aux1 if rec.has_aux else None, aux2=rec.aux2 if rec.has_aux else None,
        text=_s(rec.str))


def decode_devcall(rec, name) -> RawDevcall:
    """A RawDevcall from a DevcallRecord and the DevnameRecord its key names."""
    return RawDevcall(start=rec.start, duration=rec.duration, error=rec.error, event=rec.event,
                      pid=rec.pid, device=_s(name.device), driver=_s(name.driver),
                      parent=_s(name.parent), pm_ops=_s(rec.pm_ops))


def decode_task(pid: int, rec) -> RawTask:
    return RawTask(pid=pid, tgid=rec.tgid, comm=_s(rec.comm), stage=rec.stage,
                   kthread=rec.kthread, in_place=rec.in_place, t_true=rec.t_true,
                   t_refrig=rec.t_refrig, pass_true=rec.pass_true, n_true=rec.n_true)


class ProbeSet:
    """The probes of the catalogue that this kernel allows, for one record session."""

    def __init__(self, catalogue_path=None, areas=None, view: KernelView | None = None,
                 callbacks_per_device: int | None = None, real_hibernation: bool = False,
                 freezer_probes: str = "light"):
        """``real_hibernation``: the cycles may restore an image, so no return probe is ever
        attached on a function the catalogue lists as pending across the atomic copy
        (swsusp_save); the measurements that need one are left out with the reason.
        ``freezer_probes``: "light" leaves out the catalogue's per_thread measurements (the
        hooks on freeze_task(), once per thread in every sweep) and hooks every function
        with kprobes; the others add them, and say how the functions with fentry/fexit twins
        (the catalogue's ``fentry``) are hooked: "sweep" (fentry/fexit where the kernel
        allows, else kprobes, with the reason), "fentry" (required: SnapprofError otherwise)
        or "kprobe"."""
        if freezer_probes not in FREEZER_PROBES:
            raise SnapprofError(f"unknown freezer probe method {freezer_probes!r} "
                                f"(one of {', '.join(FREEZER_PROBES)})")
        self.freezer_probes = freezer_probes
        #: ms into a freeze after which the fentry freezer probes take the stack of a task
        #: still refusing (None: the probes' default, 1 s); set before attach()
        self.stuck_after_ms: int | None = None
        #: after attach(): function -> "fentry/fexit" or "kprobe" for every hooked function
        #: of the catalogue's fentry list, and why kprobes were used where they were
        self.methods: dict[str, str] = {}
        self.fentry_why: str | None = None
        self.callbacks_per_device = callbacks_per_device or CALLBACKS_PER_DEVICE
        self.catalogue = cat.load(catalogue_path)
        self.areas = list(areas) if areas is not None else None
        self.view = view or KernelView()
        self.real_hibernation = real_hibernation
        self.resolutions: list[Resolution] = resolve(self.catalogue, self.view, self.areas,
                                                     real_hibernation,
                                                     per_thread=freezer_probes != "light")
        self.loaded: loader.Loaded | None = None
        self._rings: dict[str, bpfsys.RingBuffer] = {}
        self._maps: dict[str, bpfsys.Map] = {}
        self.timings: dict[str, float] = {}
        self.bpf_memlock_kb: dict | None = None  # {"maps", "programs", "n_programs"} after attach
        self._sizes: dict[str, int] | None = None
        self._task_layout: tuple[dict[str, int], str] | None = None
        self._attached: dict[str, bool] = {}
        self._why: dict[str, str] = {}
        self._events: list[RawEvent] = []
        self._devcalls: list[DevcallRecord] = []
        self._devnames: dict[int, DevnameRecord] = {}
        self._bad_record: str | None = None
        self._page_size = os.sysconf("SC_PAGE_SIZE")

    # -- what can be measured ---------------------------------------------------------
    def status(self) -> list[tuple]:
        """(name, area, target, attached, reason) per measurement, for CaptureWriter.set_probes."""
        blockers = self.view.blockers()
        rows = []
        for r in self.resolutions:
            m = r.measurement
            if self.loaded is not None:
                attached = self._attached.get(m.name, False)
                reason = None if attached else (r.reason or self._why.get(m.name) or "not attached")
            else:
                attached = False
                reason = r.reason or (blockers[0] if blockers else "not attached yet")
            rows.append((m.name, m.area, r.target, attached, reason))
        return rows

    def metric_names(self) -> list[str]:
        """Every metric the selected measurements can yield, in catalogue order."""
        return list(self._metric_owners())

    def _metric_owners(self) -> dict[str, list[str]]:
        owners: dict[str, list[str]] = defaultdict(list)
        for r in self.resolutions:
            for metric in r.measurement.metrics:
                owners[metric].append(r.measurement.name)
        return dict(owners)

    # -- compile and attach -----------------------------------------------------------
    def source(self) -> str:
        """The BPF program: probes/*.c as listed in the catalogue, one translation unit
        (bcc rewrites map calls in the main file only, so files are joined, not #included)."""
        parts = []
        for path in self.catalogue.source_files():
            parts.append(f'#line 1 "{path}"\n')
            parts.append(path.read_text(encoding="utf-8"))
            parts.append("\n")
        return "".join(parts)

    @property
    def sizes(self) -> dict[str, int]:
        """Buffer and map sizes for this machine (counted once, from the view's /sys and /proc)."""
        if self._sizes is None:
            self._sizes = buffer_sizes(count_pm_devices(self.view.path("/sys")),
                                       count_threads(self.view.path("/proc")), self._page_size,
                                       self.callbacks_per_device)
        return self._sizes

    @property
    def task_layout_text(self) -> str | None:
        """Where the probes' struct task_struct layout came from (once cflags() ran)."""
        return self._task_layout[1] if self._task_layout else None

    def cflags(self) -> list[str]:
        flags = [f"-D{k}={v}" for k, v in self.sizes.items()]
        if self.stuck_after_ms is not None:  # when the freezer probes take a refusing task's stack
            flags.append(f"-DSTUCK_NS={int(self.stuck_after_ms) * 1_000_000}ULL")
        flags += ["-Wno-macro-redefined", "-Wno-unused-function"]
        if self._task_layout is None:
            self._task_layout = self.view.task_layout()
        flags += [f"-D{k}={v:#x}" for k, v in self._task_layout[0].items()]
        seen = set()
        for r in self.resolutions:
            for c in r.choices:
                if not c.ok:
                    continue
                if c.probe.kind == "tracepoint":
                    system, _, event = c.name.partition(":")
                    flag = f"-DHAVE_TP_{system}__{event}"
                elif c.probe.kind == "static":
                    flag = f"-DADDR_{c.name}={c.address:#x}ULL"
                else:
                    continue
                if flag not in seen:
                    seen.add(flag)
                    flags.append(flag)
        return flags

    @staticmethod
    def hooks(resolution: Resolution) -> list[tuple[str, str, str, int]]:
        """(kind, target, handler, maxactive) for each BPF attachment a measurement needs."""
        out = []
        for c in resolution.choices:
            if c.probe.kind == "kprobe":
                if c.probe.entry:
                    out.append(("kprobe", c.name, f"enter__{c.name}", 0))
                if c.probe.ret:
                    out.append(("kretprobe", c.name, f"leave__{c.name}", c.probe.maxactive))
            elif c.probe.kind == "tracepoint":
                system, _, event = c.name.partition(":")
                out.append(("tracepoint", c.name, f"tp__{system}__{event}", 0))
        return out

    def attach_hooks(self) -> list[tuple[str, str, str, int]]:
        """Every hook attach() asks the loader for: those of the available measurements.

        With ``real_hibernation`` a return probe on a function pending across the atomic copy
        is refused here, whatever the catalogue says (SnapprofError, before anything is
        compiled): the restored kernel would crash on it."""
        hooks = sorted({h for r in self.resolutions if r.available for h in self.hooks(r)})
        if self.real_hibernation:
            pending = set(self.catalogue.pending_across_copy)
            bad = [f"{kind} {target}" for kind, target, _h, _m in hooks
                   if kind == "kretprobe" and target.split(".", 1)[0] in pending]
            if bad:
                raise SnapprofError(f"refusing to attach {', '.join(bad)} for a real hibernation: "
                                    f"{self.catalogue.pending_why}")
        return hooks

    def fentry_plan(self, hooks) -> tuple[list[str], str | None]:
        """The functions to hook with fentry/fexit instead of kprobes (those of the
        catalogue's fentry list that ``hooks`` need and the kernel allows), and why the
        others of that list that ``hooks`` need are not; SnapprofError if fentry is required
        (freezer_probes="fentry") and cannot be had."""
        hooked = {target for kind, target, _h, _m in hooks if kind in ("kprobe", "kretprobe")}
        wanted = [f for f in self.catalogue.fentry_functions if f in hooked]
        if not wanted:
            return [], None
        if self.freezer_probes == "kprobe":
            return [], "kprobes chosen (--freezer-probes kprobe)"
        if self.freezer_probes == "light":
            return [], None  # no per-thread hook: a few calls a stage, kprobes do
        problem = self.view.fentry_problem()
        use: list[str] = []
        if problem is None:
            trace = self.view.traceable()
            if trace is None:
                problem = "cannot read available_filter_functions (fentry needs ftrace)"
            else:
                use = [f for f in wanted if f in trace]
                rest = [f for f in wanted if f not in use]
                if rest:
                    problem = f"{', '.join(rest)}: not ftrace-traceable (fentry needs ftrace)"
        if problem and self.freezer_probes == "fentry":
            raise SnapprofError(f"--freezer-probes fentry: {problem}")
        return use, problem

    def methods_text(self) -> str:
        """One line for the capture's meta: which hook each function got."""
        groups: dict[str, list[str]] = defaultdict(list)
        for fn, how in self.methods.items():
            groups[how].append(fn)
        text = "; ".join(f"{how}: {', '.join(fns)}" for how, fns in sorted(groups.items()))
        others = "kprobes/kretprobes for every other function"
        return f"{text}; {others}" if text else others

    def attach(self) -> None:
        """Compile once (in a child process: snapprof/record/loader.py) and attach every
        available measurement; SnapprofError if none can be."""
        if self.loaded is not None:
            return
        blockers = self.view.blockers()
        if blockers:
            raise SnapprofError("cannot attach probes: " + "; ".join(blockers))
        usable = [r for r in self.resolutions if r.available]
        if not usable:
            first = next((r.reason for r in self.resolutions if r.reason), "nothing selected")
            raise SnapprofError(f"no probe can be attached on this kernel ({first})")
        if not self.view.bcc_installed:
            raise SnapprofError("bcc missing; install python3-bpfcc")
        hooks = self.attach_hooks()
        use, why = self.fentry_plan(hooks)
        fentry = {"targets": use, "defines": [self.catalogue.fentry_define(f) for f in use],
                  "required": self.freezer_probes == "fentry"}
        loaded = loader.load(self.source(), self.cflags(), hooks, list(MAPS), fentry=fentry)
        used = set(loaded.fentry_used)
        hooked = {target for kind, target, _h, _m in hooks if kind in ("kprobe", "kretprobe")}
        self.methods = {f: ("fentry/fexit" if f in used else "kprobe")
                        for f in self.catalogue.fentry_functions if f in hooked}
        self.fentry_why = loaded.fentry_error or why
        for r in self.resolutions:
            name = r.measurement.name
            if not r.available:
                self._attached[name] = False
                continue
            err = None
            for kind, target, handler, _maxactive in self.hooks(r):
                err = err or loaded.attach_errors.get((kind, target, handler))
            self._attached[name] = err is None
            if err:
                self._why[name] = err
        if not any(self._attached.values()):
            loaded.close()
            first = next(iter(self._why.values()), "unknown reason")
            raise SnapprofError(f"no probe could be attached ({first})")
        try:
            self._open_maps(loaded)
        except BaseException:
            self._close_maps()
            loaded.close()
            raise
        self.loaded = loaded
        self.timings = {"compile_s": loaded.compile_s, "attach_s": loaded.attach_s,
                        "hooks": float(sum(1 for v in loaded.attach_errors.values() if v is None))}
        for key, value in (("loader_peak_rss_kb", loaded.loader_peak_rss_kb),
                           ("cache_dropped_kb", loaded.cache_dropped_kb)):
            if value is not None:  # unknown stays unknown, never 0
                self.timings[key] = float(value)
        self.bpf_memlock_kb = loaded.bpf_memlock_kb

    def _open_maps(self, loaded) -> None:
        for name in ("events", "devcalls"):
            m = loaded.maps.get(name)
            if m is None:
                raise SnapprofError(f"the probes have no {name} ring buffer")
            self._rings[name] = bpfsys.RingBuffer(m["fd"], m["max_entries"])
        for name, (key_size, value_size) in {"tasks": (4, ct.sizeof(TaskRecord)), "counters": (4, 8),
                                             "cycle": (4, None), "devstart": (4, None),
                                             "devnames": (8, ct.sizeof(DevnameRecord)),
                                             "stuck": (4, ct.sizeof(StuckRecord))}.items():
            m = loaded.maps.get(name)
            if m is None:
                raise SnapprofError(f"the probes have no {name} map")
            if m["key_size"] != key_size or (value_size is not None and m["value_size"] != value_size):
                raise SnapprofError(
                    f"BPF record layout mismatch (map {name}: {m['key_size']}/{m['value_size']} bytes, "
                    f"expected {key_size}/{value_size}): probes/*.c and snapprof/record/probeset.py disagree")
            self._maps[name] = bpfsys.Map(m["fd"], m["key_size"], m["value_size"], m["max_entries"])

    def _close_maps(self) -> None:
        for rb in self._rings.values():
            rb.close()
        self._rings, self._maps = {}, {}

    # -- reading ----------------------------------------------------------------------
    def _on_event(self, data: bytes) -> None:
        if len(data) < ct.sizeof(EventRecord):
            self._bad_record = f"event record of {len(data)} bytes, expected {ct.sizeof(EventRecord)}"
            return
        self._events.append(decode_event(EventRecord.from_buffer_copy(data[:ct.sizeof(EventRecord)])))

    def _on_devcall(self, data: bytes) -> None:
        if len(data) < ct.sizeof(DevcallRecord):
            self._bad_record = f"devcall record of {len(data)} bytes, expected {ct.sizeof(DevcallRecord)}"
            return
        self._devcalls.append(DevcallRecord.from_buffer_copy(data[:ct.sizeof(DevcallRecord)]))

    def _name(self, key: int) -> DevnameRecord | None:
        """The names a device key stands for (read from `devnames` once, then remembered)."""
        name = self._devnames.get(key)
        if name is None:
            raw = self._maps["devnames"].lookup(key.to_bytes(8, "little"))
            if raw is not None:
                name = self._devnames[key] = DevnameRecord.from_buffer_copy(raw)
        return name

    def collect(self, timeout_ms: int = 0) -> CycleData:
        """Drain everything buffered since the last collect (call it after thaw), derive the
        cycle's rows and metrics, and reset the per-cycle BPF state."""
        if self.loaded is None:
            raise SnapprofError("probes are not attached")
        events_rb = self._rings["events"]
        if timeout_ms > 0:
            events_rb.wait(timeout_ms)
        events_rb.consume(self._on_event)
        self._rings["devcalls"].consume(self._on_devcall)
        if self._bad_record:
            raise SnapprofError(f"BPF record layout mismatch ({self._bad_record}): "
                                "probes/*.c and snapprof/record/probeset.py disagree")
        events, self._events = self._events, []
        records, self._devcalls = self._devcalls, []
        devcalls, nameless = [], 0
        for rec in records:
            name = self._name(rec.key)
            if name is None:  # cannot happen unless the map lost it: a lost callback
                nameless += 1
            else:
                devcalls.append(decode_devcall(rec, name))
        tmap = self._maps["tasks"]
        tasks = [decode_task(int.from_bytes(k, "little"), TaskRecord.from_buffer_copy(v))
                 for k, v in tmap.items()]
        tmap.clear()
        smap = self._maps["stuck"]
        stuck = {int.from_bytes(k, "little"): decode_stuck(int.from_bytes(k, "little"),
                                                           StuckRecord.from_buffer_copy(v))
                 for k, v in smap.items()}
        if stuck:
            smap.clear()
        counters = {}
        arr = self._maps["counters"]
        for i, name in enumerate(COUNTERS):
            key = i.to_bytes(4, "little")
            value = arr.lookup(key)
            counters[name] = int.from_bytes(value, "little") if value is not None else 0
            arr.update(key, bytes(8))
        counters["devcall_drops"] = counters.get("devcall_drops", 0) + nameless
        self._maps["cycle"].clear()
        self._maps["devstart"].clear()
        status = {r.measurement.name: (self._attached.get(r.measurement.name, False),
                                       r.reason or self._why.get(r.measurement.name))
                  for r in self.resolutions}
        data = derive(events, devcalls, tasks, counters, status, self._metric_owners(),
                      self._page_size, highmem=not os.uname().machine.endswith("64"))
        data.stuck = stuck
        return data

    def close(self) -> None:
        """Detach everything: close the ring buffers' mappings, the maps and perf events."""
        self._close_maps()
        if self.loaded is not None:
            try:
                self.loaded.close()
            finally:
                self.loaded = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


