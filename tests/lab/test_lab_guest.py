"""The lab itself on both tested suites: `snapprof lab run` boots the suite's own kernel,
shares the tree and an output folder, exits with CMD's status, and stops hung guests.

Two boots per distro: one runs tests/lab/guest_checks.py (every in-guest check, exit 3),
one hangs on purpose to exercise --timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from snapprof.paths import project_root

pytestmark = pytest.mark.lab

DISTROS = ("bookworm", "trixie")
KERNEL_SERIES = {"bookworm": "6.1.", "trixie": "6.12."}


def snapprof_cli(*args, timeout):
    env = dict(os.environ, PYTHONPATH=str(project_root()))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "snapprof", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=project_root())
    proc.elapsed = time.monotonic() - t0
    return proc


@pytest.fixture(scope="module", params=DISTROS)
def checks(request, lab_guest, tmp_path_factory):
    distro = request.param
    img = lab_guest(distro).image  # builds if needed, outside the timed run
    out = tmp_path_factory.mktemp(f"checks-{distro}")
    proc = snapprof_cli("lab", "run", "--distro", distro, "--timeout", "600", "-o", str(out), "--",
                        "python3", "tests/lab/guest_checks.py", "/output/checks.json", "3", timeout=700)
    print(f"\n{distro}: lab run of the checks job took {proc.elapsed:.1f} s; {proc.stderr.strip()}")
    doc = json.loads((out / "checks.json").read_text()) if (out / "checks.json").exists() else None
    return {"distro": distro, "image": img, "out": out, "proc": proc, "doc": doc}


def test_exit_status_and_output_come_back(checks):
    proc = checks["proc"]
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "guest checks written\n"  # CMD's output, streamed, nothing else
    assert checks["doc"] is not None  # a file CMD wrote to /output arrived on the host
    assert "exit 3" in proc.stderr and "Traceback" not in proc.stderr
    console = (checks["out"] / "console.log").read_text(errors="replace")
    assert "SNAPPROF_EXIT=3" in console and "sysrq: Power Off" in console  # clean power-off


def test_the_guest_runs_the_distro_kernel(checks):
    doc, img = checks["doc"], checks["image"]
    assert doc["uname_r"] == img.kernel_release
    assert doc["uname_r"].startswith(KERNEL_SERIES[checks["distro"]])
    assert doc["uid"] == 0


def test_hibernation_interfaces(checks):
    doc = checks["doc"]
    assert doc["dev_snapshot"] is True
    assert "disk" in doc["power_state"].split()
    assert "platform" in doc["power_disk"] or "shutdown" in doc["power_disk"]


def test_mounts_and_environment(checks):
    doc = checks["doc"]
    m = doc["mounts"]
    assert m["/proc"] == "proc" and m["/sys"] == "sysfs" and m["/dev"] == "devtmpfs"
    assert m["/sys/kernel/debug"] == "debugfs" and m["/sys/kernel/tracing"] == "tracefs"
    assert m["/project"] == "9p" and m["/output"] == "9p"
    assert doc["project_writable"] is False  # the tree is shared read-only
    assert doc["cwd"] == "/project"
    assert doc["env"] == {"PYTHONPATH": "/project", "PYTHONDONTWRITEBYTECODE": "1", "SNAPPROF_OUTPUT": "/output"}
    assert doc["snapprof_importable_from"] == "/project/snapprof/__init__.py"


def test_bcc_kprobe_on_freeze_processes(checks):
    b = checks["doc"]["bcc"]
    assert "import_error" not in b and "attach_error" not in b, b
    assert b["has_freeze_processes"] is True
    assert b["open_kprobes"] == 1
    print(f"{checks['distro']}: bcc {b['version']} compiled a program in {b['compile_s']} s")


@pytest.mark.parametrize("distro", DISTROS)
def test_timeout_stops_a_hung_command(distro, lab_guest, tmp_path):
    lab_guest(distro)
    # 90 s: a boot takes ~25 s on an idle 2-core host, over 60 s when other guests compete
    proc = snapprof_cli("lab", "run", "--distro", distro, "--timeout", "90", "-o", str(tmp_path), "--",
                        "sh", "-c", "echo started; sleep 3600", timeout=240)
    assert proc.returncode == 124, proc.stderr
    assert proc.stdout == "started\n"  # it was CMD that hung, not the boot
    assert "did not finish within 90 s; QEMU was killed" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert 90 <= proc.elapsed < 150
    assert "SNAPPROF_EXIT" not in (tmp_path / "console.log").read_text(errors="replace")
