"""compare says whether the kernel is the only variable: the userspace each capture was
recorded on (suite, libc, Python, bcc) is compared, and a difference leads the output."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from snapprof.analysis.compare import compare, group_captures, load_captures
from snapprof.report.compare_html import render_html
from snapprof.report.compare_text import render_json, render_text

DATA = Path(__file__).parent / "data"
TRIXIE = DATA / "trixie-6.12-snapshot.snap"
BOOKWORM = DATA / "bookworm-6.1-snapshot.snap"
USERSPACE = {"distro": "Debian GNU/Linux 13 (trixie)", "libc_version": "glibc 2.41",
             "python_version": "3.13.5", "bcc_version": "0.31.0"}


def _copy(src: Path, dst: Path, **meta) -> Path:
    shutil.copyfile(src, dst)
    with sqlite3.connect(dst) as db:
        for k, v in meta.items():
            db.execute("DELETE FROM meta WHERE key = ?", (k,))
            if v is not None:
                db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (k, v))
    return dst


def _cmp(*paths, labels=None):
    return compare(group_captures(load_captures([str(p) for p in paths]), labels))


def test_two_debian_releases_differ_in_kernel_and_userspace():
    cmp = _cmp(BOOKWORM, TRIXIE)
    assert cmp.userspace["status"] == "differs"
    assert cmp.userspace["differs"] == ["suite", "Python", "bcc"]
    text = render_text(cmp, [])
    assert "WARNING: kernel and userspace differ" in text.splitlines()[1]
    assert json.loads(render_json(cmp, []))["userspace"]["status"] == "differs"
    assert "Kernel and userspace differ." in render_html(cmp, [])


def test_one_userspace_two_kernels_is_a_controlled_comparison(tmp_path):
    a = _copy(TRIXIE, tmp_path / "a.snap", **USERSPACE)
    b = _copy(TRIXIE, tmp_path / "b.snap", **USERSPACE, kernel_release="7.3.4+deb13-amd64")
    cmp = _cmp(a, b)
    assert cmp.userspace["status"] == "same"
    assert "the kernel is the only variable" in cmp.userspace["sentence"]
    assert "differ" not in render_text(cmp, []).splitlines()[1]


def test_a_newer_bcc_alone_is_a_userspace_difference(tmp_path):
    a = _copy(TRIXIE, tmp_path / "a.snap", **USERSPACE)
    b = _copy(TRIXIE, tmp_path / "b.snap", **{**USERSPACE, "bcc_version": "0.37.0"})
    cmp = _cmp(a, b, labels=["old", "new"])
    assert cmp.userspace["status"] == "differs" and cmp.userspace["differs"] == ["bcc"]
    assert "new: bcc 0.37.0" in cmp.userspace["sentence"]


def test_captures_that_do_not_say_their_libc_leave_it_unknown(tmp_path):
    a = _copy(TRIXIE, tmp_path / "a.snap", **USERSPACE)
    b = _copy(TRIXIE, tmp_path / "b.snap", **{**USERSPACE, "libc_version": None})
    cmp = _cmp(a, b, labels=["a", "b"])
    assert cmp.userspace["status"] == "unknown" and cmp.userspace["unknown"] == ["libc"]
    assert "not known" in cmp.userspace["sentence"]


def test_pooled_captures_of_different_userspaces_count_as_differing(tmp_path):
    a = _copy(TRIXIE, tmp_path / "a.snap", **USERSPACE)
    b = _copy(TRIXIE, tmp_path / "b.snap", **{**USERSPACE, "python_version": "3.14.0"})
    c = _copy(TRIXIE, tmp_path / "c.snap", **USERSPACE)
    cmp = _cmp(a, b, c, labels=["base", "base", "new"])
    assert cmp.userspace["status"] == "differs" and cmp.userspace["differs"] == ["Python"]


def test_no_verdict_finer_than_the_sleep_time_resolution(tmp_path):
    # copy windows from the kernel's sleep-time report (RTC, whole seconds, in the lab): a
    # shift of some hundred ms between two kernels is no finding, whatever its p
    import sqlite3 as sq

    a = _copy(TRIXIE, tmp_path / "a.snap", **USERSPACE)
    b = _copy(TRIXIE, tmp_path / "b.snap", **USERSPACE)
    for path, base in ((a, 1000), (b, 1400)):
        with sq.connect(path) as db:
            db.execute(f"UPDATE metrics SET value = {base} + run_id WHERE name = 'copy_window_ms'")
    cmp = _cmp(a, a, a, b, b, b, labels=["a", "a", "a", "b", "b", "b"])
    row = cmp.row("metric", "copy_window_ms", "b")
    assert row["ci_low"] > 0  # a shift the statistics alone would call real
    assert row["verdict"] == "no verdict: finer than the resolution"
    assert "resolution ± 1000 ms" in row["note"]
    with sq.connect(b) as db:
        db.execute("UPDATE metrics SET value = 6400 + run_id WHERE name = 'copy_window_ms'")
    big = _cmp(a, a, a, b, b, b, labels=["a", "a", "a", "b", "b", "b"]).row("metric", "copy_window_ms", "b")
    assert big["verdict"] == "worse"  # 5.4 s more is beyond a second
