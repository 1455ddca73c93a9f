"""The lab itself on both tested suites: `snapprof lab run` boots the suite's own kernel,
shares the tree and an output folder, exits with CMD's status, and stops hung guests.

Two boots per distro: one runs tests/lab/guest_checks.py (every in-guest check, a
/dev/snapshot cycle, the outbox, exit 3), one hangs on purpose to exercise --timeout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import KERNEL_VERSIONS, LAB_DISTROS, lab_id

from snapprof.paths import project_root

pytestmark = pytest.mark.lab

DISTROS = LAB_DISTROS
KERNEL_SERIES = {k: ".".join(map(str, v)) + "." for k, v in KERNEL_VERSIONS.items()}


def snapprof_cli(*args, timeout):
    env = dict(os.environ, PYTHONPATH=str(project_root()))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "snapprof", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=project_root())
    proc.elapsed = time.monotonic() - t0
    return proc


@pytest.fixture(scope="module", params=DISTROS, ids=lab_id)
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
    assert proc.stdout == "guest checks written\nsnapshot cycle done\n"  # CMD's output, nothing else
    assert checks["doc"] is not None  # a file CMD wrote to /output arrived on the host
    assert "exit 3" in proc.stderr and "Traceback" not in proc.stderr
    console = (checks["out"] / "console.log").read_text(errors="replace")
    assert "SNAPPROF_EXIT=3" in console and "sysrq: Power Off" in console  # clean power-off


def test_outbox_brings_files_home_after_a_snapshot_cycle(checks):
    after = json.loads((checks["out"] / "after-cycle.json").read_text())
    assert after["in_suspend"] == 1  # the image was made: devices went through freeze/thaw
    assert float(after["uptime"].split()[0]) > 0


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


def test_timeout_stops_a_hung_command(checks, tmp_path):
    if checks["distro"] != DISTROS[0]:
        # the host's timeout, not the guest kernel's: one guest shows it (80 s a boot in CI)
        pytest.skip(f"the lab runner's timeout is checked on {DISTROS[0]} only")
    # The limit leaves room for a boot as slow as the checks run's (busy hosts boot slowly)
    # plus 30 s, so that CMD is what runs into it.
    boot_s = float(re.search(r"booted to CMD in ([0-9.]+) s", checks["proc"].stderr).group(1))
    limit = max(60, round(2 * boot_s + 30))
    proc = snapprof_cli("lab", "run", "--distro", checks["distro"], "--timeout", str(limit), "-o", str(tmp_path),
                        "--", "sh", "-c", "echo started; sleep 3600", timeout=limit + 120)
    assert proc.returncode == 124, proc.stderr
    assert proc.stdout == "started\n"  # it was CMD that hung, not the boot
    assert f"did not finish within {limit} s; QEMU was killed" in proc.stderr
    assert "its console's last line: '" in proc.stderr  # where the guest stopped
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert limit <= proc.elapsed < limit + 60
    assert "SNAPPROF_EXIT" not in (tmp_path / "console.log").read_text(errors="replace")
