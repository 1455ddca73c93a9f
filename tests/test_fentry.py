"""The freezer's hooks: light by default (nothing once per thread in a sweep); the per-thread
sweep hooks on request, with fentry/fexit: when the recorder asks for them, how the loader
falls back to kprobes, and that the BPF source has a twin for every hook it replaces."""

from __future__ import annotations

import os
import re
import sys
import types

import pytest

from probes_fakes import fake_kernel
from snapprof.errors import SnapprofError
from snapprof.record import catalogue as cat
from snapprof.record import loader
from snapprof.record.probeset import ProbeSet
from snapprof.record.resolve import KernelView

FENTRY = ["try_to_freeze_tasks", "freeze_task", "__refrigerator"]


def _kernel(tmp_path, btf=True, trampolines=True, **kw):
    extra = [("bpf_trampoline_link_prog", "T")] if trampolines else []
    root = fake_kernel(tmp_path, "6.12", extra_syms=extra, **kw)
    if btf:
        (root / "sys/kernel/btf").mkdir(parents=True, exist_ok=True)
        (root / "sys/kernel/btf/vmlinux").write_bytes(b"\x9f\xeb\x01\x00")
    return root


def _ps(root, machine="x86_64", freezer_probes="sweep", **kw):
    return ProbeSet(view=KernelView(root=str(root), euid=0, bcc=True, machine=machine),
                    freezer_probes=freezer_probes, **kw)


def test_light_freezer_probes_hook_nothing_once_per_thread(tmp_path):
    """The default: no hook on freeze_task() (every thread, every sweep); the freezing time,
    sweeps, requests and latency from a few calls a stage; freeze_*_tasks (which need the
    tasks frozen in place) left out with the reason, and no fentry planned."""
    ps = ProbeSet(view=KernelView(root=str(_kernel(tmp_path)), euid=0, bcc=True, machine="x86_64"))
    assert ps.freezer_probes == "light"
    hooks = ps.attach_hooks()
    targets = {t for _k, t, _h, _m in hooks}
    assert "freeze_task" not in targets
    assert {"signal_wake_up_state", "wake_up_state", "usleep_range_state", "_printk",
            "__refrigerator", "try_to_freeze_tasks"} <= targets
    assert ("kretprobe", "_printk", "leave___printk", 0) in hooks  # the start line's return
    assert ps.fentry_plan(hooks) == ([], None)
    status = {name: (att, why) for name, _a, _t, att, why in ps.status()}
    assert "per-thread sweep hooks off" in status["freezer_sweep"][1]
    for name in ("freezer_passes", "freezer_sweeps", "freezer_wakeups", "freeze_latency"):
        assert status[name][1] is None or "not attached yet" in status[name][1], (name, status[name])
    sweep = _ps(_kernel(tmp_path))
    assert ("kretprobe", "freeze_task", "leave__freeze_task", 0) in sweep.attach_hooks()


def test_the_catalogue_lists_the_freezer_hooks_with_their_macros():
    c = cat.load()
    assert list(c.fentry_functions) == FENTRY
    assert c.fentry_define("freeze_task") == "SNAPPROF_FENTRY_freeze_task"


def test_every_fentry_function_has_twins_of_its_kprobe_handlers():
    """Each catalogue fentry function has, under its own #ifdef, a KFUNC_PROBE where its
    kprobe has an entry handler and a KRETFUNC_PROBE where it has a return handler."""
    c = cat.load()
    src = "".join(p.read_text() for p in c.source_files())
    blocks = dict(re.findall(r"#ifdef (SNAPPROF_FENTRY_\w+)\n(.*?)#endif", src, re.S))
    probes = {a.name: p for m in c.measurements for p in m.probes for a in p.alternatives}
    for fn in c.fentry_functions:
        block = blocks.get(c.fentry_define(fn))
        assert block is not None, fn
        p = probes[fn]
        assert (f"KFUNC_PROBE({fn}," in block) == p.entry, fn
        assert (f"KRETFUNC_PROBE({fn}," in block) == p.ret, fn
        assert (f"int enter__{fn}(" in src) == p.entry
        assert (f"int leave__{fn}(" in src) == p.ret
    # nothing else is compiled under a fentry macro
    assert set(blocks) == {c.fentry_define(f) for f in c.fentry_functions}


def test_fentry_is_planned_where_the_kernel_has_btf_and_trampolines(tmp_path):
    ps = _ps(_kernel(tmp_path))
    use, why = ps.fentry_plan(ps.attach_hooks())
    assert use == FENTRY and why is None


@pytest.mark.parametrize("kw, machine, reason", [
    ({"btf": False}, "x86_64", "kernel without BTF (/sys/kernel/btf/vmlinux absent)"),
    ({"trampolines": False}, "x86_64", "kernel without BPF trampolines (no bpf_trampoline_link_prog)"),
    ({}, "aarch64", "no BPF trampolines in bcc on aarch64"),
])
def test_kprobes_with_the_reason_where_fentry_cannot_be_had(tmp_path, kw, machine, reason):
    ps = _ps(_kernel(tmp_path, **kw), machine=machine)
    assert ps.fentry_plan(ps.attach_hooks()) == ([], reason)
    required = _ps(_kernel(tmp_path, **kw), machine=machine, freezer_probes="fentry")
    with pytest.raises(SnapprofError, match=re.escape(f"--freezer-probes fentry: {reason}")):
        required.fentry_plan(required.attach_hooks())


def test_a_notrace_function_keeps_its_kprobe_and_says_so(tmp_path):
    ps = _ps(_kernel(tmp_path, notrace=("__refrigerator",)))
    use, why = ps.fentry_plan(ps.attach_hooks())
    assert use == ["try_to_freeze_tasks", "freeze_task"]
    assert why == "__refrigerator: not ftrace-traceable (fentry needs ftrace)"


def test_kprobes_on_request_and_only_for_hooked_functions(tmp_path):
    ps = _ps(_kernel(tmp_path), freezer_probes="kprobe")
    assert ps.fentry_plan(ps.attach_hooks()) == ([], "kprobes chosen (--freezer-probes kprobe)")
    # without the freezer area only the always-on freeze_processes span is hooked: no fentry function
    shrink = ProbeSet(areas=["shrink"], view=KernelView(root=str(_kernel(tmp_path)), euid=0, bcc=True,
                                                        machine="x86_64"))
    assert shrink.fentry_plan(shrink.attach_hooks()) == ([], None)
    with pytest.raises(SnapprofError, match="unknown freezer probe method 'bogus'"):
        _ps(_kernel(tmp_path), freezer_probes="bogus")


def test_methods_text_names_each_hook_kind():
    ps = ProbeSet.__new__(ProbeSet)
    ps.methods = {"try_to_freeze_tasks": "fentry/fexit", "freeze_task": "fentry/fexit",
                  "__refrigerator": "kprobe"}
    assert ps.methods_text() == ("fentry/fexit: try_to_freeze_tasks, freeze_task; kprobe: "
                                 "__refrigerator; kprobes/kretprobes for every other function")
    ps.methods = {}
    assert ps.methods_text() == "kprobes/kretprobes for every other function"


# -- the loader child's choice, with a stand-in bcc ----------------------------------------
class _FakeBPF:
    """Stands for bcc.BPF: with a SNAPPROF_FENTRY_ macro it attaches kfunc programs at load
    (a pipe fd each, like bcc's raw tracepoint fds), and fails after opening one when told."""

    fail_fentry = False
    opened: list[int] = []

    def __init__(self, text, cflags):
        self.kfunc_entry_fds, self.kfunc_exit_fds = {}, {}
        self.kprobe_fds, self.tracepoint_fds = {}, {}
        self.cflags = cflags
        for flag in cflags:
            if flag.startswith("-DSNAPPROF_FENTRY_"):
                r, w = os.pipe()
                os.close(w)
                _FakeBPF.opened.append(r)
                self.kfunc_entry_fds[b"kfunc__" + flag[18:].encode()] = r
                if _FakeBPF.fail_fentry:
                    raise Exception("Failed to load BPF program b'kfunc__freeze_task': Invalid argument")

    def cleanup(self):
        pass


@pytest.fixture
def fake_bcc_module():
    _FakeBPF.opened = []
    _FakeBPF.fail_fentry = False
    return types.SimpleNamespace(BPF=_FakeBPF)


def _closed(fd):
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_loader_compiles_the_fentry_twins_when_asked(fake_bcc_module):
    req = {"source": "", "cflags": ["-DX=1"],
           "fentry": {"targets": ["freeze_task"], "defines": ["SNAPPROF_FENTRY_freeze_task"]}}
    bpf, used, why = loader._compile_fentry_or_plain(fake_bcc_module, req)
    assert used == ["freeze_task"] and why is None
    assert bpf.cflags == ["-DX=1", "-DSNAPPROF_FENTRY_freeze_task"]
    plain, used, why = loader._compile_fentry_or_plain(fake_bcc_module, dict(req, fentry={}))
    assert used == [] and why is None and plain.cflags == ["-DX=1"]


def test_a_failed_fentry_load_falls_back_to_kprobes_and_leaves_nothing_attached(fake_bcc_module):
    _FakeBPF.fail_fentry = True
    req = {"source": "", "cflags": [],
           "fentry": {"targets": ["freeze_task"], "defines": ["SNAPPROF_FENTRY_freeze_task"]}}
    bpf, used, why = loader._compile_fentry_or_plain(fake_bcc_module, req)
    assert used == [] and bpf.cflags == []
    assert why == ("fentry/fexit failed, kprobes used: BPF compile failed: Failed to load BPF "
                   "program b'kfunc__freeze_task': Invalid argument")
    assert all(_closed(fd) for fd in _FakeBPF.opened)  # the failed attempt's trampoline is gone
    required = dict(req, fentry=dict(req["fentry"], required=True))
    with pytest.raises(SnapprofError, match=r"^--freezer-probes fentry: BPF compile failed"):
        loader._compile_fentry_or_plain(fake_bcc_module, required)


def test_loader_skips_the_kprobes_its_fentry_twins_replace(fake_bcc_module, monkeypatch):
    attached = []
    monkeypatch.setattr(loader, "_attach_one", lambda bpf, kind, target, handler, m:
                        attached.append((kind, target)) or None)
    monkeypatch.setattr(loader, "_compile", lambda bcc, text, cflags: _FakeBPF(text, cflags))
    monkeypatch.setattr(loader, "drop_compiler_cache", lambda *a: None)
    monkeypatch.setitem(sys.modules, "bcc", fake_bcc_module)
    hooks = [("kprobe", "freeze_task", "enter__freeze_task", 0),
             ("kretprobe", "freeze_task", "leave__freeze_task", 0),
             ("kprobe", "freeze_processes", "enter__freeze_processes", 0)]
    req = {"source": "", "cflags": [], "hooks": hooks, "maps": [],
           "fentry": {"targets": ["freeze_task"], "defines": ["SNAPPROF_FENTRY_freeze_task"]}}
    reply, fds = loader._compile_and_attach(req)
    assert attached == [("kprobe", "freeze_processes")]
    assert reply["fentry_used"] == ["freeze_task"] and reply["fentry_error"] is None
    assert all(reply["attach"][f"{k}|{t}|{h}"] is None for k, t, h, _ in hooks)
    assert len(reply["links"]) == 1 and fds == _FakeBPF.opened  # the trampoline's link is handed over
    for fd in fds:
        os.close(fd)


def test_the_probe_table_shows_whether_fentry_can_be_used(tmp_path):
    from snapprof.commands import probes as cmd

    root = _kernel(tmp_path, btf=False)
    rows = {c: (ok, d) for c, ok, d in cmd._checks(KernelView(root=str(root), euid=0, bcc=True), str(root))}
    assert rows["fentry"] == (False, "kernel without BTF (/sys/kernel/btf/vmlinux absent): the "
                                     "per-thread sweep hooks (--freezer-probes sweep) use kprobes")
