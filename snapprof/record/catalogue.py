"""The probe catalogue (probes/catalogue.json): what snapprof measures, and with which hooks.

Standard library only. The catalogue is data: for each measurement its area, the probes it
needs (kernel functions with alternatives across kernel versions, tracepoints, kernel
statics), what each probe reads, and the metrics it yields. This module loads and checks
it; snapprof/record/resolve.py resolves it against the running kernel.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from snapprof import metrics as metric_registry
from snapprof.errors import SnapprofError
from snapprof.paths import probes_dir

AREAS = ("freezer", "shrink", "copy", "devices", "io", "phases")
PROBE_KINDS = ("kprobe", "tracepoint", "static")


@dataclass(frozen=True)
class Alternative:
    """One kernel name a probe can use; since/until (major, minor), until exclusive."""

    name: str
    since: tuple[int, int] | None = None
    until: tuple[int, int] | None = None

    def in_version(self, version: tuple[int, int] | None) -> bool:
        if version is None:
            return True
        if self.since and version < self.since:
            return False
        if self.until and version >= self.until:
            return False
        return True

    def version_text(self) -> str:
        if self.since and self.until:
            return f"{_fmt(self.since)} to before {_fmt(self.until)}"
        if self.since:
            return f"{_fmt(self.since)} and later"
        if self.until:
            return f"before {_fmt(self.until)}"
        return "all versions"


@dataclass(frozen=True)
class Probe:
    kind: str  # kprobe, tracepoint, static
    alternatives: tuple[Alternative, ...]
    entry: bool = False  # kprobe: attach enter__<function>
    ret: bool = False  # kprobe: attach leave__<function>
    maxactive: int = 0
    reads: dict = field(default_factory=dict, compare=False, hash=False)

    def label(self) -> str:
        return "|".join(a.name for a in self.alternatives)


@dataclass(frozen=True)
class Measurement:
    name: str
    area: str
    description: str
    probes: tuple[Probe, ...]
    metrics: tuple[str, ...]
    also_areas: tuple[str, ...] = ()
    rows: tuple[str, ...] = ()
    always: bool = False  # attached whatever areas are selected (cycle boundaries)
    starts_cycle: bool = False
    ends_cycle: bool = False
    #: hooks that run once per thread in every freezer sweep: attached only when asked
    #: (--freezer-probes sweep|fentry|kprobe), since they cost the freeze they measure
    per_thread: bool = False

    @property
    def areas(self) -> tuple[str, ...]:
        return (self.area, *self.also_areas)


@dataclass(frozen=True)
class Catalogue:
    path: Path
    files: tuple[str, ...]
    measurements: tuple[Measurement, ...]
    #: functions no return probe may be pending on at a real hibernation's atomic copy, and why
    pending_across_copy: tuple[str, ...] = ()
    pending_why: str = ""
    #: functions whose handlers have fentry/fexit twins, compiled with -D<fentry_define_prefix><fn>
    fentry_functions: tuple[str, ...] = ()
    fentry_define_prefix: str = ""

    def fentry_define(self, function: str) -> str:
        """The C macro that compiles `function`'s fentry/fexit handlers."""
        return self.fentry_define_prefix + function

    def returns_across_copy(self, m: Measurement) -> list[str]:
        """The functions of ``pending_across_copy`` that measurement ``m`` reads the return of."""
        return [a.name for p in m.probes if p.kind == "kprobe" and p.ret
                for a in p.alternatives if a.name in self.pending_across_copy]

    def select(self, areas: list[str] | tuple[str, ...] | None) -> list[Measurement]:
        """Measurements in any of `areas` (all when None), plus those marked always."""
        if areas is None:
            return list(self.measurements)
        unknown = sorted(set(areas) - set(AREAS))
        if unknown:
            raise SnapprofError(f"unknown area {', '.join(unknown)} (areas: {', '.join(AREAS)})")
        return [m for m in self.measurements if m.always or set(m.areas) & set(areas)]

    def get(self, name: str) -> Measurement:
        for m in self.measurements:
            if m.name == name:
                return m
        raise KeyError(name)

    def source_files(self) -> list[Path]:
        return [self.path.parent / f for f in self.files]


def _fmt(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def parse_version(text: str | None) -> tuple[int, int] | None:
    """'6.12' or a kernel release like '6.12.117+deb13-amd64' -> (6, 12); None if unparsable."""
    if not text:
        return None
    parts = []
    for piece in str(text).split(".")[:2]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            return None
        parts.append(int(digits))
    return (parts[0], parts[1]) if len(parts) == 2 else None


def default_path() -> Path:
    return probes_dir() / "catalogue.json"


def load(path: str | os.PathLike | None = None) -> Catalogue:
    """Load and check a catalogue; any problem is a one-line SnapprofError."""
    p = Path(path) if path is not None else default_path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SnapprofError(f"probe catalogue {p}: no such file") from None
    except OSError as exc:
        raise SnapprofError(f"probe catalogue {p}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SnapprofError(f"probe catalogue {p}: bad JSON at line {exc.lineno}: {exc.msg}") from None
    try:
        return _build(p, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapprofError(f"probe catalogue {p}: {exc}") from None


def _version(value, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    v = parse_version(value)
    if v is None:
        raise ValueError(f"{where}: bad kernel version {value!r}")
    return v


def _build(path: Path, data: dict) -> Catalogue:
    if not isinstance(data, dict) or data.get("format") != 1:
        raise ValueError("unknown catalogue format (expected \"format\": 1)")
    files = tuple(data.get("files") or ())
    for f in files:
        if not (path.parent / f).is_file():
            raise ValueError(f"BPF source {f} listed in 'files' is missing")
    seen: set[str] = set()
    out = []
    for i, m in enumerate(data["measurements"]):
        name = m["name"]
        where = f"measurement {name!r}"
        if name in seen:
            raise ValueError(f"{where} is defined twice")
        seen.add(name)
        area = m["area"]
        also = tuple(m.get("also_areas") or ())
        for a in (area, *also):
            if a not in AREAS:
                raise ValueError(f"{where}: unknown area {a!r}")
        probes = []
        for pr in m["probes"]:
            kind = pr["kind"]
            if kind not in PROBE_KINDS:
                raise ValueError(f"{where}: unknown probe kind {kind!r}")
            key = {"kprobe": "function", "tracepoint": "tracepoint", "static": "symbol"}[kind]
            alts = tuple(
                Alternative(a[key], _version(a.get("since"), where), _version(a.get("until"), where))
                for a in pr["alternatives"])
            if not alts:
                raise ValueError(f"{where}: a probe without alternatives")
            if kind == "tracepoint":
                for a in alts:
                    if a.name.count(":") != 1:
                        raise ValueError(f"{where}: tracepoint {a.name!r} is not 'system:event'")
            reads = dict(pr.get("reads") or {})
            entry = kind == "kprobe" and "entry" in reads
            ret = kind == "kprobe" and "return" in reads
            if kind == "kprobe" and not (entry or ret):
                raise ValueError(f"{where}: kprobe {alts[0].name} reads neither entry nor return")
            probes.append(Probe(kind, alts, entry, ret, int(pr.get("maxactive", 0)), reads))
        if not probes:
            raise ValueError(f"{where}: no probes")
        metrics = tuple(m.get("metrics") or ())
        for metric in metrics:
            if metric not in metric_registry.REGISTRY:
                raise ValueError(f"{where}: metric {metric!r} is not in snapprof/metrics.py")
        out.append(Measurement(
            name=name, area=area, description=m.get("description", ""), probes=tuple(probes),
            metrics=metrics, also_areas=also, rows=tuple(m.get("rows") or ()),
            always=bool(m.get("always")), starts_cycle=bool(m.get("starts_cycle")),
            ends_cycle=bool(m.get("ends_cycle")), per_thread=bool(m.get("per_thread"))))
    if not out:
        raise ValueError("no measurements")
    pending = data.get("pending_across_copy") or {}
    funcs = tuple(pending.get("functions") or ())
    if not all(isinstance(f, str) and f for f in funcs):
        raise ValueError("pending_across_copy: functions must be function names")
    if funcs and not pending.get("why"):
        raise ValueError("pending_across_copy: says no why")
    fentry = data.get("fentry") or {}
    ffuncs = tuple(fentry.get("functions") or ())
    if not all(isinstance(f, str) and f for f in ffuncs):
        raise ValueError("fentry: functions must be function names")
    prefix = str(fentry.get("define_prefix") or "")
    if ffuncs and not all((prefix + f).isidentifier() for f in ffuncs):
        raise ValueError("fentry: needs a 'define_prefix' (C macro prefix that compiles the fentry "
                         "handlers of each function)")
    return Catalogue(path=path, files=files, measurements=tuple(out),
                     pending_across_copy=funcs, pending_why=str(pending.get("why") or ""),
                     fentry_functions=ffuncs, fentry_define_prefix=prefix)
