"""The recorder's reading of what memory in use is made of (snapprof/record/composition.py),
on a /proc tree written here and on this host's own /proc."""

from __future__ import annotations

from snapprof.metrics import COMPOSITION_KINDS
from snapprof.record import composition

MEMINFO = """\
MemTotal:        2018908 kB
MemFree:         1500000 kB
MemAvailable:    1700000 kB
Buffers:            1000 kB
Cached:           200000 kB
SwapCached:            0 kB
Active(file):      90000 kB
Inactive(file):    60000 kB
Dirty:               120 kB
AnonPages:        110000 kB
Shmem:             48000 kB
SReclaimable:      20000 kB
SUnreclaim:        30000 kB
KernelStack:        3000 kB
PageTables:         2500 kB
VmallocUsed:       12000 kB
Percpu:             1500 kB
"""


def _proc(tmp_path, pid, name, status_extra, rollup=None, cmdline=b"", kthread=False):
    d = tmp_path / "proc" / str(pid)
    d.mkdir(parents=True)
    (d / "status").write_text(f"Name:\t{name}\nTgid:\t{pid}\n" + ("Kthread:\t1\n" if kthread else "")
                              + status_extra)
    if rollup is not None:
        (d / "smaps_rollup").write_text(rollup)
    (d / "cmdline").write_bytes(cmdline)


ZONEINFO = """\
Node 0, zone      DMA
  pages free     3840
  pagesets
    cpu: 0
              count: 0
              high:  0
Node 0, zone    DMA32
  pages free     470000
  pagesets
    cpu: 0
              count: 20000
              high:  24000
              batch: 63
  vm stats threshold: 24
    cpu: 1
              count: 5600
              high:  24000
"""


def test_kinds_from_meminfo_leave_out_what_the_kernel_does_not_have(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text(MEMINFO)
    (tmp_path / "proc" / "zoneinfo").write_text(ZONEINFO)
    rows = {r[0]: r for r in composition.kinds(str(tmp_path))}
    assert rows["mem_anon_kb"][1:4] == (110000.0, "kB", "sysfs")
    assert rows["mem_file_active_kb"][1] == 90000.0 and rows["mem_file_dirty_kb"][1] == 120.0
    # PageTables only (no SecPageTables before 6.0): summed over the keys it has, said so
    assert rows["mem_page_tables_kb"][1] == 2500.0 and rows["mem_page_tables_kb"][4].endswith("PageTables")
    assert "mem_hugetlb_kb" not in rows  # no Hugetlb line: absent, never 0
    assert "mem_free_kb" not in rows  # before the cycle it comes from sysinfo
    # free pages on the per-CPU lists (not in MemFree): zoneinfo's pagesets, 4 KiB pages
    assert rows["mem_pcp_free_kb"][1] == (20000 + 5600) * 4096 // 1024
    assert rows["mem_pcp_free_kb"][4].startswith("/proc/zoneinfo")
    after = {r[0]: r[1] for r in composition.kinds(str(tmp_path), when="_after")}
    assert after["mem_anon_after_kb"] == 110000.0 and after["mem_free_after_kb"] == 1500000.0
    assert len(after) == len(COMPOSITION_KINDS) - 1 + 1 + 1  # no hugetlb; + dirty, + free
    (tmp_path / "proc" / "zoneinfo").unlink()  # unreadable: absent, never 0
    assert "mem_pcp_free_kb" not in {r[0] for r in composition.kinds(str(tmp_path))}


def test_top_processes_by_anonymous_and_shmem_share(tmp_path):
    _proc(tmp_path, 1, "init", "VmRSS:\t 4000 kB\n",
          "Rss:  4000 kB\nPss_Anon:  1000 kB\nPss_File:  2000 kB\nPss_Shmem:  0 kB\nSwap:  0 kB\n",
          b"/sbin/init\0")
    _proc(tmp_path, 300, "hog", "VmRSS:\t 102500 kB\n",
          "Rss:  102500 kB\nPss_Anon:  102400 kB\nPss_File:  100 kB\nPss_Shmem:  0 kB\nSwap:  0 kB\n",
          b"python3\0-c\0hog\x1b[31m\0")
    # no Pss split (kernel before 5.7): the status Rss* figures, said so
    _proc(tmp_path, 400, "shm", "VmRSS:\t 60000 kB\nRssAnon:\t 1000 kB\nRssFile:\t 500 kB\n"
          "RssShmem:\t 58500 kB\nVmSwap:\t 0 kB\n", "Rss:  60000 kB\n", b"shm-user\0")
    _proc(tmp_path, 2, "kthreadd", "", kthread=True)
    rows = composition.top_processes(str(tmp_path / "proc"), n=2)
    assert [r[0] for r in rows] == [300, 400]
    hog, shm = rows
    assert hog[2:] == ("hog", "python3 -c hog\x1b[31m", 102500, 102400, 0, 100, 0, "smaps_rollup (Pss)")
    assert shm[4:] == (60000, 1000, 58500, 500, 0, "status (Rss)")


def test_before_cycle_on_this_host_says_how_long_it_took():
    rows, procs = composition.before_cycle()
    names = {r[0]: r for r in rows}
    assert "mem_anon_kb" in names and names["mem_anon_kb"][1] > 0
    assert names["composition_scan_ms"][3] == "recorder" and names["composition_scan_ms"][1] > 0
    assert procs and all(len(p) == 10 for p in procs)
    assert procs[0][5] is not None
