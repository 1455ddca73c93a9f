"""`snapprof report` through the command line: formats, output files, bad input."""

import json
import re
import sqlite3

import pytest

import snapprof.cli
from report_fixtures import HOSTILE, write_capture
from snapprof.capture import CaptureWriter


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `snapprof ARGS` in-process; returns (exit code, stdout, stderr).

    Only the report command is registered, so the test does not depend on the others."""
    monkeypatch.setattr(snapprof.cli, "COMMANDS", ["report"])

    def run(*args):
        rc = snapprof.cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    return write_capture(tmp_path_factory.mktemp("cli") / "fx.snap", hostile=True)


def _one_line_error(rc, out, err, pattern):
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(pattern, err), err


def test_missing_file(cli, tmp_path):
    _one_line_error(*cli("report", tmp_path / "nope.snap"), r"^snapprof report: error: .*no such file")


def test_not_a_capture(cli, tmp_path):
    bad = tmp_path / "notes.snap"
    bad.write_text("not sqlite at all\n")
    _one_line_error(*cli("report", bad), r"not a snapprof capture")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.close()
    _one_line_error(*cli("report", other), r"not a snapprof capture")


def test_capture_from_a_newer_snapprof(cli, tmp_path):
    path = tmp_path / "new.snap"
    CaptureWriter(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    _one_line_error(*cli("report", path), r"newer than this snapprof")


def test_html_default_output_and_force(cli, capture, tmp_path):
    cap = tmp_path / "c.snap"
    cap.write_bytes(capture.read_bytes())
    rc, out, err = cli("report", cap)
    assert rc == 0 and out == ""
    html = (tmp_path / "c.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "wrote" in err
    _one_line_error(*cli("report", cap), r"exists; use --force")
    assert cli("report", cap, "--force")[0] == 0


def test_html_is_self_contained_and_escaped(cli, capture, tmp_path):
    out = tmp_path / "r.html"
    assert cli("report", capture, "-o", out)[0] == 0
    html = out.read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # only XML namespace names, no fetchable reference (src=, href=http, @import, url(http)
    urls = set(re.findall(r"https?://[^\s\"')]+", html))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    assert not re.search(r"\ssrc=", html) and "@import" not in html
    assert "Content-Security-Policy" in html


def test_text_format(cli, capture):
    rc, out, err = cli("report", capture, "--format", "text")
    assert rc == 0 and err == ""
    assert "5 (3 complete, 1 failed, 1 incomplete)" in out
    # a figure no run measured says so, with the recorder's reason, and is never 0
    line = next(x for x in out.splitlines() if x.strip().startswith("Zero pages"))
    assert "not measured" in line and "kernel 6.1 does not skip zero pages" in line
    assert re.search(r"\n\s+4\s+failed\s+–\s+Freeze user space\s+freeze_processes returned -16", out)
    assert "(no end recorded)" in out  # the incomplete run
    assert HOSTILE in out  # text output prints names as they are


def test_json_format(cli, capture, tmp_path):
    rc, out, _ = cli("report", capture, "--format", "json")
    assert rc == 0
    model = json.loads(out)
    metrics = {m["name"]: m for m in model["metrics"]}
    assert metrics["zero_pages"]["n"] == 0 and metrics["zero_pages"]["median"] is None
    assert metrics["zero_pages"]["reason"] == "kernel 6.1 does not skip zero pages"
    assert metrics["freeze_user_ms"]["n"] == 3 and metrics["freeze_user_ms"]["method"] == "probe"
    # every figure shown carries its method; every absent one its reason
    assert all(m["method"] for m in metrics.values() if m["n"])
    assert all(m["reason"] for m in metrics.values() if not m["n"])
    assert [r["status"] for r in model["runs"]] == ["complete"] * 3 + ["failed", "incomplete"]
    copy = next(p for p in model["phases"]["summary"] if p["phase"] == "copy")
    assert copy["method"] == "sleep-time" and copy["median"] == pytest.approx(330.0)
    # -o with a .json name picks JSON too
    assert cli("report", capture, "-o", tmp_path / "r.json")[0] == 0
    assert json.loads((tmp_path / "r.json").read_text()) == model


def test_empty_capture(cli, tmp_path):
    cap = write_capture(tmp_path / "empty.snap", n_complete=0, failed=False, incomplete=False)
    rc, out, _ = cli("report", cap, "--format", "text")
    assert rc == 0 and "runs            0 (0 complete" in out
    rc, _, _ = cli("report", cap, "-o", tmp_path / "empty.html")
    assert rc == 0
    assert "This capture holds no runs" in (tmp_path / "empty.html").read_text()
