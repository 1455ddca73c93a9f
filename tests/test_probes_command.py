"""`snapprof probes` on fake kernel trees and on this host (which cannot kprobe or hibernate)."""

from __future__ import annotations

import argparse
import json

import pytest

from probes_fakes import fake_kernel
from snapprof import cli
from snapprof.commands import probes
from snapprof.errors import SnapprofError


def run_probes(capsys, *argv):
    parser = argparse.ArgumentParser(prog="snapprof")
    probes.register(parser.add_subparsers())
    args = parser.parse_args(["probes", *argv])
    rc = args.func(args)
    return rc, capsys.readouterr().out


def test_registered_in_cli():
    assert "probes" in cli.COMMANDS


def test_fake_612_everything_resolves(tmp_path, capsys):
    root = fake_kernel(tmp_path, "6.12")
    (root / "sys/power").mkdir(parents=True, exist_ok=True)
    (root / "sys/power/state").write_text("freeze mem disk\n")
    (root / "dev").mkdir()
    (root / "dev/snapshot").write_text("")
    # the light freezer probes (the default) leave out the per-thread sweep hooks, and say so
    rc, out = run_probes(capsys, "--root", str(root), "--json")
    assert rc == 0
    light = {m["name"]: m for m in json.loads(out)["measurements"]}
    assert [n for n, m in light.items() if not m["available"]] == ["freezer_sweep"]
    assert "per-thread sweep hooks off" in light["freezer_sweep"]["reason"]
    rc, out = run_probes(capsys, "--root", str(root), "--json", "--freezer-probes", "sweep")
    assert rc == 0
    rep = json.loads(out)
    assert rep["kernel_release"] == "6.12.117+deb13-amd64"
    ms = {m["name"]: m for m in rep["measurements"]}
    assert all(m["available"] for m in ms.values()), [m for m in ms.values() if not m["available"]]
    assert ms["save_image_compressed"]["target"] == "save_compressed_image"
    checks = {c["check"]: c for c in rep["checks"]}
    assert checks["hibernation"]["ok"] and checks["snapshot_device"]["ok"]
    assert checks["kprobes"]["ok"] and checks["tracefs"]["ok"]
    assert not checks["kernel_headers"]["ok"]  # the fake tree has no /lib/modules
    # nor BTF: the probes will compile <linux/sched.h>, and the check says why
    assert not checks["task_layout"]["ok"]
    assert checks["task_layout"]["detail"].startswith("<linux/sched.h> compiled: no kernel BTF")
    assert rep["summary"]["available"] == rep["summary"]["measurements"] == len(ms)


def test_fake_61_text_names_what_is_missing_and_why(tmp_path, capsys):
    root = fake_kernel(tmp_path, "6.1", drop=("count_data_pages",), tracepoints=["power/suspend_resume"])
    rc, out = run_probes(capsys, "--root", str(root), "--missing")
    assert rc == 0
    assert "nr_zero_pages: not in kernel 6.1.0-50-amd64 (only 6.6 and later)" in out
    assert "count_data_pages: no symbol in this kernel (inlined or absent)" in out
    assert "tracepoint power:device_pm_callback_start absent in this kernel" in out
    assert "freeze_user" not in out  # --missing hides what is available
    assert "/sys/power/state" in out  # the fake tree has no power management: said so


def test_area_filter_and_bad_area(tmp_path, capsys):
    root = fake_kernel(tmp_path, "6.1")
    rc, out = run_probes(capsys, "--root", str(root), "--area", "devices", "--json")
    areas = {m["area"] for m in json.loads(out)["measurements"]}
    assert areas == {"devices", "freezer"}  # freezer: the cycle boundaries are always there
    with pytest.raises(SnapprofError, match="unknown area"):
        run_probes(capsys, "--root", str(root), "--area", "disk")


def test_this_host_reports_reasons(capsys):
    """Whatever this machine is, every measurement is either possible or has a reason."""
    rc, out = run_probes(capsys, "--json")
    rep = json.loads(out)
    assert rc == 0
    for m in rep["measurements"]:
        assert m["available"] or m["reason"], m
    if rep["blockers"]:
        assert rep["summary"]["attachable"] == 0
        assert not any(m["ready"] for m in rep["measurements"])


def test_text_never_sends_the_trees_control_characters_raw(tmp_path, capsys):
    """The release (and the paths made of it) come from the kernel or a --root tree: an ESC
    or BEL in them is shown, not obeyed."""
    root = fake_kernel(tmp_path, "6.12")
    (root / "proc/sys/kernel/osrelease").write_text("6.12.0\x1b]0;owned\x07-evil\n")
    rc, out = run_probes(capsys, "--root", str(root))
    assert rc == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "6.12.0\\x1b]0;owned\\x07-evil" in out  # in the title and in the checks' paths
