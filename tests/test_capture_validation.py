"""The capture reader's value rules, one by one, on a real lab capture (docs/capture-format.md),
and the output rules: terminal escapes, strict JSON, RFC 4180 CSV."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from snapprof.analysis.frames import load_capture
from snapprof.capture import CaptureReader
from snapprof.errors import SnapprofError
from snapprof.export.csv import render_csv
from snapprof.report.json import strict_dumps
from snapprof.termsafe import json_text, visible, visible_text

SEED = Path(__file__).parent / "data" / "trixie-6.12-trigger-pm-test-freezer.snap"
HIB = Path(__file__).parent / "data" / "bookworm-6.1-trigger-hibernate.snap"


def _variant(tmp_path, *sql, seed=SEED, recreate=None):
    path = tmp_path / "v.snap"
    shutil.copyfile(seed, path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA ignore_check_constraints = ON")
    if recreate:  # the table without its primary key, so keys can repeat
        db.execute(f"CREATE TABLE t2 AS SELECT * FROM {recreate}")
        db.execute(f"DROP TABLE {recreate}")
        db.execute(f"ALTER TABLE t2 RENAME TO {recreate}")
    for stmt in sql:
        db.execute(stmt)
    db.close()
    return path


def test_real_captures_read_without_warnings():
    for path in sorted(SEED.parent.glob("*.snap")):
        assert load_capture(path).warnings == [], path.name


def test_exact_duplicate_metric_kept_once_conflicting_left_out(tmp_path):
    clean = load_capture(SEED).metrics.set_index("name")["value"]
    path = _variant(tmp_path, "INSERT INTO metrics SELECT * FROM metrics",
                    "INSERT INTO metrics SELECT run_id, 'freeze_user_ms', 1.0, 'ms', 'probe', NULL"
                    " FROM runs", recreate="metrics")
    f = load_capture(path)
    got = f.metrics.set_index("name")["value"]
    assert "freeze_user_ms" in clean.index and "freeze_user_ms" not in got.index  # absent, no guess
    # the rest as it was (freeze_user_call_ms is derived from freeze_user_ms: absent with it)
    assert set(clean.index) - set(got.index) == {"freeze_user_ms", "freeze_user_call_ms"}
    assert got.sort_index().equals(clean[got.index].sort_index())
    stored = sqlite3.connect(SEED).execute("SELECT count(*) FROM metrics").fetchone()[0]
    assert f"{stored} metrics (run_id, name) repeated exactly (one kept)" in f.warnings
    assert "2 metrics (run_id, name) with conflicting duplicates (all left out)" in f.warnings


def test_unknown_status_drops_the_run_and_its_rows(tmp_path):
    path = _variant(tmp_path, "UPDATE runs SET status = 'done'")
    f = load_capture(path)
    assert f.runs.empty and f.events.empty and f.metrics.empty
    assert any("1 runs with a status other than complete, failed, incomplete" in w
               for w in f.warnings)


def test_orphan_rows_dropped_and_counted(tmp_path):
    path = _variant(tmp_path, "INSERT INTO kmsg(run_id, seq, ts_us, level, text) "
                              "VALUES (77, 1, 1, 6, 'ghost')")
    f = load_capture(path)
    assert "ghost" not in set(f.kmsg["text"])
    assert any(w.startswith("1 kmsg rows of runs that do not exist") for w in f.warnings)


def test_negative_and_huge_durations_become_absent(tmp_path):
    path = _variant(tmp_path, "UPDATE devices SET duration_ns = -5 WHERE rowid = 1",
                    "UPDATE devices SET duration_ns = 9223372036854775807 WHERE rowid = 2",
                    seed=HIB)
    f = load_capture(path)
    assert len(f.devices) == len(load_capture(HIB).devices)  # rows kept
    assert f.devices["duration_ns"].isna().sum() >= 2
    assert "1 negative devices.duration_ns values (left out)" in f.warnings
    assert "1 devices.duration_ns values over 2**53 ns (104 days; left out)" in f.warnings


def test_text_where_numbers_belong_and_blobs(tmp_path):
    path = _variant(tmp_path, "UPDATE metrics SET value = 'fast' WHERE name = 'freeze_user_ms'",
                    "UPDATE tasks SET comm = x'00ff' WHERE rowid = 1",
                    "UPDATE metrics SET value = 9e999 WHERE name = 'freeze_kernel_ms'")
    f = load_capture(path)
    assert not {"freeze_user_ms", "freeze_kernel_ms"} & set(f.metrics["name"])
    assert f.tasks["comm"].isna().sum() == 1
    assert any(w.startswith("2 metrics rows without a finite number in value") for w in f.warnings)


def test_invalid_utf8_kept_with_escapes(tmp_path):
    path = _variant(tmp_path, "UPDATE kmsg SET text = CAST(x'4f4bff21' AS TEXT) WHERE rowid = 1")
    f = load_capture(path)
    assert "OK\\xff!" in set(f.kmsg["text"])
    assert "1 text values that are not valid UTF-8 (shown with the bad bytes as \\x escapes)" \
        in f.warnings


def test_schema_problems_refused_in_one_line(tmp_path):
    path = _variant(tmp_path, "ALTER TABLE tasks DROP COLUMN comm")
    with pytest.raises(SnapprofError) as exc:
        CaptureReader(path)
    assert str(exc.value) == f"{path}: not a valid capture: table tasks has no column comm"


def test_corrupt_page_refused(tmp_path):
    path = tmp_path / "c.snap"
    data = bytearray(SEED.read_bytes())
    data[4096 * 3:4096 * 3 + 16] = b"\xff" * 16  # a b-tree page header smashed
    path.write_bytes(bytes(data))
    with pytest.raises(SnapprofError, match="corrupt capture|not a readable capture"):
        load_capture(path)


def test_fifo_refused_without_blocking(tmp_path):
    import os
    fifo = tmp_path / "f.snap"
    os.mkfifo(fifo)
    with pytest.raises(SnapprofError, match="is a FIFO"):
        CaptureReader(fifo)


def test_visible():
    assert visible("a\x1b]0;t\x07b\r\n\x9b\u202e") == "a\\x1b]0;t\\x07b\\x0d\\x0a\\x9b\\u202e"
    assert visible_text("x\x1b[2J\ny\tz") == "x\\x1b[2J\ny\tz"
    assert visible("grüße µs –") == "grüße µs –"  # printable text untouched


def test_strict_json():
    text = strict_dumps({"a": float("nan"), "b": [float("inf"), 1.5], "c": "\x1b\x9b\u202e"})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": "\x1b\x9b\u202e"}
    assert "\x1b" not in text and "\x9b" not in text and "\u202e" not in text
    assert json_text('"\x85"') == '"\\u0085"'


def test_csv_quotes_cr_lf_and_quotes():
    frame = pd.DataFrame({"comm": ["a\rb", "c\nd", 'e"f', "g,h", "plain"], "n": [1, 2, 3, 4, 5]})
    text = render_csv(frame)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[1:] == [["a\rb", "1"], ["c\nd", "2"], ['e"f', "3"], ["g,h", "4"], ["plain", "5"]]
    assert text.startswith("comm,n\r\n") and '"a\rb",1\r\n' in text


def test_library_warnings_one_line_and_visible(capsys):
    from snapprof.cli import _show_warning

    _show_warning("report")("Glyph 27 (\x1b) missing from font(s) DejaVu Sans.\nmore",
                            UserWarning, "x.py", 1)
    assert capsys.readouterr().err == ("snapprof report: warning: Glyph 27 (\\x1b) missing "
                                       "from font(s) DejaVu Sans.\\x0amore\n")


def test_html_on_stdout_is_terminal_safe(tmp_path, capsys):
    from snapprof.cli import main

    path = _variant(tmp_path, "UPDATE tasks SET comm = 'x' || char(27) || ']0;t' || char(7)",
                    "UPDATE meta SET value = 'k' || char(27) || '[2J' WHERE key = 'kernel_release'")
    assert main(["report", str(path), "--format", "html", "-o", "-"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "k\\x1b[2J" in out
    assert main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 0
    assert "k\x1b[2J" in (tmp_path / "r.html").read_text(encoding="utf-8")  # a file: exact


def test_compare_names_each_capture_problem(tmp_path, capsys):
    from snapprof.cli import main

    path = _variant(tmp_path, "UPDATE metrics SET value = -1 WHERE rowid < 3")
    other = Path(__file__).parent / "data" / "bookworm-6.1-trigger-pm-test-freezer.snap"
    assert main(["compare", str(other), str(path), "--format", "json", "-o", "-"]) == 0
    out, err = capsys.readouterr()
    groups = json.loads(out)["groups"]
    assert [g["capture_warnings"] for g in groups.values()] == [
        {}, {"v.snap": ["2 negative metrics (in a unit that cannot be negative)"]}]
    assert err == (f"snapprof compare: warning: {path}: 2 negative metrics (in a unit that "
                   "cannot be negative)\n")
    assert main(["compare", str(other), str(path)]) == 0
    assert "  capture problem: v.snap: 2 negative metrics" in capsys.readouterr().out
