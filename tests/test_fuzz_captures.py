"""Fuzz: every command and format on broken and hostile variants of the real captures.

Each case of tests/fuzz_captures.py runs report (html, text, json), compare (text, json,
html) and export (perfetto, csv), in this process (``snapprof.cli.main``, a time limit per
command), and must give:

- no traceback and no internal error; no command longer than LIMIT seconds;
- a one-line error (exit 2) naming the file, or a correct output (HTML that closes, strict
  JSON, CSV whose records match the capture's rows);
- no control character on stdout or stderr (newlines apart) — the terminal streams;
- its input files byte for byte as they were, nothing created or removed beside them, and
  no temporary file left in the output folder.

A few cases also run as real ``python -m snapprof`` processes (exit status, stderr bytes, a
wall-clock limit). ``python tests/fuzz_captures.py`` is not needed: the case count per
class is printed by ``test_classes_and_counts`` (``pytest -s``).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from snapprof.cli import main
from snapprof.termsafe import visible
from fuzz_captures import SEEDS, SMALL, cases

LIMIT = 30  # seconds per command (a real capture takes < 2 s here)
csv.field_size_limit(2**31 - 1)  # the huge-text case has a 200 kB field (valid CSV)
ROOT = Path(__file__).resolve().parent.parent
WORK = Path(tempfile.mkdtemp(prefix="snapprof-fuzz-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
CASES = cases(WORK / "in")
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _release(path: Path) -> str | None:
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'kernel_release'").fetchone()
        finally:
            db.close()
        return row[0] if row else None
    except Exception:  # noqa: BLE001 - a broken file: any baseline will do
        return None


def _baseline(path: Path) -> Path:
    """A sound capture of another kernel release than the case (so default labels differ)."""
    rel = _release(path) if path.is_file() else None
    return next((s for s in SMALL if _release(s) != rel), SMALL[0])


def _matrix(case_path: Path, base: Path, out: Path) -> list[tuple[str, list[str]]]:
    c, b = str(case_path), str(base)
    labels = ["--label", "base", "--label", "case"]
    return [
        ("report html", ["report", c, "-o", str(out / "r.html")]),
        ("report text", ["report", c, "--format", "text"]),
        ("report json", ["report", c, "--format", "json", "-o", "-"]),
        ("compare text", ["compare", b, c]),
        ("compare json", ["compare", b, c, *labels, "--format", "json", "-o", "-"]),
        ("compare html", ["compare", b, c, *labels, "-o", str(out / "c.html")]),
        ("export perfetto", ["export", c, "--format", "perfetto", "-o", str(out / "t.json")]),
        ("export csv", ["export", c, "--format", "csv", "-o", str(out / "csv")]),
    ]


class Timeout(BaseException):
    """Not an Exception: the CLI's last-resort handler must not swallow it."""


def _alarm(signum, frame):
    raise Timeout(f"command ran over {LIMIT} s")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """snapprof.cli.main in this process: (exit status, stdout, stderr), LIMIT s at most."""
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(LIMIT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return rc, out.getvalue(), err.getvalue()


def _fingerprint(paths: list[Path]) -> dict:
    """Bytes of each input and of anything beside it that shares its name (journals)."""
    fp = {}
    for p in paths:
        folder = p.parent
        if not folder.is_dir():
            continue
        for q in folder.iterdir():
            if not q.name.startswith(p.name):
                continue
            st = q.lstat()
            if q.is_file() and not q.is_symlink():
                fp[q.name] = (st.st_mode, hashlib.sha256(q.read_bytes()).hexdigest())
            else:
                fp[q.name] = (st.st_mode, None)
    return fp


def _strict_json(text: str):
    def bad(const):
        raise AssertionError(f"non-strict JSON constant {const}")
    return json.loads(text, parse_constant=bad)


def _check_streams(name: str, rc: int, out: str, err: str, case) -> None:
    assert "Traceback" not in err and "internal error" not in err, f"{name}: {err}"
    assert not CONTROL.search(out), f"{name}: control character on stdout: {CONTROL.findall(out)}"
    assert not CONTROL.search(err), f"{name}: control character on stderr: {err!r}"
    cmd = name.split()[0]
    lines = err.splitlines()
    assert all(line.startswith(f"snapprof {cmd}: ") for line in lines), f"{name}: {err}"
    if rc != 0:
        assert rc == 2, f"{name}: exit {rc}: {err}"
        errors = [line for line in lines if ": error: " in line]
        assert len(errors) == 1 and lines[-1] == errors[0], f"{name}: {err}"


def _check_output(name: str, rc: int, out: str, folder: Path, frames) -> None:
    if rc != 0:
        return
    if name == "report html" or name == "compare html":
        html = (folder / ("r.html" if name.startswith("report") else "c.html")).read_text()
        assert html.rstrip().endswith("</html>")
        assert "<script" not in html.lower(), "script injected into the HTML"
    elif name in ("report json", "compare json"):
        _strict_json(out)
        assert not CONTROL.search(out)
    elif name in ("report text", "compare text"):
        assert out.strip()
    elif name == "export perfetto":
        trace = _strict_json((folder / "t.json").read_text(encoding="utf-8"))
        assert isinstance(trace["traceEvents"], list)
    elif name == "export csv":
        from snapprof.export.csv import tables
        expected = tables(frames)
        for table, frame in expected.items():
            with open(folder / "csv" / f"{table}.csv", newline="", encoding="utf-8") as fh:
                records = list(csv.reader(fh))
            assert records[0] == list(frame.columns), table
            assert len(records) - 1 == len(frame), f"{table}: {len(records) - 1} CSV records " \
                                                   f"for {len(frame)} rows"


def _no_temp_files(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".new"))
            or p.name.startswith(".")]
    assert not left, f"temporary files left: {left}"


@pytest.mark.parametrize("case", CASES, ids=[visible(c.id) for c in CASES])
def test_fuzz_case(case, tmp_path):
    from snapprof.analysis.frames import load_capture

    path = case.paths[0]
    base = _baseline(path)
    before = _fingerprint([*case.paths, base])
    frames = None
    if case.expect != "refused":
        with contextlib.suppress(Exception):
            frames = load_capture(path)
    if case.expect == "loads":
        assert frames is not None, f"{case.id}: refused, expected to load"
    results = {}
    for name, argv in _matrix(path, base, tmp_path):
        rc, out, err = run_cli(argv)
        results[name] = (rc, err)
        _check_streams(name, rc, out, err, case)
        _check_output(name, rc, out, tmp_path, frames)
        _no_temp_files(tmp_path)
        if case.notes.get("hostile") and name == "report text":
            assert rc == 0 and ("\\x" in out or "\\u" in out), \
                f"{name}: hostile text not shown as escapes"
    assert _fingerprint([*case.paths, base]) == before, "an input changed"
    if case.expect == "refused":
        for name, (rc, err) in results.items():
            assert rc == 2, f"{name}: exit {rc}, expected a refusal"
            assert case.match in err, f"{name}: {err!r} lacks {case.match!r}"
            assert visible(path) in err, f"{name}: the error does not name the file: {err!r}"
    elif case.expect == "loads":
        for name in ("report html", "report text", "report json", "export perfetto",
                     "export csv"):
            assert results[name][0] == 0, f"{name}: {results[name][1]}"
        for match in filter(None, (case.match,) if isinstance(case.match, str) else case.match):
            assert match in results["report text"][1], (match, results["report text"][1])
            assert any(match in w for w in frames.warnings), (match, frames.warnings)
        for name in ("compare text", "compare json", "compare html"):
            rc, err = results[name]
            # compare may say there is nothing to compare, in one line; never that the file is bad
            assert rc == 0 or "not a" not in err.split("error:")[-1], f"{name}: {err}"
    if case.notes.get("no_negative_phase"):
        assert not (frames.phases["duration_ms"] < 0).any()
        assert frames.phases["end_ns"].isna().sum() > 0
    if "same_runs_as" in case.notes:  # the transaction in flight is gone, the rest is there
        committed = load_capture(case.notes["same_runs_as"])
        assert frames.runs["run_id"].tolist() == committed.runs["run_id"].tolist()
        assert len(frames.kmsg) == len(committed.kmsg)
    if "meta" in case.notes:
        key, value = case.notes["meta"]
        assert frames.meta.get(key) == value


def test_classes_and_counts():
    """Every class of the issue is represented; prints the count per class."""
    counts = collections.Counter(c.cls for c in CASES)
    print("\nfuzz classes (cases):")
    for cls, n in counts.items():
        print(f"  {cls}: {n}")
    print(f"  total: {sum(counts.values())} cases x 8 command/format runs")
    for cls in ("dropped table", "dropped column", "corrupt pages", "invalid UTF-8",
                "text where numbers belong", "non-numeric meta", "BLOBs",
                "non-finite and huge numbers", "integer overflow in sums", "duplicated keys",
                "non-regular file", "hostile strings", "unknown run status", "orphan rows",
                "negative values", "time running backwards", "schema version", "foreign file",
                "random mutator (SQL)", "random mutator (bytes)", "killed writer (hot journal)"):
        assert counts[cls] > 0, cls


# --------------------------------------------------------------------------- real processes


def snapprof(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "snapprof", *map(str, args)],
                          capture_output=True, env=env, timeout=timeout)


def _case(cls: str, name: str = ""):
    return next(c for c in CASES if c.cls == cls and name in c.name)


def test_process_fifo_is_refused_without_hanging():
    res = snapprof("report", _case("non-regular file", "fifo").paths[0], "--format", "text",
                   timeout=30)
    assert res.returncode == 2
    assert res.stderr.count(b"\n") == 1 and b"is a FIFO" in res.stderr


def test_process_hostile_text_reaches_no_terminal_raw(tmp_path):
    path = tmp_path / "hostile.snap"
    shutil.copyfile(SMALL[0], path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE tasks SET comm = ?", ("x\x1b]0;pwned\x07\x1b[2J\r\x00\x9b\u202e",))
    db.execute("UPDATE meta SET value = ? WHERE key = 'kernel_release'", ("6.1\x1b[31m",))
    db.close()
    for args in (("report", path, "--format", "text"), ("compare", SMALL[1], path)):
        res = snapprof(*args)
        assert res.returncode == 0, res.stderr
        raw = res.stdout + res.stderr
        for byte in (b"\x1b", b"\x07", b"\r", b"\x00", "\x9b".encode(), "\u202e".encode()):
            assert byte not in raw, (args[0], byte)
        assert b"6.1\\x1b[31m" in res.stdout
    res = snapprof("report", path, "--format", "text")
    assert b"x\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\x00\\x9b\\u202e" in res.stdout


def test_process_corrupt_capture_one_line(tmp_path):
    case = _case("dropped table", "runs")
    res = snapprof("export", case.paths[0], "--format", "csv", "-o", tmp_path / "o")
    assert res.returncode == 2
    assert res.stderr.decode().splitlines() == [
        f"snapprof export: error: {case.paths[0]}: not a valid capture: table runs is missing"]
    assert not (tmp_path / "o").exists()


def test_process_compare_refuses_to_overwrite_an_input(tmp_path):
    a, b = tmp_path / "a.snap", tmp_path / "b.snap"
    shutil.copyfile(SEEDS[0], a)
    shutil.copyfile(SEEDS[-1], b)
    link = tmp_path / "link.snap"
    os.link(a, link)
    digest = hashlib.sha256(a.read_bytes()).hexdigest()
    for out in (a, link, tmp_path / "a.snap-journal"):
        res = snapprof("compare", a, b, "-o", out, "--force")
        assert res.returncode == 2 and b"refusing to overwrite" in res.stderr \
            or b"journal" in res.stderr, res.stderr
        assert res.stderr.count(b"\n") == 1
    for cmd in (("report", a, "-o", link, "--force"),
                ("export", a, "--format", "perfetto", "-o", link, "--force")):
        res = snapprof(*cmd)
        assert res.returncode == 2 and b"refusing to overwrite" in res.stderr
    assert hashlib.sha256(a.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.snap", "b.snap", "link.snap"]


def test_process_output_directory_and_fifo_leave_nothing(tmp_path):
    src = tmp_path / "in.snap"
    shutil.copyfile(SMALL[0], src)
    folder = tmp_path / "out"
    folder.mkdir()
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    for cmd in (("report", src, "-o", folder, "--force"),
                ("compare", src, SMALL[1], "-o", folder, "--force"),
                ("export", src, "--format", "perfetto", "-o", folder, "--force"),
                ("report", src, "-o", fifo, "--force", "--format", "text")):
        res = snapprof(*cmd, timeout=30)
        assert res.returncode == 2, res.stderr
        assert res.stderr.count(b"\n") == 1 and b"Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.snap", "out", "out.fifo"]
    assert list(folder.iterdir()) == []
