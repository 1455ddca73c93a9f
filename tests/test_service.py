"""snapprof service: the systemd unit it writes (a system service outside user.slice running
`snapprof record --trigger none --rotate DIR`), and one-line refusals (a machine that
cannot hibernate, bad limits). systemctl is not called here: the unit goes to a folder of
the test's (the lab has no systemd guest yet)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from snapprof.cli import main


def test_the_unit_runs_the_recorder_outside_user_slice(capsys, tmp_path):
    assert main(["service", "unit", "--dir", str(tmp_path / "caps"), "--rotate-mb", "32",
                 "--keep", "4"]) == 0
    unit = capsys.readouterr().out
    assert "Slice=system.slice" in unit and "WantedBy=multi-user.target" in unit
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = exec_line.removeprefix("ExecStart=").split()
    assert argv[0] == sys.executable
    assert argv[1:] == ["-m", "snapprof", "record", "--trigger", "none", "--rotate",
                        str(tmp_path / "caps"), "--rotate-mb", "32", "--rotate-days", "7",
                        "--keep", "4"]
    # the command line the unit runs parses
    env = dict(os.environ, PYTHONPATH=next(line.split("=", 2)[2] for line in unit.splitlines()
                                           if line.startswith("Environment=PYTHONPATH=")))
    p = subprocess.run([*argv, "--help"], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and "--rotate" in p.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="install checks root first")
def test_install_on_a_machine_that_cannot_hibernate_says_why(capsys, tmp_path):
    from snapprof.errors import SnapprofError
    from snapprof.record import sysinfo

    try:
        sysinfo.check_can_record("hibernate")
        pytest.skip("this machine can hibernate")
    except SnapprofError:
        pass
    units = tmp_path / "units"
    units.mkdir()
    args = ["service", "install", "--unit-dir", str(units), "--dir", str(tmp_path / "caps")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this machine cannot hibernate now" in err and "--force" in err
    assert list(units.iterdir()) == []
    assert main([*args, "--force"]) == 0
    out, err = capsys.readouterr()
    assert "warning: this machine cannot hibernate now" in err
    assert (units / "snapprof.service").read_text().count("--trigger none") == 1
    assert main(["service", "uninstall", "--unit-dir", str(units)]) == 0
    assert list(units.iterdir()) == []


def test_bad_limits_are_one_line(capsys, tmp_path):
    assert main(["service", "install", "--unit-dir", str(tmp_path), "--keep", "0"]) == 2
    err = capsys.readouterr().err
    assert "--rotate-mb and --keep must be at least 1" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_status_never_prints_a_file_name_raw(capsys, tmp_path):
    (tmp_path / "snapprof-\x1b[31m.snap").write_bytes(b"")
    assert main(["service", "status", "--dir", str(tmp_path), "--unit-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "not installed" in out and "1 capture(s)" in out
