"""The BPF side of `snapprof record`: resolve, compile and attach the probes, then turn what
they saw into capture rows.

Standard library at import time; bcc is imported lazily by ProbeSet.attach().

    ps = ProbeSet()                   # loads probes/catalogue.json, resolves it (no bcc needed)
    rows = ps.status()                # (name, area, target, attached, reason) -> CaptureWriter.set_probes
    ps.attach()                       # compiles probes/*.c once (12-21 s in the lab) and attaches
    ... one hibernation cycle ...     # every user task but the trigger thread is frozen meanwhile
    data = ps.collect()               # after thaw: drains the buffers, resets per-cycle state
    ps.close()

After attach(), ps.timings = {"compile_s", "attach_s", "hooks"} (for the capture's meta).
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
import sys
import tempfile
import time
from collections import defaultdict

from snapprof.errors import SnapprofError
from snapprof.record import catalogue as cat
from snapprof.record.derive import (COUNTERS, CycleData, RawDevcall, RawEvent, RawTask,
                                    derive)
from snapprof.record.resolve import KernelView, Resolution, resolve

__all__ = ["CycleData", "ProbeSet"]

# Ring buffer sizes in pages (power of two). events: ~130 B each, a cycle has a few hundred;
# devcalls: ~190 B per device callback, 8 phases x every device.
EVENTS_PAGES = 256  # 1 MiB
DEVCALLS_PAGES = 1024  # 4 MiB
TASKS_MAX = 32768


class EventRecord(ct.Structure):
    """struct event in probes/common.h."""

    _fields_ = [("ts", ct.c_uint64), ("value", ct.c_int64), ("aux1", ct.c_uint64),
                ("aux2", ct.c_uint64), ("pid", ct.c_uint32), ("tgid", ct.c_uint32),
                ("cpu", ct.c_uint32), ("kind", ct.c_uint8), ("has_value", ct.c_uint8),
                ("has_aux", ct.c_uint8), ("pad", ct.c_uint8), ("comm", ct.c_char * 16),
                ("name", ct.c_char * 32), ("str", ct.c_char * 32)]


class DevcallRecord(ct.Structure):
    """struct devcall in probes/devices.c."""

    _fields_ = [("start", ct.c_uint64), ("duration", ct.c_uint64), ("error", ct.c_int32),
                ("event", ct.c_int32), ("pid", ct.c_uint32), ("pad", ct.c_uint32),
                ("device", ct.c_char * 48), ("driver", ct.c_char * 32),
                ("parent", ct.c_char * 48), ("pm_ops", ct.c_char * 24)]


def _s(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_event(rec) -> RawEvent:
    """A RawEvent from an EventRecord (or anything with its fields)."""
    return RawEvent(
        ts=rec.ts, cpu=rec.cpu, pid=rec.pid, tgid=rec.tgid, comm=_s(rec.comm), kind=rec.kind,
        name=_s(rec.name), value=rec.value if rec.has_value else None,
        aux1=rec.aux1 if rec.has_aux else None, aux2=rec.aux2 if rec.has_aux else None,
        text=_s(rec.str))


def decode_devcall(rec) -> RawDevcall:
    return RawDevcall(start=rec.start, duration=rec.duration, error=rec.error, event=rec.event,
                      pid=rec.pid, device=_s(rec.device), driver=_s(rec.driver),
                      parent=_s(rec.parent), pm_ops=_s(rec.pm_ops))


def decode_task(pid: int, rec) -> RawTask:
    return RawTask(pid=pid, tgid=rec.tgid, comm=_s(rec.comm), stage=rec.stage,
                   kthread=rec.kthread, in_place=rec.in_place, t_true=rec.t_true,
                   t_refrig=rec.t_refrig, pass_true=rec.pass_true, n_true=rec.n_true)


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return str(text).strip()


class ProbeSet:
    """The probes of the catalogue that this kernel allows, for one record session."""

    def __init__(self, catalogue_path=None, areas=None, view: KernelView | None = None):
        self.catalogue = cat.load(catalogue_path)
        self.areas = list(areas) if areas is not None else None
        self.view = view or KernelView()
        self.resolutions: list[Resolution] = resolve(self.catalogue, self.view, self.areas)
        self.bpf = None
        self.timings: dict[str, float] = {}
        self._attached: dict[str, bool] = {}
        self._why: dict[str, str] = {}
        self._events: list[RawEvent] = []
        self._devcalls: list[RawDevcall] = []
        self._bad_record: str | None = None
        self._page_size = os.sysconf("SC_PAGE_SIZE")

    # -- what can be measured ---------------------------------------------------------
    def status(self) -> list[tuple]:
        """(name, area, target, attached, reason) per measurement, for CaptureWriter.set_probes."""
        blockers = self.view.blockers()
        rows = []
        for r in self.resolutions:
            m = r.measurement
            if self.bpf is not None:
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

    def cflags(self) -> list[str]:
        flags = [f"-DEVENTS_PAGES={EVENTS_PAGES}", f"-DDEVCALLS_PAGES={DEVCALLS_PAGES}",
                 f"-DTASKS_MAX={TASKS_MAX}", "-Wno-macro-redefined", "-Wno-unused-function"]
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

    def attach(self) -> None:
        """Compile once and attach every available measurement; SnapprofError if none can be."""
        if self.bpf is not None:
            return
        blockers = self.view.blockers()
        if blockers:
            raise SnapprofError("cannot attach probes: " + "; ".join(blockers))
        usable = [r for r in self.resolutions if r.available]
        if not usable:
            first = next((r.reason for r in self.resolutions if r.reason), "nothing selected")
            raise SnapprofError(f"no probe can be attached on this kernel ({first})")
        try:
            import bcc  # noqa: PLC0415 (lazy: the recorder runs without bcc until here)
        except ImportError as exc:
            raise SnapprofError(f"bcc missing ({exc}); install python3-bpfcc") from None

        t0 = time.monotonic()
        bpf = _compile(bcc, self.source(), self.cflags())
        t1 = time.monotonic()
        done: dict[tuple, str | None] = {}
        for r in self.resolutions:
            name = r.measurement.name
            if not r.available:
                self._attached[name] = False
                continue
            err = None
            for kind, target, handler, maxactive in self.hooks(r):
                key = (kind, target, handler)
                if key not in done:
                    done[key] = _attach_one(bpf, kind, target, handler, maxactive)
                err = err or done[key]
            self._attached[name] = err is None
            if err:
                self._why[name] = err
        t2 = time.monotonic()
        if not any(self._attached.values()):
            bpf.cleanup()
            first = next(iter(self._why.values()), "unknown reason")
            raise SnapprofError(f"no probe could be attached ({first})")
        bpf["events"].open_ring_buffer(self._on_event)
        bpf["devcalls"].open_ring_buffer(self._on_devcall)
        self.bpf = bpf
        self.timings = {"compile_s": t1 - t0, "attach_s": t2 - t1,
                        "hooks": float(sum(1 for v in done.values() if v is None))}

    # -- reading ----------------------------------------------------------------------
    def _on_event(self, ctx, data, size):
        if size < ct.sizeof(EventRecord):
            self._bad_record = f"event record of {size} bytes, expected {ct.sizeof(EventRecord)}"
            return 0
        self._events.append(decode_event(ct.cast(data, ct.POINTER(EventRecord)).contents))
        return 0

    def _on_devcall(self, ctx, data, size):
        if size < ct.sizeof(DevcallRecord):
            self._bad_record = f"devcall record of {size} bytes, expected {ct.sizeof(DevcallRecord)}"
            return 0
        self._devcalls.append(decode_devcall(ct.cast(data, ct.POINTER(DevcallRecord)).contents))
        return 0

    def collect(self, timeout_ms: int = 0) -> CycleData:
        """Drain everything buffered since the last collect (call it after thaw), derive the
        cycle's rows and metrics, and reset the per-cycle BPF state."""
        if self.bpf is None:
            raise SnapprofError("probes are not attached")
        b = self.bpf
        if timeout_ms > 0:
            b.ring_buffer_poll(timeout_ms)
        b.ring_buffer_consume()
        if self._bad_record:
            raise SnapprofError(f"BPF record layout mismatch ({self._bad_record}): "
                                "probes/*.c and snapprof/record/probeset.py disagree")
        events, self._events = self._events, []
        devcalls, self._devcalls = self._devcalls, []
        tmap = b["tasks"]
        tasks = [decode_task(k.value, v) for k, v in tmap.items()]
        tmap.clear()
        counters = {}
        arr = b["counters"]
        for i, name in enumerate(COUNTERS):
            counters[name] = int(arr[ct.c_int(i)].value)
            arr[ct.c_int(i)] = ct.c_uint64(0)
        b["cycle"].clear()
        b["devstart"].clear()
        status = {r.measurement.name: (self._attached.get(r.measurement.name, False),
                                       r.reason or self._why.get(r.measurement.name))
                  for r in self.resolutions}
        return derive(events, devcalls, tasks, counters, status, self._metric_owners(),
                      self._page_size)

    def close(self) -> None:
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            finally:
                self.bpf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _compile(bcc, text: str, cflags: list[str]):
    """bcc.BPF(text) with the compiler's stderr captured, so a failure is one line."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as errf:
        os.dup2(errf.fileno(), 2)
        try:
            bpf = bcc.BPF(text=text, cflags=cflags)
            err = None
        except Exception as exc:  # bcc raises plain Exception
            bpf, err = None, exc
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        if err is not None:
            errf.seek(0)
            log = errf.read().decode("utf-8", "replace")
            sys.stderr.write(log)
            line = next((ln for ln in log.splitlines() if "error:" in ln), _first_line(str(err)))
            raise SnapprofError(f"BPF compile failed: {line.strip()}")
    return bpf


def _attach_one(bpf, kind: str, target: str, handler: str, maxactive: int) -> str | None:
    """Attach one handler; None if it worked, else a one-line reason."""
    try:
        if kind == "kprobe":
            bpf.attach_kprobe(event=target, fn_name=handler)
        elif kind == "kretprobe":
            bpf.attach_kretprobe(event=target, fn_name=handler, maxactive=maxactive)
        else:
            bpf.attach_tracepoint(tp=target, fn_name=handler)
    except Exception as exc:  # bcc raises plain Exception with a message
        return f"{kind} {target}: {_first_line(str(exc))}"
    return None
