"""What the memory in use is made of, read just before a cycle (and the kinds again just
after it): the recorder's side of "what is in the image".

Standard library only, and light: /proc/meminfo once, and /proc/PID/smaps_rollup (or
/proc/PID/status) of each process, nothing kept between cycles but the rows returned.

    kinds(root, when="")      -> metric rows mem_<kind>[_after]_kb (snapprof.metrics.COMPOSITION_KINDS;
                                 pcp_free from /proc/zoneinfo, the rest from /proc/meminfo)
    top_processes(proc, n)    -> rows of the capture's processes table
    before_cycle(root, proc)  -> (metric rows incl. composition_scan_ms, process rows)

A kind whose meminfo keys the kernel does not have (SecPageTables before 6.0, Hugetlb on a
kernel without HugeTLB) is left out, never written as 0 (a kind with several keys is summed
over those it has, with the source naming them). The analysis
(snapprof.analysis.composition) puts the kinds beside the kernel's page counts; what they
do not explain (MemTotal - MemFree - the kinds) is shown as unattributed there.
"""

from __future__ import annotations

import os
import time

from snapprof.metrics import COMPOSITION_KINDS, COMPOSITION_SUBSET

MEMINFO = "/proc/meminfo"
ZONEINFO = "/proc/zoneinfo"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TOP_N = 10
MAX_CMDLINE = 4096
#: smaps_rollup keys (kB): proportional shares (Pss_*), so shared pages count once in a sum
_ROLLUP = {"Rss": "rss_kb", "Pss_Anon": "anon_kb", "Pss_Shmem": "shmem_kb", "Pss_File": "file_kb",
           "Swap": "swap_kb"}
#: /proc/PID/status keys (kB), where smaps_rollup has no Pss_* split (kernels before 5.7)
_STATUS = {"VmRSS": "rss_kb", "RssAnon": "anon_kb", "RssShmem": "shmem_kb", "RssFile": "file_kb",
           "VmSwap": "swap_kb"}
PROCESS_FIELDS = ("rss_kb", "anon_kb", "shmem_kb", "file_kb", "swap_kb")


def _read(path: str, limit: int = 1 << 16) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _kb_fields(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    return out


def meminfo(root: str = "/") -> dict[str, int]:
    text = _read(os.path.join(root, MEMINFO.lstrip("/")))
    return _kb_fields(text) if text else {}


def pcp_free_pages(root: str = "/") -> int | None:
    """Free pages on the per-CPU lists of every zone (/proc/zoneinfo, "count:" under each
    zone's pagesets); None if zoneinfo cannot be read."""
    text = _read(os.path.join(root, ZONEINFO.lstrip("/")), 1 << 22)
    if text is None:
        return None
    total = 0
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "count" and value.strip().isdigit():
            total += int(value)
    return total


def kinds(root: str = "/", when: str = "", mem: dict[str, int] | None = None,
          page_size: int = PAGE_SIZE) -> list[tuple]:
    """Metric rows (name, kB, "kB", "sysfs", source) of each kind of memory in use, and
    free memory for when="_after" (before the cycle it is mem_free_kb, from sysinfo)."""
    mem = meminfo(root) if mem is None else mem
    out = []
    for kind, keys, _label in (*COMPOSITION_KINDS, COMPOSITION_SUBSET):
        have = [k for k in keys if k in mem]  # pcp_free has no meminfo key: below
        if have:
            out.append((f"mem_{kind}{when}_kb", float(sum(mem[k] for k in have)), "kB", "sysfs",
                        f"{MEMINFO} {' + '.join(have)}"))
    pcp = pcp_free_pages(root)
    if pcp is not None:
        out.append((f"mem_pcp_free{when}_kb", float(pcp * page_size // 1024), "kB", "sysfs",
                    f"{ZONEINFO} pagesets count (pages on per-CPU free lists)"))
    if when and "MemFree" in mem:
        out.append((f"mem_free{when}_kb", float(mem["MemFree"]), "kB", "sysfs", f"{MEMINFO} MemFree"))
    return out


def _process(proc: str, pid: str) -> tuple | None:
    base = os.path.join(proc, pid)
    status = _read(os.path.join(base, "status"))
    if not status:
        return None
    fields = {}
    for line in status.splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    if fields.get("Kthread") == "1" or "VmRSS" not in fields:
        return None  # kernel threads have no memory of their own
    rollup = _read(os.path.join(base, "smaps_rollup"))
    got = _kb_fields(rollup) if rollup else {}
    if "Pss_Anon" in got:
        amounts, source = {col: got.get(key) for key, col in _ROLLUP.items()}, "smaps_rollup (Pss)"
    else:
        st = _kb_fields(status)
        amounts, source = {col: st.get(key) for key, col in _STATUS.items()}, "status (Rss)"
    tgid = int(fields["Tgid"]) if fields.get("Tgid", "").isdigit() else None
    return (int(pid), tgid, fields.get("Name"), None, *(amounts[c] for c in PROCESS_FIELDS), source)


def top_processes(proc: str = "/proc", n: int = TOP_N) -> list[tuple]:
    """Rows (pid, tgid, comm, cmdline, rss_kb, anon_kb, shmem_kb, file_kb, swap_kb, source)
    of the n processes with the most anonymous + shmem memory (their share of it: Pss)."""
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return []
    rows = [r for r in (_process(proc, pid) for pid in pids) if r is not None]
    rows.sort(key=lambda r: ((r[5] or 0) + (r[6] or 0), r[4] or 0), reverse=True)
    out = []
    for r in rows[:n]:
        raw = _read(os.path.join(proc, str(r[0]), "cmdline"), MAX_CMDLINE) or ""
        cmd = " ".join(a for a in raw.split("\0") if a) or None
        out.append((r[0], r[1], r[2], cmd, *r[4:]))
    return out


def before_cycle(root: str = "/", proc: str = "/proc", n: int = TOP_N) -> tuple[list[tuple], list[tuple]]:
    """(metric rows, process rows) just before a cycle; the metric rows include how long the
    reading took (composition_scan_ms, the recorder's clock)."""
    t = time.monotonic()
    rows = kinds(root)
    procs = top_processes(proc, n)
    rows.append(("composition_scan_ms", (time.monotonic() - t) * 1000.0, "ms", "recorder",
                 f"{MEMINFO} and every process's smaps_rollup or status"))
    return rows, procs
