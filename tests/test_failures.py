"""Why did hibernation fail: the culprits of a failed freeze read from the kernel's dump and
/proc, kept in the capture (schema 2), explained (hints, kinds, memory), counted (failure
rate with its exact interval), leading the report, and gating compare."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from snapprof.analysis import failures as fa
from snapprof.analysis.frames import load_capture
from snapprof.capture import SCHEMA_VERSION, CaptureWriter, Run
from snapprof.record import culprits as cu

DATA = Path(__file__).parent / "data"

# What Debian's 6.1 printed for a dd blocked on a frozen ext4 (tests/lab/failure_job.py).
DUMP_61 = """\
Freezing user space processes
Freezing of tasks failed after 2.006 seconds (1 tasks refusing to freeze, wq_busy=0):
task:dd              state:D stack:0     pid:312   ppid:300    flags:0x00004002
Call Trace:
 <TASK>
 __schedule+0x34d/0x9e0
 schedule+0x5a/0xd0
 percpu_rwsem_wait+0x104/0x130
 ? percpu_free_rwsem+0x30/0x30
 __percpu_down_read+0x5e/0x80
 mnt_want_write+0x99/0xb0
 path_openat+0xa8a/0x1000
 do_filp_open+0xaf/0x160
 do_sys_openat2+0xaf/0x170
 __x64_sys_openat+0x6a/0xa0
 do_syscall_64+0x58/0xc0
 entry_SYSCALL_64_after_hwframe+0x64/0xce
RIP: 0033:0x7f3c1a2f0f01
RSP: 002b:00007ffd6b1c0a30 EFLAGS: 00000246 ORIG_RAX: 0000000000000101
 </TASK>
OOM killer enabled.
Restarting tasks ... done.
"""
# 6.12 adds tgid and says which freeze failed.
DUMP_612 = DUMP_61.replace("Freezing of tasks failed", "Freezing user space processes failed").replace(
    "pid:312   ppid:300", "pid:312   tgid:312   ppid:300")


def _records(text):
    return [(i, i * 1000, 6, line) for i, line in enumerate(text.splitlines())]


@pytest.mark.parametrize("dump, tgid", [(DUMP_61, None), (DUMP_612, 312)])
def test_the_kernels_dump_names_the_task_and_its_stack(dump, tgid):
    (c,) = cu.from_log(_records(dump))
    assert (c.pid, c.comm, c.state, c.stage, c.tgid) == (312, "dd", "D", "user", tgid)
    # unreliable "? " frames and the register lines are left out; innermost first
    assert c.frames == ["__schedule", "schedule", "percpu_rwsem_wait", "__percpu_down_read",
                        "mnt_want_write", "path_openat", "do_filp_open", "do_sys_openat2",
                        "__x64_sys_openat", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"]
    assert c.stack_source == "kernel log at the failure (sched_show_task)"
    assert cu.freeze_failed(_records(dump))


def test_no_failure_no_culprit():
    ok = "Freezing user space processes\nFreezing user space processes completed (elapsed 0.002 seconds)\n"
    assert cu.from_log(_records(ok)) == [] and not cu.freeze_failed(_records(ok))


def _proc(tmp_path, pid, *, cmdline=b"dd\0if=/dev/zero\0of=/mnt/x\0", state="D (disk sleep)",
          stack="[<0>] percpu_rwsem_wait+0x104/0x130\n[<0>] __percpu_down_read+0x5e/0x80\n",
          wchan="percpu_rwsem_wait"):
    d = tmp_path / str(pid)
    d.mkdir(parents=True)
    (d / "status").write_text(f"Name:\tdd\nState:\t{state}\nTgid:\t{pid}\nVmRSS:\t 1000 kB\n")
    (d / "cmdline").write_bytes(cmdline)
    (d / "stack").write_text(stack)
    (d / "wchan").write_text(wchan)
    return tmp_path


def test_proc_gives_the_command_line_and_a_stack_where_the_log_has_none(tmp_path):
    proc = _proc(tmp_path, 312)
    (c,) = cu.culprits(_records(DUMP_612), [], str(proc))
    assert c.cmdline == "dd if=/dev/zero of=/mnt/x" and c.wchan == "percpu_rwsem_wait"
    assert c.stack_source.startswith("kernel log")  # the log's stack is kept
    # a task the probes saw refusing, with no dump in the log: /proc's stack, said so
    probe_task = (313, 313, "dd", 0, "user", None, 0)
    _proc(tmp_path, 313, wchan="0")
    (d,) = cu.culprits([], [probe_task], str(proc))
    assert d.frames == ["percpu_rwsem_wait", "__percpu_down_read"]
    assert d.stack_source == "/proc/PID/stack after the thaw"
    assert d.wchan is None  # /proc said none: the capture makes none up (the report derives it)
    assert "probes" in d.notes[0]


def test_a_pid_reused_by_another_task_is_not_read(tmp_path):
    proc = _proc(tmp_path, 312)
    (proc / "312" / "status").write_text("Name:\tbash\nState:\tS (sleeping)\nTgid:\t312\n")
    (c,) = cu.culprits(_records(DUMP_61), [], str(proc))
    assert c.cmdline is None and c.comm == "dd"
    assert c.notes == ["pid 312 belongs to another task after the thaw (bash): nothing read from /proc"]


def test_a_task_gone_before_it_could_be_looked_up_says_so(tmp_path):
    (c,) = cu.culprits(_records(DUMP_61), [], str(tmp_path))
    assert c.cmdline is None and c.notes == ["gone from /proc after the thaw: no command line"]
    row = cu.rows([c])[0]
    assert row[0] == "freeze" and row[2] == 312 and row[8].startswith("__schedule\nschedule")
    assert row[10] == "gone from /proc after the thaw: no command line"


def test_memory_users_are_the_largest_by_rss(tmp_path):
    for pid, rss in ((10, 500), (11, 900000), (12, 3000)):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "status").write_text(f"Name:\tp{pid}\nState:\tS (sleeping)\nTgid:\t{pid}\nVmRSS:\t{rss} kB\n"
                                  f"RssAnon:\t{rss} kB\n")
        (d / "cmdline").write_bytes(f"prog{pid}\0--x\0".encode())
    rows = cu.memory_users(str(tmp_path), n=2)
    assert [(r[0], r[2], r[4], r[5]) for r in rows] == [("memory", 11, "p11", "prog11 --x"),
                                                         ("memory", 12, "p12", "prog12 --x")]
    assert rows[0][10] == "rss 900000 kB; rssanon 900000 kB"
    assert cu.allocation_failed([(1, 1, 3, "PM: hibernation: Image allocation is 1234 pages short")], None)
    assert cu.allocation_failed([], "SNAPSHOT_CREATE_IMAGE failed: Cannot allocate memory")
    assert not cu.allocation_failed(_records(DUMP_61), "kernel: Freezing of tasks failed")


@pytest.mark.parametrize("frames, state, signature", [
    (["__schedule", "percpu_rwsem_wait", "__percpu_down_read", "mnt_want_write"], "D", "frozen filesystem"),
    (["__schedule", "request_wait_answer", "fuse_simple_request [fuse]"], "S", "FUSE daemon"),
    (["__schedule", "rpc_wait_bit_killable [sunrpc]", "__rpc_execute [sunrpc]"], "D", "NFS"),
    (["__schedule", "wait_for_response [cifs]", "compound_send_recv [cifs]"], "D", "CIFS/SMB"),
    # met in the lab (6.1): a process started in a 9p share the first cycle had killed
    (["__schedule", "schedule", "p9_client_rpc [9pnet]", "p9_client_getattr_dotl [9pnet]",
      "v9fs_vfs_getattr_dotl [9p]", "vfs_statx"], "D", "9p share"),
    # a mkdir waiting for the directory lock a lookup on a FUSE mount holds (lab, 6.1-7.3)
    (["__schedule", "rwsem_down_write_slowpath", "down_write_nested", "filename_create",
      "do_mkdirat"], "D", "directory lock"),
    (["__schedule", "io_schedule", "folio_wait_bit_common", "filemap_fault"], "D", "block I/O"),
    (["__schedule", "schedule_timeout", "msleep", "mydrv_reset [mydrv]"], "D", "driver wait (mydrv)"),
    (["__schedule", "do_nanosleep", "some_other_path"], "D", "unknown"),
])
def test_hints_from_the_table_of_stack_signatures(frames, state, signature):
    got = fa.classify(frames, state)
    assert got["signature"] == signature
    assert got["hint"]
    if signature == "unknown":
        assert got["hint"].startswith("unknown stack signature")


def test_no_stack_no_hint():
    assert fa.classify([], "D") == {"signature": None, "what": None,
                                    "hint": "no stack recorded: snapprof cannot say where it was stuck"}
    assert fa.top_frames(["__schedule", "schedule", "percpu_rwsem_wait", "x"], 2) == ["percpu_rwsem_wait", "x"]


@pytest.mark.parametrize("k, n, low, high", [(0, 10, 0.0, 0.3085), (5, 10, 0.1871, 0.8129),
                                            (10, 10, 0.6915, 1.0), (1, 3, 0.0084, 0.9057)])
def test_exact_binomial_interval(k, n, low, high):
    lo, hi = fa.clopper_pearson(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def _capture(path, failed=True, culprit=True, memory=False):
    w = CaptureWriter(str(path))
    w.set_meta({"kernel_release": "6.12.117+deb13-amd64", "trigger": "snapshot",
                "pm_freeze_timeout": "2000", "swap_total_kb": "0"})
    w.add_run(Run(trigger="snapshot", status="complete", metrics=[("image_pages", 1000.0, "pages", "device", "x")]))
    if failed and not memory:
        w.add_run(Run(trigger="snapshot", status="failed",
                      error="SNAPSHOT_FREEZE failed: Device or resource busy; kernel: Freezing user space "
                            "processes failed after 2.004 seconds (1 tasks refusing to freeze, wq_busy=0):",
                      kmsg=[r for r in _records(DUMP_612)],
                      culprits=[("freeze", "user", 312, 312, "dd", "dd if=/dev/zero of=/mnt/f\x1b[31m", "D",
                                 "percpu_rwsem_wait",
                                 "__schedule\nschedule\npercpu_rwsem_wait\n__percpu_down_read\nmnt_want_write",
                                 "kernel log at the failure (sched_show_task)", None,
                                 "percpu_rwsem_wait\n__percpu_down_read\nmnt_want_write")] if culprit else []))
    if memory:
        w.add_run(Run(trigger="snapshot", status="failed",
                      error="SNAPSHOT_CREATE_IMAGE failed: Cannot allocate memory",
                      kmsg=[(1, 1, 3, "PM: hibernation: Image allocation is 2345 pages short")],
                      metrics=[("saveable_pages", 400000.0, "pages", "probe", "count_data_pages"),
                               ("mem_available_kb", 300000.0, "kB", "sysfs", "/proc/meminfo"),
                               ("image_size_setting_bytes", 0.0, "bytes", "sysfs", "x")],
                      culprits=[("memory", None, 77, 77, "python3", "python3 -c hog", "S", None, None, None,
                                 "rss 1200000 kB; rssanon 1200000 kB", None)]))
    w.close()
    return path


def test_a_failed_freeze_leads_the_report_with_culprit_stack_and_hint(tmp_path):
    from snapprof.report.html import render_html
    from snapprof.report.model import build_model
    from snapprof.report.text import render_text

    f = load_capture(_capture(tmp_path / "f.snap"))
    (run,) = fa.failed_runs(f)
    assert run["kind"] == "freeze"
    # the kernel's log line, not the error text's copy of it
    assert run["freeze"] == {"stage": "user space", "word": "failed", "tried_ms": 2006, "tasks": 1,
                             "timeout_ms": 2000}
    (c,) = run["culprits"]
    assert c["signature"] == "frozen filesystem" and c["top_frames"][0] == "percpu_rwsem_wait"
    rate = fa.failure_rate(f)
    assert (rate["failed"], rate["runs"], rate["kinds"]) == (1, 2, {"freeze": 1})
    model = build_model(f)
    page = render_html(model)
    assert 0 < page.index('id="failure"') < page.index('id="header"') < page.index('id="headline"')
    assert "fsfreeze -u" in page  # (capture text stays exact in an HTML file; stdout escapes it)
    text = render_text(model)
    first = text.split("\n")[2]
    assert first.startswith("HIBERNATION FAILED in 1 of 2 runs (1 freeze)")
    assert "pid 312 dd [user] state D: dd if=/dev/zero of=/mnt/f\\x1b[31m" in text  # escaped
    assert "frozen filesystem" in text


def test_without_the_kernels_wchan_the_report_says_where_the_stack_waits(tmp_path):
    p = _capture(tmp_path / "w.snap")
    db = sqlite3.connect(p)
    db.execute("UPDATE culprits SET wchan = NULL")
    db.commit()
    db.close()
    (run,) = fa.failed_runs(load_capture(p))
    assert run["culprits"][0]["wchan"] == "percpu_rwsem_wait"  # the first frame past the scheduler's


def test_an_allocation_failure_says_why_and_who_held_the_memory(tmp_path):
    f = load_capture(_capture(tmp_path / "m.snap", memory=True))
    (run,) = fa.failed_runs(f)
    assert run["kind"] == "image allocation"
    mem = run["memory"]
    assert mem["short_pages"] == 2345 and mem["saveable_pages"] == 400000
    assert mem["sentence"] == (
        "The image could not be made: the kernel could not allocate room for a copy of every page "
        "it must save (2,345 pages short). What would help: add swap (the image is written there, "
        "and with swap the kernel can page anonymous memory out to make room); free memory held "
        "by the largest users (python3).")  # image_size is already 0: not offered
    assert run["memory_users"][0]["cmdline"] == "python3 -c hog"


def test_captures_without_failures_or_of_schema_1_have_no_failure_section():
    from snapprof.report.html import render_html
    from snapprof.report.model import build_model

    f = load_capture(DATA / "trixie-6.12-snapshot.snap")
    assert f.culprits.empty and fa.failed_runs(f) == []
    assert fa.failure_rate(f)["failed"] == 0
    assert 'id="failure"' not in render_html(build_model(f))


def test_a_schema_2_capture_reads_without_probe_stacks_or_processes(tmp_path):
    p = _capture(tmp_path / "v2.snap")
    db = sqlite3.connect(p)
    db.executescript("ALTER TABLE culprits DROP COLUMN probe_stack; DROP TABLE processes; "
                     "PRAGMA user_version = 2")
    db.close()
    before = p.read_bytes()
    f = load_capture(p)
    assert list(f.culprits["pid"]) == [312] and f.culprits["probe_stack"].isna().all()
    assert f.processes.empty
    (run,) = fa.failed_runs(f)
    assert run["culprits"][0]["signature"] == "frozen filesystem"
    assert p.read_bytes() == before


def test_schema_3_and_a_bad_culprit_row_is_left_out_counted(tmp_path):
    from snapprof.capture import CaptureReader

    p = _capture(tmp_path / "b.snap")
    db = sqlite3.connect(p)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    db.execute("INSERT INTO culprits(run_id, kind, pid) VALUES (2, 'freeze', 'not a pid')")
    db.commit()
    db.close()
    with CaptureReader(p) as r:
        assert len(r.table("culprits")) == 1
        assert any("culprits rows without an integer in pid" in w for w in r.warnings)


def test_the_stage_of_a_failure_61_words_without_it(tmp_path):
    w = CaptureWriter(str(tmp_path / "s.snap"))
    w.set_meta({"kernel_release": "6.1.0-50-amd64"})
    w.add_run(Run(trigger="snapshot", status="failed", error="kernel: Freezing of tasks failed",
                  kmsg=_records(DUMP_61)))
    w.close()
    (run,) = fa.failed_runs(load_capture(tmp_path / "s.snap"))
    assert run["freeze"]["stage"] == "user space" and run["freeze"]["tried_ms"] == 2006


def test_compare_gates_on_the_failure_rate(tmp_path):
    from snapprof.analysis.compare import check_thresholds, compare, parse_threshold

    base = load_capture(_capture(tmp_path / "a.snap", failed=False))
    cand = load_capture(_capture(tmp_path / "c.snap"))
    cmp = compare({"base": [base], "cand": [cand]})
    assert cmp.failure_rates["base"]["failed"] == 0 and cmp.failure_rates["cand"]["failed"] == 1
    (r,) = check_thresholds(cmp, [parse_threshold("failure_rate>0")])
    assert r.status == "crossed" and r.detail.startswith("1 of 2 cycles failed")
    (r,) = check_thresholds(cmp, [parse_threshold("failure_rate>10%")])
    assert r.status == "not crossed"  # 1 of 2: the interval 1.3..98.7 % is not all above 10 %


def test_compare_shows_each_kernels_failure_rate(tmp_path):
    import json

    from snapprof.analysis.compare import compare
    from snapprof.report.compare_html import render_html
    from snapprof.report.compare_text import render_json, render_text

    cmp = compare({"base": [load_capture(_capture(tmp_path / "a.snap", failed=False))],
                   "cand": [load_capture(_capture(tmp_path / "c.snap"))]})
    text = render_text(cmp)
    assert "failures: base: 0 of 1 cycles failed (0 %, 95 % interval 0.0-97.5 %, exact binomial)" in text
    assert "failures: cand: 1 of 2 cycles failed (50 %, 95 % interval 1.3-98.7 %, exact binomial): 1 freeze" in text
    doc = json.loads(render_json(cmp))
    assert doc["failure_rates"]["cand"]["failed"] == 1 and doc["failure_rates"]["cand"]["kinds"] == {"freeze": 1}
    assert "cand: 1 of 2 cycles failed" in render_html(cmp, [])
