"""Resolve the probe catalogue against the running kernel, without bcc.

Standard library only. KernelView reads what the kernel exposes about itself:
/proc/kallsyms (which names are symbols, and the addresses of statics when root),
<tracefs>/available_filter_functions (what ftrace can hook), <tracefs>/events/<sys>/<event>
(tracepoints), /sys/kernel/debug/kprobes/blacklist, /sys/kernel/security/lockdown, the
kprobe PMU, root, and whether bcc is installed. Every path is read under ``root`` so tests
can use a fake tree.

resolve() decides, for each measurement, which kernel names it will use, and if it cannot
be made, why: "not root", "bcc missing", "kernel lockdown", "no symbol in this kernel
(inlined)", "not in this kernel version", "tracepoint absent", ...
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

from snapprof.record.catalogue import Alternative, Catalogue, Measurement, Probe, parse_version

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
KPROBE_BLACKLIST = "/sys/kernel/debug/kprobes/blacklist"
LOCKDOWN = "/sys/kernel/security/lockdown"
KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"
KERNEL_BTF = "/sys/kernel/btf/vmlinux"
# struct task_struct's fields the probes read, with the size their C code reads, and the
# two flags they test (probes/common.h, probes/freezer.c)
TASK_FIELDS = {"pid": 4, "tgid": 4, "flags": 4, "comm": 16, "__state": 4}
SCHED_DEFINES = ("TASK_FROZEN", "PF_KTHREAD")
SCHED_HEADERS = ("/lib/modules/{release}/source/include/linux/sched.h",
                 "/lib/modules/{release}/build/include/linux/sched.h")
TRAMPOLINE_SYMBOL = "bpf_trampoline_link_prog"  # bcc's own test for fentry support
NO_HIBERNATION = "kernel built without hibernation (CONFIG_HIBERNATION off: no swsusp_save)"
FUNC_TYPES = set("tTwW")
DATA_TYPES = set("bBdDrRgGsS")


class KernelView:
    """What the running kernel (or a fake tree under ``root``) lets snapprof probe."""

    def __init__(self, root: str = "/", euid: int | None = None, release: str | None = None,
                 bcc: bool | None = None, machine: str | None = None):
        self.root = root
        self.machine = machine or os.uname().machine
        self.euid = os.geteuid() if euid is None else euid
        self.release = (release or self._read("/proc/sys/kernel/osrelease") or os.uname().release).strip()
        self.version = parse_version(self.release)
        self._bcc = bcc
        # Only these names (and their compiler clones, name.isra.0 ...) are kept from
        # kallsyms and available_filter_functions: the whole tables cost the recorder tens
        # of MiB, and the recorder's memory is part of the image it measures. None: all.
        self.wanted: frozenset[str] | None = None
        self._kallsyms: dict[str, list[tuple[int, str]]] | None | bool = False
        self._traceable: dict[str, int] | None | bool = False
        self._blacklist: set[str] | None | bool = False

    # -- files -------------------------------------------------------------------------
    def path(self, p: str) -> str:
        return os.path.join(self.root, p.lstrip("/"))

    def _read(self, p: str) -> str | None:
        try:
            with open(self.path(p), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return None

    # -- facts -------------------------------------------------------------------------
    @property
    def is_root(self) -> bool:
        return self.euid == 0

    @property
    def bcc_installed(self) -> bool:
        if self._bcc is None:
            self._bcc = importlib.util.find_spec("bcc") is not None
        return self._bcc

    def lockdown(self) -> str | None:
        """The selected lockdown level ('none', 'integrity', 'confidentiality') or None."""
        text = self._read(LOCKDOWN)
        if text is None:
            return None
        for word in text.split():
            if word.startswith("[") and word.endswith("]"):
                return word[1:-1]
        return text.strip() or None

    def tracefs(self) -> str | None:
        """The tracefs directory (as a path under root) if it is mounted and readable."""
        for d in TRACEFS_DIRS:
            p = self.path(d)
            if os.path.isdir(os.path.join(p, "events")) and os.access(p, os.R_OK | os.X_OK):
                return d
        return None

    def tracefs_problem(self) -> str:
        for d in TRACEFS_DIRS:
            p = self.path(d)
            if os.path.isdir(p) and not os.access(p, os.R_OK | os.X_OK):
                return f"tracefs {d} not readable (not root)"
        return "tracefs not mounted (mount -t tracefs nodev /sys/kernel/tracing)"

    def kprobes_supported(self) -> bool | None:
        """True/False when the kernel says; None when it cannot be told."""
        if os.path.isdir(self.path(KPROBE_PMU)):
            return True
        tfs = self.tracefs()
        if tfs is not None:
            return os.path.exists(self.path(f"{tfs}/kprobe_events"))
        if os.path.isdir(self.path("/sys/bus/event_source/devices")):
            return False  # perf PMUs are listed, and the kprobe PMU is not among them
        return None

    def narrow(self, names) -> None:
        """Keep only these symbol names (and their clones) from the tables read later."""
        if self._kallsyms is False and self._traceable is False:
            self.wanted = frozenset(names)

    def _lines(self, p: str):
        """The file's lines, streamed (kallsyms is ~10 MB); None if unreadable."""
        try:
            f = open(self.path(p), encoding="utf-8", errors="replace")
        except OSError:
            return None

        def gen():
            with f:
                yield from f
        return gen()

    def _keep(self, name: str) -> bool:
        return self.wanted is None or name.split(".", 1)[0] in self.wanted

    def kallsyms(self) -> dict[str, list[tuple[int, str]]] | None:
        """name -> [(address, type)], vmlinux symbols only (those wanted); None if unreadable."""
        if self._kallsyms is False:
            lines = self._lines("/proc/kallsyms")
            if lines is None:
                self._kallsyms = None
            else:
                table: dict[str, list[tuple[int, str]]] = defaultdict(list)
                for line in lines:
                    parts = line.split()
                    if len(parts) != 3 or not self._keep(parts[2]):  # 4th field "[module]"
                        continue
                    try:
                        addr = int(parts[0], 16)
                    except ValueError:
                        continue
                    table[parts[2]].append((addr, parts[1]))
                self._kallsyms = dict(table)
        return self._kallsyms

    def traceable(self) -> dict[str, int] | None:
        """available_filter_functions: name -> occurrences (vmlinux, those wanted); None if
        unreadable."""
        if self._traceable is False:
            tfs = self.tracefs()
            lines = self._lines(f"{tfs}/available_filter_functions") if tfs else None
            if lines is None:
                self._traceable = None
            else:
                counts: dict[str, int] = defaultdict(int)
                for line in lines:
                    parts = line.split()
                    if len(parts) == 1 and self._keep(parts[0]):
                        counts[parts[0]] += 1
                self._traceable = dict(counts)
        return self._traceable

    def kprobe_blacklist(self) -> set[str] | None:
        if self._blacklist is False:
            text = self._read(KPROBE_BLACKLIST)
            if text is None:
                self._blacklist = None
            else:
                self._blacklist = {p.split()[1] for p in text.splitlines() if len(p.split()) >= 2}
        return self._blacklist

    def tracepoint(self, name: str) -> tuple[bool | None, str | None]:
        """(exists, reason if not): reason says whether tracefs could be read at all."""
        system, _, event = name.partition(":")
        tfs = self.tracefs()
        if tfs is None:
            return None, self.tracefs_problem()
        if os.path.isfile(self.path(f"{tfs}/events/{system}/{event}/format")):
            return True, None
        return False, f"tracepoint {name} absent in this kernel"

    def zero_pages_left_out(self) -> bool | None:
        """Whether the kernel leaves all-zero pages out of its image (6.6+: it has the
        nr_zero_pages static), so the pages to copy are more than the image holds; None
        when kallsyms cannot be read."""
        syms = self.kallsyms()
        if syms is None:
            return None
        return "nr_zero_pages" in syms

    def hibernation_built(self) -> bool | None:
        """Whether the kernel has hibernation code at all (its swsusp_save symbol)."""
        syms = self.kallsyms()
        if syms is None:
            return None
        return "swsusp_save" in syms or "hibernate" in syms

    def fentry_problem(self) -> str | None:
        """Why fentry/fexit (BPF trampolines) cannot be used on this kernel, or None if they
        can: bcc's own test (x86-64, the kernel's BTF, the trampoline code in kallsyms)."""
        if self.machine != "x86_64":
            return f"no BPF trampolines in bcc on {self.machine}"
        if not os.path.exists(self.path(KERNEL_BTF)):
            return f"kernel without BTF ({KERNEL_BTF} absent)"
        syms = self.kallsyms()
        if syms is None:
            return "cannot read /proc/kallsyms"
        if TRAMPOLINE_SYMBOL not in syms:
            return f"kernel without BPF trampolines (no {TRAMPOLINE_SYMBOL})"
        return None

    def task_layout(self) -> tuple[dict[str, int], str]:
        """The compiler defines that let the probes read struct task_struct without
        compiling <linux/sched.h> (17-20 s of each compile in the lab), and one line saying
        where they came from; ({}, why) when they cannot all be had, and the probes then
        compile the header. Offsets come from the kernel's BTF, TASK_FROZEN and PF_KTHREAD
        from this kernel's <linux/sched.h> read as text (macros are not in BTF)."""
        from snapprof.record import btf  # only when compiling

        try:
            with open(self.path(KERNEL_BTF), "rb") as f:
                blob = f.read(64 << 20)
        except OSError as exc:
            return {}, f"<linux/sched.h> compiled: no kernel BTF ({KERNEL_BTF}: {exc.strerror})"
        try:
            fields = btf.struct_fields(blob, "task_struct", TASK_FIELDS)
        except btf.BtfError as exc:
            return {}, f"<linux/sched.h> compiled: {exc}"
        finally:
            del blob
        for name, size in TASK_FIELDS.items():
            if fields[name].size != size:
                return {}, (f"<linux/sched.h> compiled: task_struct.{name} is {fields[name].size} "
                            f"bytes in the kernel's BTF, the probes read {size}")
        defines = {f"TASK_OFF_{n}": f.offset for n, f in fields.items()}
        tried = []
        for pattern in SCHED_HEADERS:
            header = pattern.format(release=self.release)
            text = self._read(header)
            if text is None:
                tried.append(header)
                continue
            found = {}
            for name in SCHED_DEFINES:
                m = re.search(rf"^#define[ \t]+{name}[ \t]+(0x[0-9a-fA-F]+|[0-9]+)\b", text, re.M)
                if m:
                    found[name] = int(m.group(1), 0)
            if len(found) < len(SCHED_DEFINES):
                missing = ", ".join(n for n in SCHED_DEFINES if n not in found)
                return {}, f"<linux/sched.h> compiled: {header} defines no plain {missing}"
            defines.update(found)
            where = ", ".join(f"{n}@{f.offset}" for n, f in fields.items())
            flags = ", ".join(f"{n}={found[n]:#x}" for n in SCHED_DEFINES)
            return defines, f"task_struct from the kernel's BTF ({where}); {flags} from {header}"
        return {}, f"<linux/sched.h> compiled: cannot read {' or '.join(tried)}"

    def blockers(self) -> list[str]:
        """Reasons no probe can be attached at all, the kernel's own first."""
        out = []
        if self.kprobes_supported() is False:
            out.append("kernel without kprobes (CONFIG_KPROBES / CONFIG_KPROBE_EVENTS off)")
        level = self.lockdown()
        if level == "confidentiality":
            out.append("kernel lockdown (confidentiality) forbids kprobes and BPF kernel reads")
        if not self.is_root:
            out.append(f"not root (effective uid {self.euid})")
        if not self.bcc_installed:
            out.append("bcc missing (install python3-bpfcc)")
        return out


@dataclass
class ProbeChoice:
    """How one catalogue probe is realised on this kernel."""

    probe: Probe
    name: str | None = None  # the alternative used
    address: int | None = None  # statics
    reason: str | None = None  # why it cannot be used
    note: str | None = None  # usable, with a remark

    @property
    def ok(self) -> bool:
        return self.name is not None and self.reason is None


@dataclass
class Resolution:
    measurement: Measurement
    choices: list[ProbeChoice] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return all(c.ok for c in self.choices)

    @property
    def reason(self) -> str | None:
        reasons = []
        for c in self.choices:
            if c.reason and c.reason not in reasons:
                reasons.append(c.reason)
        return "; ".join(reasons) or None

    @property
    def target(self) -> str:
        names = []
        for c in self.choices:
            label = c.name if c.ok else c.probe.label()
            if c.probe.kind == "static":
                label = f"&{label}"
            if label not in names:
                names.append(label)
        return ",".join(names)

    @property
    def notes(self) -> list[str]:
        return [c.note for c in self.choices if c.note]


def _missing_function_reason(alts: tuple[Alternative, ...], view: KernelView,
                             syms: dict | None) -> str:
    """Why none of a probe's function alternatives can be used."""
    if view.hibernation_built() is False:
        return NO_HIBERNATION
    parts = []
    for alt in alts:
        if not alt.in_version(view.version):
            parts.append(f"{alt.name}: not in kernel {view.release} (only {alt.version_text()})")
            continue
        clones = sorted(n for n in (syms or {}) if n.startswith(alt.name + ".")) if syms else []
        if clones:
            parts.append(f"{alt.name}: only compiler clones in this kernel ({', '.join(clones)})")
        else:
            parts.append(f"{alt.name}: no symbol in this kernel (inlined or absent)")
    return "; ".join(parts)


def _choose_function(probe: Probe, view: KernelView) -> ProbeChoice:
    syms = view.kallsyms()
    trace = view.traceable()
    black = view.kprobe_blacklist() or set()
    if syms is None and trace is None:
        return ProbeChoice(probe, reason="cannot read /proc/kallsyms or available_filter_functions")
    problems = []
    for alt in probe.alternatives:
        n = alt.name
        nsym = len([e for e in syms.get(n, ()) if e[1] in FUNC_TYPES]) if syms is not None else 0
        ntrace = trace.get(n, 0) if trace is not None else 0
        count = max(nsym, ntrace)
        if count == 0:
            continue
        if count > 1:
            problems.append(f"{n}: ambiguous name ({count} symbols), rejected by kprobes")
            continue
        if n in black:
            problems.append(f"{n}: in the kprobe blacklist")
            continue
        note = None
        if trace is not None and n not in trace:
            note = f"{n} is not ftrace-traceable (notrace): int3 kprobe"
        if not alt.in_version(view.version):
            note = ((note + "; ") if note else "") + f"{n} present outside its expected versions"
        return ProbeChoice(probe, name=n, note=note)
    if problems:
        return ProbeChoice(probe, reason="; ".join(problems))
    return ProbeChoice(probe, reason=_missing_function_reason(probe.alternatives, view, syms))


def _choose_tracepoint(probe: Probe, view: KernelView) -> ProbeChoice:
    reasons = []
    for alt in probe.alternatives:
        exists, why = view.tracepoint(alt.name)
        if exists:
            return ProbeChoice(probe, name=alt.name)
        if exists is None:
            return ProbeChoice(probe, reason=why)
        if not alt.in_version(view.version):
            why = f"tracepoint {alt.name}: not in kernel {view.release} (only {alt.version_text()})"
        reasons.append(why)
    return ProbeChoice(probe, reason="; ".join(reasons))


def _choose_static(probe: Probe, view: KernelView) -> ProbeChoice:
    syms = view.kallsyms()
    if syms is None:
        return ProbeChoice(probe, reason="cannot read /proc/kallsyms")
    reasons = []
    for alt in probe.alternatives:
        entries = [e for e in syms.get(alt.name, []) if e[1] in DATA_TYPES]
        if not entries:
            if view.hibernation_built() is False:
                reasons.append(NO_HIBERNATION)
            elif not alt.in_version(view.version):
                reasons.append(f"{alt.name}: not in kernel {view.release} (only {alt.version_text()})")
            else:
                reasons.append(f"{alt.name}: no such kernel static in this kernel")
            continue
        if len(entries) > 1:
            reasons.append(f"{alt.name}: ambiguous ({len(entries)} statics of that name)")
            continue
        addr = entries[0][0]
        if addr == 0:
            return ProbeChoice(probe, name=alt.name, reason=f"{alt.name}: address hidden in "
                               "/proc/kallsyms (not root, or kernel.kptr_restrict)")
        return ProbeChoice(probe, name=alt.name, address=addr)
    return ProbeChoice(probe, reason="; ".join(reasons))


def resolve_probe(probe: Probe, view: KernelView) -> ProbeChoice:
    if probe.kind == "kprobe":
        return _choose_function(probe, view)
    if probe.kind == "tracepoint":
        return _choose_tracepoint(probe, view)
    return _choose_static(probe, view)


#: why a per_thread measurement is left out with the light freezer probes
PER_THREAD_OFF = ("per-thread sweep hooks off (--freezer-probes light, the default: a hook on "
                  "every thread in every sweep costs the freeze it measures; --freezer-probes "
                  "sweep adds them)")


def resolve(catalogue: Catalogue, view: KernelView, areas: list[str] | None = None,
            real_hibernation: bool = False, per_thread: bool = True) -> list[Resolution]:
    """One Resolution per selected measurement, in catalogue order.

    ``real_hibernation``: the cycle may restore an image (a real hibernation), so a
    measurement that reads the return of a function in the catalogue's
    ``pending_across_copy`` cannot be made: its return probe would be pending at the atomic
    copy, and the restored kernel never returns through it. Its reason says so.
    ``per_thread`` False: the measurements marked per_thread are left out (PER_THREAD_OFF)."""
    view.narrow({a.name for m in catalogue.measurements for p in m.probes
                 for a in p.alternatives} | {"swsusp_save", "hibernate", TRAMPOLINE_SYMBOL})
    cache: dict[int, ProbeChoice] = {}
    out = []
    for m in catalogue.select(areas):
        res = Resolution(m)
        across = catalogue.returns_across_copy(m) if real_hibernation else []
        for probe in m.probes:
            key = id(probe)
            if key not in cache:
                cache[key] = resolve_probe(probe, view)
            choice = cache[key]
            if m.per_thread and not per_thread:
                choice = ProbeChoice(probe, reason=PER_THREAD_OFF)
            elif probe.kind == "kprobe" and probe.ret and {a.name for a in probe.alternatives} & set(across):
                choice = ProbeChoice(probe, reason=(
                    f"left out where a real hibernation may run (--trigger hibernate; none by "
                    f"default): its return probe on {'/'.join(across)}() is never attached "
                    f"there ({catalogue.pending_why})"))
            res.choices.append(choice)
        out.append(res)
    return out
