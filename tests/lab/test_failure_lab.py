"""Hibernation failures provoked in the lab and diagnosed by snapprof (tests/lab/failure_job.py,
one guest boot per kernel CI runs): user tasks that refuse to freeze (a writer blocked on a
frozen filesystem; a reader waiting on a FUSE daemon that never answers) and a preallocation that cannot get its memory (no swap, most of RAM in
anonymous memory). Each must be recorded as a failed run that says why, lead the report, and
leave the system as it was: settings restored, the next cycle complete.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KERNEL_VERSIONS, LAB_DISTROS, lab_id

pytestmark = pytest.mark.lab

#: Whether a writer blocked on a frozen filesystem refuses to freeze, per kernel CI runs (lab,
#: 2026-11-30): 6.1 and 6.12 refuse (uninterruptible percpu_rwsem_wait); 7.3 freezes it in
#: place. Where it changed between 6.12 and 7.3 is not bisected.
WRITER_REFUSES = {(6, 1): True, (6, 12): True, (7, 3): False}


@pytest.fixture(scope="module", params=LAB_DISTROS, ids=lab_id)
def job(request, tmp_path_factory):
    from snapprof.lab.qemu import create_disk, run_guest

    sys.path.insert(0, str(Path(__file__).parent))
    from offline import unpack

    distro = request.param
    out = tmp_path_factory.mktemp(f"failure-{distro.replace(':', '_')}")
    disk = create_disk(out / "results.img", "64M")
    fs = create_disk(out / "fs.img", "64M")  # the filesystem the job freezes, made here:
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs.path)], check=True)  # trixie's minbase has no mkfs
    res = run_guest(distro, ["python3", "tests/lab/failure_job.py", "--pack", "/dev/vdb",
                             "--fs-dev", "/dev/vdc", "/tmp/fail"],
                    out, extra_disks=[disk, fs], stream=None, timeout=1800)
    res.check()
    assert res.returncode == 0, res.output[-3000:]
    unpack(str(disk.path), str(out / "fail"))
    doc = json.loads((out / "fail" / "failure_job.json").read_text())
    doc.update(distro=distro, version=KERNEL_VERSIONS[distro], dir=out / "fail")
    return doc


def _frames(job, name):
    from snapprof.analysis.frames import load_capture
    return load_capture(job["dir"] / f"{name}.snap")


def _recovered(step: dict) -> None:
    """The system came back: settings as before, the next cycle complete."""
    assert step["power_after_fail"] == step["power_before"]
    assert step["power_after"] == step["power_before"]
    assert step["next"]["rc"] == 0, step["next"]["stderr"][-2000:]
    assert "1 complete" in step["next"]["stdout"], step["next"]["stdout"]


def test_the_sweep_hooks_count_what_the_light_probes_cannot(job):
    """The refusing cycles record with --freezer-probes sweep: freeze_task() hooked with
    fentry/fexit on every thread of every sweep, which counts the threads of the first sweep
    and every task that had to freeze, those frozen in place included."""
    f = _frames(job, "freeze-fail")
    assert re.search(r"fentry/fexit: [^;]*\bfreeze_task\b", f.meta["probe_methods"]), f.meta["probe_methods"]
    # the trampolines read p->__state and p->pid at the offsets of the kernel's BTF
    assert f.meta["probe_task_layout"].startswith("task_struct from the kernel's BTF"), f.meta
    ends = f.events[(f.events["name"] == "try_to_freeze_tasks") & (f.events["kind"] == "end")]
    swept = [int(m.group(1)) for d in ends["detail"] if (m := re.search(r"swept=(\d+)", d or ""))]
    assert swept and all(n > 20 for n in swept), list(ends["detail"])
    names = set(f.metrics["name"])
    assert "freeze_user_tasks" in names and "freeze_user_woken" in names


def test_a_task_that_refuses_to_freeze_is_named_with_where_it_is_stuck(job):
    from snapprof.analysis.failures import failed_runs, failure_rate
    from snapprof.report.html import render_html
    from snapprof.report.model import build_model

    st = job["steps"]["freeze"]
    assert "error" not in st, st.get("error")
    assert st["writer_blocked"], "the writer never blocked on the frozen filesystem"
    if not WRITER_REFUSES[job["version"]]:
        # 7.3 sleeps a writer on a frozen filesystem freezably: the freezer freezes it in
        # place and hibernation goes on (seen in the lab; 6.1 and 6.12 refuse)
        assert st["failed"]["rc"] == 0, st["failed"]["stderr"][-2000:]
        f = _frames(job, "freeze-fail")
        assert list(f.runs["status"]) == ["complete"] and f.culprits.empty
        dd = f.tasks[f.tasks["pid"] == st["writer_pid"]]
        assert list(dd["comm"]) == ["dd"] and list(dd["frozen"]) == [1]
        assert st["writer_state_after_fail"] == "D"  # thawed, blocked again on the filesystem
        _recovered(st)
        return
    # a failed cycle makes `snapprof record` exit 1, after committing it
    assert st["failed"]["rc"] == 1, st["failed"]["stderr"][-2000:]
    assert "1 runs recorded, 0 complete" in st["failed"]["stdout"] or "1 run recorded, 0 complete" in st["failed"]["stdout"]
    f = _frames(job, "freeze-fail")
    assert list(f.runs["status"]) == ["failed"]
    assert "refusing to freeze" in f.runs["error"].iloc[0]
    assert f.meta.get("pm_freeze_timeout") == "2000"  # --freeze-timeout, for the recording only

    (run,) = failed_runs(f)
    assert run["kind"] == "freeze"
    assert run["freeze"]["stage"] == "user space" and run["freeze"]["timeout_ms"] == 2000
    assert 2000 <= run["freeze"]["tried_ms"] < 4000
    mine = [c for c in run["culprits"] if c["pid"] == st["writer_pid"]]
    assert mine, run["culprits"]
    c = mine[0]
    assert c["cmdline"] == st["writer_cmdline"] and c["comm"] == "dd"
    assert c["state"] == "D" and c["stage"] == "user"
    assert c["stack_source"].startswith("kernel log at the failure")
    # the kernel's own stack: the writer waits for the frozen superblock's write lock
    assert re.search(r"percpu_rwsem_wait|__percpu_down_read", "\n".join(c["frames"])), c["frames"]
    assert c["signature"] == "frozen filesystem" and "fsfreeze -u" in c["hint"]
    _probe_stack_agrees(f, st["writer_pid"], r"percpu_rwsem_wait|__percpu_down_read")

    rate = failure_rate(f)
    assert (rate["failed"], rate["runs"], rate["kinds"]) == (1, 1, {"freeze": 1})

    page = render_html(build_model(f))
    assert 0 < page.index('id="failure"') < page.index('id="headline"')
    assert st["writer_cmdline"] in page and "frozen filesystem" in page
    _recovered(st)
    assert st["writer_rc"] == 0  # thawed, the writer finished


def _probe_stack_agrees(f, pid: int, pattern: str) -> None:
    """With fentry on freeze_task() (every lab kernel), the probes took the refusing task's
    own stack at the last sweep, named from kallsyms: it shows the same wait as the log's."""
    if not re.search(r"fentry/fexit: [^;]*\bfreeze_task\b", f.meta.get("probe_methods", "")):
        pytest.fail(f"freeze_task not hooked by fentry: {f.meta.get('probe_methods')} "
                    f"({f.meta.get('probe_fentry_fallback')})")
    row = f.culprits[f.culprits["pid"] == pid].iloc[0]
    assert isinstance(row["probe_stack"], str) and re.search(pattern, row["probe_stack"]), \
        (row["probe_stack"], row["note"])


#: Whether a task waiting on a FUSE daemon that never answers (fuse_get_req, for the
#: connection's INIT) refuses to freeze, per kernel CI runs (lab, 2026-12-01): 6.1 and 6.12
#: wait killably (refuse); 7.3 waits freezably and freezes it in place. The mkdir waiting
#: for the directory lock that lookup holds refuses on every kernel (an rwsem wait).
FUSE_WAIT_REFUSES = {(6, 1): True, (6, 12): True, (7, 3): False}


def test_tasks_stuck_behind_a_fuse_daemon_are_named_with_hints(job):
    from snapprof.analysis.failures import failed_runs

    st = job["steps"]["fuse"]
    assert "error" not in st, st.get("error")
    assert st["reader_blocked"], "the reader never blocked on the FUSE mount"
    assert "fuse" in st["reader_stack_before"], st["reader_stack_before"]
    assert st["locked_blocked"], "the mkdir never blocked on the directory lock"
    assert st["failed"]["rc"] == 1, (st["failed"]["stdout"][-2000:], st["failed"]["stderr"][-2000:])
    f = _frames(job, "fuse-fail")
    (run,) = failed_runs(f)
    assert run["kind"] == "freeze" and run["freeze"]["stage"] == "user space"
    by_pid = {c["pid"]: c for c in run["culprits"]}
    # the mkdir: an rwsem wait, never freezable
    c = by_pid.get(st["locked_pid"])
    assert c, run["culprits"]
    assert c["cmdline"] == st["locked_cmdline"] and c["comm"] == "mkdir" and c["state"] == "D"
    assert c["signature"] == "directory lock", c["frames"]
    _probe_stack_agrees(f, st["locked_pid"], r"filename_create|start_creating|down_write")
    # the stat, waiting on the daemon (inside the lookup that holds the directory)
    if FUSE_WAIT_REFUSES[job["version"]]:
        c = by_pid.get(st["reader_pid"])
        assert c, run["culprits"]
        assert c["cmdline"] == st["reader_cmdline"] and c["comm"] == "stat" and c["state"] == "D"
        assert c["signature"] == "FUSE daemon" and "fusermount -u" in c["hint"]
        _probe_stack_agrees(f, st["reader_pid"], r"fuse_")
    else:
        assert st["reader_pid"] not in by_pid
        t = f.tasks[f.tasks["pid"] == st["reader_pid"]]
        assert list(t["frozen"]) == [1], f.tasks.to_dict("records")
    _recovered(st)
    # the aborted connection ends both waits with an error, not a hang
    assert st["reader_rc"] not in (0, "timeout") and st["locked_rc"] != "timeout"


def test_an_image_that_cannot_be_allocated_says_why(job):
    from snapprof.analysis.failures import failed_runs, failure_rate

    st = job["steps"]["memory"]
    assert "error" not in st, st.get("error")
    assert st["first_run"] and st["hog_ready"], st
    print(f"{job['distro']}: the hog of {st['hog_mb']} MB was ready in {st['hog_ready_s']:.1f} s")
    assert st["rc"] == 1, st["stderr"]  # exit 1: a cycle failed
    f = _frames(job, "memory-fail")
    assert list(f.runs["status"]) == ["complete", "failed"], f.runs.to_dict("records")
    # the hog was in place before run 2 began (both on CLOCK_BOOTTIME), not only in time
    assert st["hog_ready_boot_ns"] < f.runs["started_ns"].iloc[1], (st, f.runs.to_dict("records"))
    (run,) = failed_runs(f)
    assert run["kind"] == "image allocation", (run["error"], list(f.kmsg["text"])[-40:])
    mem = run["memory"]
    assert mem["sentence"].startswith("The image could not be made")
    assert mem["swap_total_kb"] == 0 and "add swap" in mem["sentence"]
    # the hog is named among the largest memory users, with about the memory it took
    hog = [u for u in run["memory_users"] if u["pid"] == st["hog_pid"]]
    assert hog, run["memory_users"]
    rss_kb = int(re.search(r"rss (\d+) kB", hog[0]["note"]).group(1))
    assert rss_kb >= st["hog_mb"] * 1024 * 0.95
    rate = failure_rate(f)
    assert (rate["failed"], rate["runs"], rate["kinds"]) == (1, 2, {"image allocation": 1})
    _recovered(st)
