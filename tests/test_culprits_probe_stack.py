"""The probes' own stack of a task that refused to freeze (fentry on freeze_task(): the
task's stack at the freezer's last sweep), named from kallsyms after the thaw: used where the
kernel log has no dump of the task, kept beside the log's stack as a check where it has."""

from __future__ import annotations

from snapprof.record import culprits
from snapprof.record.culprits import StuckStack

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81001000 t percpu_rwsem_wait
ffffffff81001200 T __percpu_down_read
ffffffff81002000 T ext4_buffered_write_iter
ffffffff81002400 d some_data
ffffffff81003000 T vfs_write
ffffffffc0001000 t fuse_get_req\t[fuse]
ffffffffc0001400 t fuse_simple_request\t[fuse]
"""

FAIL_LOG = [(1, 10, 6, "Freezing user space processes"),
            (2, 20, 3, "Freezing user space processes failed after 2.004 seconds "
                       "(1 tasks refusing to freeze, wq_busy=0):"),
            (3, 21, 6, "task:dd              state:D stack:0     pid:273   tgid:273   ppid:1      flags:0x00004006"),
            (4, 22, 6, "Call Trace:"),
            (5, 23, 6, " <TASK>"),
            (6, 24, 6, " __schedule+0x2f0/0x9a0"),
            (7, 25, 6, " percpu_rwsem_wait+0x10a/0x130"),
            (8, 26, 6, " ext4_buffered_write_iter+0x2f/0x110"),
            (9, 27, 6, " </TASK>")]
# an aborted freeze (a wakeup event) prints no dump
ABORT_LOG = [(1, 10, 6, "Freezing user space processes"),
             (2, 20, 3, "Freezing user space processes aborted after 1.500 seconds")]


def _kallsyms(tmp_path):
    path = tmp_path / "kallsyms"
    path.write_text(KALLSYMS)
    return str(path)


def test_resolve_names_text_addresses_by_the_nearest_symbol_below(tmp_path):
    names = culprits.resolve([0xffffffff8100110a, 0xffffffff81001200, 0xffffffff8100202f,
                              0xffffffffc0001010, 0xffffffff81002500, 0xffffffff80000000],
                             _kallsyms(tmp_path))
    assert names == {0xffffffff8100110a: "percpu_rwsem_wait",
                     0xffffffff81001200: "__percpu_down_read",
                     0xffffffff8100202f: "ext4_buffered_write_iter",
                     0xffffffffc0001010: "fuse_get_req [fuse]",
                     # data symbols are not text: the text symbol below still covers it
                     0xffffffff81002500: "ext4_buffered_write_iter"}
    assert culprits.resolve([0xffffffff81001000], str(tmp_path / "missing")) == {}


def test_hidden_kallsyms_names_nothing(tmp_path):
    path = tmp_path / "kallsyms"  # what a process without the privilege reads
    path.write_text(KALLSYMS.replace("ffffffff8100", "000000000000").replace("ffffffffc000", "000000000000"))
    assert culprits.resolve([0xffffffff81001010], str(path)) == {}


def test_an_aborted_freeze_gets_its_stack_from_the_probes(tmp_path):
    stacks = {273: StuckStack(273, 1480.2, 180, [0xffffffff81001010, 0xffffffff8100202f])}
    tasks = [(273, 273, "dd", 0, "user", None, 0)]
    (c,) = culprits.culprits(ABORT_LOG, tasks, proc=str(tmp_path / "noproc"),
                             probe_stacks=stacks, kallsyms=_kallsyms(tmp_path))
    assert (c.pid, c.comm, c.stage) == (273, "dd", "user")
    assert c.frames == ["percpu_rwsem_wait", "ext4_buffered_write_iter"] == c.probe_frames
    assert c.stack_source == ("probes at the freezer's sweep 180, 1480 ms into the freeze "
                              "(bpf_get_task_stack)")
    row = culprits.rows([c])[0]
    assert row[8] == row[11] == "percpu_rwsem_wait\next4_buffered_write_iter"


def test_the_log_stack_leads_and_the_probe_stack_is_kept_beside_it(tmp_path):
    stacks = {273: StuckStack(273, 1990.0, 240, [0xffffffff8100110a, 0xffffffff8100202f]),
              # stuck a while, then froze: not a culprit
              300: StuckStack(300, 1100.0, 150, [0xffffffff81003000])}
    tasks = [(273, 273, "dd", 0, "user", None, 0), (300, 300, "sh", 0, "user", 5_000_000, 1)]
    (c,) = culprits.culprits(FAIL_LOG, tasks, proc=str(tmp_path / "noproc"),
                             probe_stacks=stacks, kallsyms=_kallsyms(tmp_path))
    assert c.stack_source.startswith("kernel log at the failure")
    assert c.frames == ["__schedule", "percpu_rwsem_wait", "ext4_buffered_write_iter"]
    assert c.probe_frames == ["percpu_rwsem_wait", "ext4_buffered_write_iter"]


def test_a_stack_the_probes_could_not_take_says_so(tmp_path):
    stacks = {273: StuckStack(273, 1200.0, 150, [], error=-14)}
    (c,) = culprits.culprits(FAIL_LOG, [], proc=str(tmp_path / "noproc"), probe_stacks=stacks,
                             kallsyms=_kallsyms(tmp_path))
    assert c.probe_frames == [] and c.stack_source.startswith("kernel log")
    assert any("could not take its stack (bpf_get_task_stack: -14)" in n for n in c.notes)
