"""`snapprof record` on bad input: one line on stderr, a non-zero exit, nothing written,
nothing lost; and the recorder stays light (no pandas/matplotlib/jinja2 when recording)."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from snapprof.capture import CaptureReader, CaptureWriter, Run

ROOT = Path(__file__).resolve().parent.parent


def snapprof(*args, user=None):
    cmd = [sys.executable, "-m", "snapprof", "record", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def one_line_error(p, pattern):
    assert p.returncode != 0, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("snapprof record: error: "), lines
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in p.stderr


@pytest.fixture
def open_dir():
    """A directory every user can reach (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="snapprof-rec-", dir="/tmp"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def a_capture(path):
    with CaptureWriter(path) as w:
        w.set_meta({"trigger": "snapshot"})
        w.add_run(Run(trigger="snapshot", status="complete"))
    return path.read_bytes()


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "run.snap"
    before = a_capture(out)
    p = snapprof("-o", str(out))
    one_line_error(p, "exists; use --force")
    assert out.read_bytes() == before  # nothing recorded is lost
    assert len(CaptureReader(out).runs()) == 1


def test_output_directory_missing_or_unwritable(tmp_path, open_dir):
    one_line_error(snapprof("-o", str(tmp_path / "nope" / "run.snap")), "does not exist")
    one_line_error(snapprof("-o", str(tmp_path)), "is a directory")
    ro = open_dir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    p = snapprof("-o", str(ro / "run.snap"), user=65534)
    one_line_error(p, "not writable")


@pytest.mark.skipif(not Path("/usr/bin/setpriv").exists() and not Path("/bin/setpriv").exists(),
                    reason="setpriv (util-linux) missing")
def test_not_root(open_dir):
    p = snapprof("-o", str(open_dir / "run.snap"), user=65534)
    one_line_error(p, "needs root")
    assert not (open_dir / "run.snap").exists()


def test_this_host_cannot_hibernate(tmp_path):
    """This build host's kernel has no hibernation: refused before anything is written."""
    state = Path("/sys/power/state")
    if state.exists() and "disk" in state.read_text().split():
        pytest.skip("this kernel can hibernate")
    out = tmp_path / "run.snap"
    p = snapprof("-o", str(out), "--runs", "2")
    one_line_error(p, "hibernation is not available")
    assert p.returncode == 2
    assert not out.exists()


@pytest.mark.parametrize("args,pattern", [
    (["--trigger", "suspend"], "unknown trigger 'suspend'"),
    (["--trigger", "pm-test"], "needs a level"),
    (["--runs", "0"], "--runs must be at least 1"),
    (["--trigger", "pm-test:freezer", "--save-image", "/tmp/img"], "--save-image needs --trigger snapshot"),
])
def test_bad_options(tmp_path, args, pattern):
    one_line_error(snapprof("-o", str(tmp_path / "r.snap"), *args), pattern)
    assert not (tmp_path / "r.snap").exists()


def test_bad_image_size_is_a_usage_error(tmp_path):
    p = snapprof("-o", str(tmp_path / "r.snap"), "--image-size", "lots")
    assert p.returncode == 2 and "not a size in bytes" in p.stderr


@pytest.mark.parametrize("value,pattern", [("lots", "not a whole number"), ("0", "between 1 and 64"),
                                           ("65", "between 1 and 64")])
def test_bad_callbacks_per_device_is_a_usage_error(tmp_path, value, pattern):
    p = snapprof("-o", str(tmp_path / "r.snap"), "--callbacks-per-device", value)
    assert p.returncode == 2 and pattern in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r.snap").exists()


def test_recorder_imports_stay_light():
    """The record command and everything under snapprof/record/ import neither pandas,
    matplotlib, jinja2 nor numpy (bcc only when probes are attached)."""
    mods = sorted(p.stem for p in (ROOT / "snapprof" / "record").glob("*.py"))
    code = ("import sys, importlib\n"
            "import snapprof.cli as c; c.build_parser()\n"
            f"for m in {mods!r}: importlib.import_module('snapprof.record.' + m)\n"
            "import snapprof.commands.record\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pandas', 'matplotlib', 'jinja2', 'numpy', 'bcc'))\n"
            "print(','.join(bad))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "", p.stdout
    # and `snapprof record --help` as a whole
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "snapprof", "record", "--help"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in p.stderr.splitlines()
                if line.startswith("import time:")}
    assert "snapprof" in imported
    assert not imported & {"pandas", "matplotlib", "jinja2", "numpy"}, imported
