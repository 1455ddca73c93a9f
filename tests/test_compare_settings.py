"""Settings and machine facts are not kernel findings (issue 17): in `snapprof compare` a
difference of /sys/power/image_size, MemTotal, free memory before the cycle or the
(de)compression threads is listed apart, as a setting that differs (the comparison is less
controlled), never among the real changes — in the text, the HTML and the JSON.

UNIT-TEST FIXTURES ONLY: the captures below are written with CaptureWriter from chosen
numbers to exercise the selection; they are not measurements. The real 6.1 and 6.12
captures are used last, as recorded and pooled.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from snapprof import cli
from snapprof import metrics as registry
from snapprof.analysis.compare import compare, group_captures, load_captures
from snapprof.analysis.compare_summary import (forest_rows, is_setting, real_changes,
                                               settings_that_differ)
from snapprof.capture import CaptureWriter, Run
from snapprof.report.compare_html import render_html
from snapprof.report.compare_text import render_json, render_text

MS = 1_000_000
MIB = 2**20
DATA = Path(__file__).parent / "data"


def make_capture(path, release: str, n: int = 8, freeze_user: float = 30.0,
                 image_size: int = 800 * MIB, mem_total: int = 2_000_000, mem_free_shift: int = 0,
                 threads: int = 3):
    """n complete runs: freeze_user_ms varies around ``freeze_user``; the settings are one
    value each (image_size, mem_total, threads); mem_free varies run to run, the same values
    on every capture but for ``mem_free_shift``."""
    with CaptureWriter(path) as w:
        w.set_meta({"kernel_release": release, "machine": "x86_64", "trigger": "snapshot"})
        w.set_probes([("freeze_processes", "freezer", "freeze_processes", True, None)])
        for i in range(n):
            base = (i + 1) * 100_000 * MS
            run = Run(trigger="snapshot", status="complete", started_ns=base,
                      ended_ns=base + 500 * MS)
            wobble = (i * 7 % n) - n / 2  # the same spread on every capture, in another order
            run.metric("freeze_user_ms", freeze_user + wobble * 0.2, "ms", "probe")
            run.metric("image_size_setting_bytes", image_size, "bytes", "sysfs")
            run.metric("mem_total_kb", mem_total, "kB", "sysfs")
            run.metric("mem_free_kb", 1_600_000 + 1_000 * wobble + mem_free_shift, "kB", "sysfs")
            run.metric("compress_threads", threads, "count", "kernel-log")
            w.add_run(run)
    return path


def _names(frame) -> set[str]:
    return set(frame["name"]) if len(frame) else set()


@pytest.fixture(scope="module")
def caps(tmp_path_factory):
    d = tmp_path_factory.mktemp("settings")
    return {
        "base": make_capture(d / "base.snap", "6.1.0-fixture"),
        # a real regression, a smaller image_size, MemTotal and free memory as in the baseline
        "cand": make_capture(d / "cand.snap", "6.12.0-fixture", freeze_user=45.0,
                             image_size=700 * MIB),
        # everything as the baseline but free memory, clearly lower in every run, and threads
        "free": make_capture(d / "free.snap", "6.12.0-fixture", mem_free_shift=-200_000,
                             threads=1),
        "few_a": make_capture(d / "few_a.snap", "6.1.0-fixture", n=3),
        "few_b": make_capture(d / "few_b.snap", "6.12.0-fixture", n=3, mem_total=2_100_000),
    }


def _cmp(*paths, labels=None):
    return compare(group_captures(load_captures([str(p) for p in paths]), labels))


def test_the_registry_marks_settings_and_machine_facts():
    settings = {m.name for m in registry.REGISTRY.values() if m.setting}
    assert {"image_size_setting_bytes", "reserved_size_setting_bytes", "mem_total_kb",
            "mem_free_kb", "compress_threads", "decompress_threads"} <= settings
    for name in settings:  # a setting has no good direction
        assert registry.get(name).lower_is_better is None, name
    for m in registry.REGISTRY.values():
        if m.area == "system":
            assert m.setting, m.name  # "System and settings": all of them
    # measured behaviour is no setting, and neither is a phase or an unknown name
    for name in ("image_pages", "copy_window_ms", "freeze_user_ms", "write_mbps", "cycle_ms"):
        assert not registry.get(name).setting
    assert not is_setting("phase", "copy") and not is_setting("metric", "from_a_newer_capture")


def test_a_setting_with_a_real_verdict_is_no_real_change(caps):
    c = _cmp(caps["base"], caps["cand"])
    row = c.row("metric", "image_size_setting_bytes", c.labels[1])
    assert row["verdict"] == "changed (lower)"  # the statistics say so, and stay in the table
    assert _names(real_changes(c)) == {"freeze_user_ms"}
    assert c.row("metric", "freeze_user_ms", c.labels[1])["verdict"] == "worse"
    assert _names(settings_that_differ(c)) == {"image_size_setting_bytes"}
    # equal settings (MemTotal, threads) and free memory spread alike are not listed
    for name in ("mem_total_kb", "compress_threads", "mem_free_kb"):
        assert name not in _names(settings_that_differ(c))


def test_a_varying_machine_fact_differs_only_with_a_real_verdict(caps):
    c = _cmp(caps["base"], caps["free"])
    assert c.row("metric", "mem_free_kb", c.labels[1])["verdict"].startswith("changed")
    found = settings_that_differ(c)
    assert list(found["name"]) == ["compress_threads", "mem_free_kb"]  # largest % first
    assert _names(real_changes(c)) == set()


def test_a_constant_setting_differs_even_with_too_few_runs(caps):
    c = _cmp(caps["few_a"], caps["few_b"])
    row = c.row("metric", "mem_total_kb", c.labels[1])
    assert row["verdict"].startswith("too few runs")
    assert _names(settings_that_differ(c)) == {"mem_total_kb"}
    assert _names(settings_that_differ(c, c.labels[1])) == {"mem_total_kb"}
    assert len(real_changes(c)) == 0


def test_forest_and_table_keep_a_setting_quiet(caps):
    c = _cmp(caps["base"], caps["cand"])
    rows = forest_rows(c, c.labels[1]).set_index("name")
    assert not rows.loc["image_size_setting_bytes", "significant"]
    assert rows.loc["freeze_user_ms", "significant"]
    page = render_html(c, [])
    assert re.search(r'<tr class="quiet" data-name="metric:image_size_setting_bytes"', page)
    assert re.search(r'<tr class="real" data-name="metric:freeze_user_ms"', page)


def test_text_lists_settings_apart_from_the_real_changes(caps):
    c = _cmp(caps["base"], caps["cand"])
    text = render_text(c, [], brief=True)
    lines = text.splitlines()
    start = lines.index("summary:")
    head = next(i for i, line in enumerate(lines) if "that differ" in line)
    assert head > start
    assert lines[head].strip() == (f"{c.labels[1]} vs {c.baseline}: 1 setting that differs (not "
                                   "kernel findings; they make the comparison less controlled):")
    changes = [line for line in lines[start:head] if line.startswith("    ")]
    assert len(changes) == 1 and "(freeze_user_ms)" in changes[0]
    settings = [line for line in lines[head + 1:] if line.startswith("    ")]
    assert len(settings) == 1
    assert settings[0].strip() == (f"/sys/power/image_size (image_size_setting_bytes), "
                                   f"{c.labels[1]} vs {c.baseline}: 800.0 MiB -> 700.0 MiB, "
                                   "-100.0 MiB (-12.5%)")
    assert "1 real change among" in text


def test_json_has_settings_that_differ_beside_real_changes(caps):
    c = _cmp(caps["base"], caps["cand"])
    data = json.loads(render_json(c, []))
    assert [r["name"] for r in data["real_changes"]] == ["freeze_user_ms"]
    assert [r["name"] for r in data["settings_that_differ"]] == ["image_size_setting_bytes"]
    s = data["settings_that_differ"][0]
    assert s["verdict"] == "changed (lower)" and s["sentence"].endswith("-100.0 MiB (-12.5%)")
    # still one of the differences, as every compared figure is
    assert "image_size_setting_bytes" in {r["name"] for r in data["differences"]}


def test_html_lists_settings_apart_from_the_real_changes(caps):
    c = _cmp(caps["base"], caps["cand"])
    page = render_html(c, [])
    items = re.findall(r'<li class="change-\w+" data-name="([^"]+)"', page)
    assert items == ["metric:freeze_user_ms"]
    settings = re.search(r'<p class="settings" id="settings-1">(.*?)</p>', page, re.S)
    assert settings and "1 setting that differs" in settings.group(1)
    assert re.findall(r'<span class="setting" data-name="([^"]+)"', page) == [
        "metric:image_size_setting_bytes"]
    assert "800.0 MiB → 700.0 MiB" in settings.group(1)
    # no settings paragraph where none differs
    same = _cmp(caps["base"], caps["base"], labels=["a", "b"])
    assert 'class="settings"' not in render_html(same, [])


OLD, NEW = DATA / "bookworm-6.1-snapshot.snap", DATA / "trixie-6.12-snapshot.snap"


@pytest.mark.skipif(not (OLD.exists() and NEW.exists()), reason=f"needs the real captures in {DATA}")
def test_real_6_1_vs_6_12_image_size_and_memtotal_are_settings(tmp_path, monkeypatch, capsys):
    """The lab captures as recorded (3 runs a side: no verdict) and pooled twice (6 a side):
    image_size and MemTotal differ a little between the two kernels; they are settings."""
    paths = [shutil.copyfile(src, tmp_path / f"{tag}{i}.snap")
             for src, tag in ((OLD, "old"), (NEW, "new")) for i in (1, 2)]
    as_recorded = _cmp(paths[0], paths[2])
    assert _names(settings_that_differ(as_recorded)) == {"image_size_setting_bytes", "mem_total_kb"}
    assert len(real_changes(as_recorded)) == 0
    pooled = _cmp(*paths)
    found = settings_that_differ(pooled)
    assert {"image_size_setting_bytes", "mem_total_kb"} <= _names(found)
    assert all(v.startswith("changed") for v in found["verdict"])  # real verdicts, kept apart
    assert not _names(found) & _names(real_changes(pooled))
    assert all(not registry.get(n).setting for n in real_changes(pooled).query("kind == 'metric'")["name"])
    monkeypatch.setattr(cli, "COMMANDS", ["compare"])
    assert cli.main(["compare", *map(str, paths), "--brief"]) == 0
    out = capsys.readouterr().out
    assert "settings that differ (not kernel findings" in out
