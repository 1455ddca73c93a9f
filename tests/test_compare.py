"""snapprof compare on synthetic unit-test captures.

UNIT-TEST FIXTURES ONLY: the captures below are written with CaptureWriter from seeded
random numbers to exercise the statistics and the command; they are not measurements.
Real captures (tests/data/*.snap) are compared in test_compare_real.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from snapprof import cli
from snapprof.analysis.compare import compare, group_captures, load_captures, parse_threshold
from snapprof.analysis.frames import load_capture
from snapprof.analysis.summary import metric_summary, phase_summary
from snapprof.capture import CaptureWriter, Run
from snapprof.errors import SnapprofError

MS = 1_000_000
HOSTILE = "<script>alert(1)</script> $x^2$"


def make_capture(path, release="6.1.0-fixture", n=8, seed=0, freeze_user=30.0, image_pages=70_000,
                 prealloc=4000.0, zero_pages=False, failed=0, device_ms=12.0, extra_device=None,
                 spread=0.05):
    """A capture with n complete runs (+ failed ones whose figures are far off)."""
    rng = np.random.default_rng(seed)
    with CaptureWriter(path) as w:
        w.set_meta({"kernel_release": release, "machine": "x86_64", "trigger": "snapshot"})
        w.set_probes([("freeze_processes", "freezer", "freeze_processes", True, None)])
        for i in range(n + failed):
            ok = i < n
            jitter = lambda v: float(v * (1 + rng.normal(0, spread)))  # noqa: E731
            fu, pa = jitter(freeze_user), jitter(prealloc)
            if not ok:  # a failed run with absurd figures: must not enter the statistics
                fu, pa = 1e6, 1e7
            base = (i + 1) * 100_000 * MS
            run = Run(trigger="snapshot", status="complete" if ok else "failed",
                      error=None if ok else "freeze_processes returned -16 (EBUSY)",
                      started_ns=base, ended_ns=base + int((fu + pa + 100) * MS))
            t = base
            for name, dur in (("freeze_processes", fu), ("hibernate_preallocate_memory", pa)):
                run.events.append((t, 0, 1, "snapprof", "begin", name, None, None))
                t += int(dur * MS)
                run.events.append((t, 0, 1, "snapprof", "end", name, 0, None))
                t += MS
            run.metric("freeze_user_ms", fu, "ms", "probe", "freeze_task sweeps")
            run.metric("prealloc_ms", pa, "ms", "probe", "hibernate_preallocate_memory")
            run.metric("image_pages", image_pages + int(rng.integers(0, 50)), "pages", "device")
            run.metric("freeze_user_tasks", 40 + int(rng.integers(0, 3)), "count", "probe")
            if zero_pages:
                run.metric("zero_pages", 3000 + int(rng.integers(0, 100)), "pages", "kernel-log")
            else:
                run.missing("zero_pages", "kernel 6.1 does not count zero pages")
            run.devices.append(("0000:00:02.0", "virtio-pci", None, "freeze", "suspend", t,
                                int(jitter(device_ms) * MS), 0, 7))
            if extra_device:
                run.devices.append((extra_device, "x", None, "freeze", "suspend", t,
                                    int(jitter(3.0) * MS), 0, 7))
            run.tasks.append((100, 100, "systemd-journal", 0, "user", int(jitter(2.0) * MS), 1))
            w.add_run(run)
    return path


@pytest.fixture(scope="module")
def caps(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    return {
        "base": make_capture(d / "base.snap", seed=1, failed=2),
        "same": make_capture(d / "same.snap", release="6.12.0-fixture", seed=2),
        "slow": make_capture(d / "slow.snap", release="6.12.0-fixture", seed=3, freeze_user=45.0,
                             prealloc=3000.0, image_pages=66_000, zero_pages=True, device_ms=20.0,
                             extra_device=HOSTILE),
        "few_a": make_capture(d / "few_a.snap", n=3, seed=4),
        "few_b": make_capture(d / "few_b.snap", release="6.12.0-fixture", n=3, seed=5,
                              freeze_user=60.0),
        "pool": make_capture(d / "pool.snap", seed=6),
        "d": d,
    }


def _cmp(*paths, labels=None):
    return compare(group_captures([load_capture(p) for p in paths], labels))


def _run_cli(monkeypatch, *argv):
    # only this command is registered, so the test does not depend on the others being present
    monkeypatch.setattr(cli, "COMMANDS", ["compare"])
    return cli.main(["compare", *map(str, argv)])


# --------------------------------------------------------------------------- statistics


def test_verdicts_follow_the_metric_direction(caps):
    c = _cmp(caps["base"], caps["slow"])
    assert c.baseline == "6.1.0-fixture"
    fu = c.row("metric", "freeze_user_ms", "6.12.0-fixture")
    assert fu["verdict"] == "worse"  # lower is better, and it went up by ~50 %
    assert fu["ci_low"] > 0 and fu["p"] < 0.05
    assert fu["delta_pct"] == pytest.approx(50, abs=10)
    assert c.row("metric", "prealloc_ms", "6.12.0-fixture")["verdict"] == "better"
    assert c.row("phase", "prealloc", "6.12.0-fixture")["verdict"] == "better"
    assert c.row("metric", "image_pages", "6.12.0-fixture")["verdict"] == "better"
    # a count with no good direction: no better/worse, at most "changed"
    assert c.row("metric", "freeze_user_tasks", "6.12.0-fixture")["verdict"] in (
        "no clear difference", "changed (higher)", "changed (lower)")


def test_same_distribution_gives_no_verdict(caps):
    c = _cmp(caps["base"], caps["same"])
    assert (c.diffs["verdict"] == "no clear difference").all(), c.diffs[["name", "verdict"]]


def test_too_few_runs_is_said_not_guessed(caps):
    c = _cmp(caps["few_a"], caps["few_b"])
    row = c.row("metric", "freeze_user_ms", "6.12.0-fixture")
    assert row["verdict"] == "too few runs (n=3 vs 3)"
    assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert row["delta"] > 0  # the difference of medians is still shown
    s = c.summary[(c.summary["name"] == "freeze_user_ms")]
    assert s["ci_low"].isna().all()  # a median CI needs 6 runs at 95 %


def test_only_complete_runs_count(caps):
    c = _cmp(caps["base"], caps["same"])
    g = c.groups["6.1.0-fixture"]
    assert g.n_runs == 8 and g.excluded == {"failed": 2}
    s = c.summary.set_index(["kind", "name", "label"]).loc[("metric", "freeze_user_ms", "6.1.0-fixture")]
    assert s["n"] == 8 and s["max"] < 100  # the failed runs' 1e6 ms are not in it


def test_not_measured_is_not_comparable_with_its_reason(caps):
    c = _cmp(caps["base"], caps["slow"])
    assert c.row("metric", "zero_pages", "6.12.0-fixture") is None  # never compared with a zero
    nc = c.not_comparable.set_index("name")
    assert "zero_pages" in nc.index
    assert nc.loc["zero_pages", "reason"] == (
        "not measured in 6.1.0-fixture: kernel 6.1 does not count zero pages")


def test_figures_equal_each_captures_own_report(caps):
    """One capture per label: the per-label figures are those `snapprof report` shows."""
    c = _cmp(caps["base"], caps["slow"])
    for path, label in ((caps["base"], "6.1.0-fixture"), (caps["slow"], "6.12.0-fixture")):
        f = load_capture(path)
        own = metric_summary(f)
        phases = phase_summary(f)
        mine = c.summary[c.summary["label"] == label].set_index(["kind", "name"])
        for (kind, name), row in mine.iterrows():
            ref = own.loc[name] if kind == "metric" else phases.loc[name]
            for col in ("n", "median", "p95", "min", "max", "ci_low", "ci_high"):
                a, b = row[col], ref[col]
                assert (math.isnan(a) and math.isnan(b)) or a == b, (label, name, col)
        measured = set(own.index[own["n"] > 0])
        assert measured == set(mine.loc["metric"].index)


def test_setup_differences_are_said(tmp_path, caps):
    other = make_capture(tmp_path / "big.snap", release="6.12.0-fixture", seed=9)
    import sqlite3
    db = sqlite3.connect(other)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('mem_total_kb', '4000000')")
    db.commit()
    db.close()
    base = tmp_path / "base-mem.snap"
    base.write_bytes(caps["base"].read_bytes())
    db = sqlite3.connect(base)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('mem_total_kb', '2000000')")
    db.commit()
    db.close()
    c = _cmp(base, other)
    assert c.setup_notes == ["6.12.0-fixture was recorded with mem_total_kb='4000000', "
                             "6.1.0-fixture with '2000000': a difference may come from the "
                             "setup, not the kernel"]
    assert _cmp(caps["base"], caps["slow"]).setup_notes == []


def test_pooling_same_label(caps):
    c = _cmp(caps["base"], caps["pool"], caps["slow"])
    assert c.labels == ["6.1.0-fixture", "6.12.0-fixture"]
    assert c.groups["6.1.0-fixture"].n_runs == 16
    assert c.row("metric", "freeze_user_ms", "6.12.0-fixture")["n_base"] == 16
    c2 = _cmp(caps["base"], caps["pool"], labels=["old", "new"])
    assert c2.baseline == "old" and c2.row("metric", "prealloc_ms", "new")["n"] == 8


def test_devices_and_tasks_that_changed(caps):
    c = _cmp(caps["base"], caps["slow"])
    dev = c.devices.set_index("device")
    assert dev.loc["0000:00:02.0", "verdict"] == "worse"
    assert dev.loc["0000:00:02.0", "delta"] == pytest.approx(8.0, abs=2.0)
    assert dev.loc[HOSTILE, "verdict"] == "only in 6.12.0-fixture"
    assert c.devices.iloc[0]["device"] == "0000:00:02.0"  # largest change first
    assert "systemd-journal" in set(c.tasks["comm"])


# --------------------------------------------------------------------------- thresholds


def test_threshold_parsing():
    t = parse_threshold("image_pages>+5%")
    assert (t.name, t.op, t.value, t.percent) == ("image_pages", ">", 5.0, True)
    t = parse_threshold(" copy_window_ms > 50 ")
    assert (t.op, t.value, t.percent) == (">", 50.0, False)
    assert parse_threshold("write_mbps<-10%").value == -10.0
    for bad in ("image_pages", "image_pages>>5", "image_pages>5%%", ">5", "image_pages=5",
                "image pages>5", "x>five"):
        with pytest.raises(SnapprofError, match="--fail-on"):
            parse_threshold(bad)


def test_fail_on_trips_on_a_real_difference(caps, monkeypatch, capsys):
    rc = _run_cli(monkeypatch, caps["base"], caps["slow"], "--fail-on", "freeze_user_ms>+10%")
    out, err = capsys.readouterr()
    assert rc == 1
    assert "freeze_user_ms>+10%" in err and "crossed" in err
    assert "CROSSED" in out
    # absolute, phases, and drops
    assert _run_cli(monkeypatch, caps["base"], caps["slow"], "--fail-on", "freeze_user>+5") == 1
    assert _run_cli(monkeypatch, caps["base"], caps["slow"], "--fail-on", "prealloc_ms<-10%") == 1
    # a change smaller than the threshold does not trip: +50 % is not beyond +80 %
    assert _run_cli(monkeypatch, caps["base"], caps["slow"], "--fail-on", "freeze_user_ms>+80%") == 0


def test_fail_on_quiet_on_an_identical_pair(caps, monkeypatch, capsys):
    copy = caps["d"] / "base-copy.snap"
    copy.write_bytes(caps["base"].read_bytes())
    rc = _run_cli(monkeypatch, caps["base"], copy, "--label", "a", "--label", "b",
                  "--fail-on", "freeze_user_ms>+0%", "--fail-on", "image_pages>+0",
                  "--fail-on", "prealloc_ms<-0%")
    assert rc == 0
    assert "not crossed" in capsys.readouterr().out.lower()


def test_fail_on_cannot_judge_too_few_runs(caps, monkeypatch, capsys):
    rc = _run_cli(monkeypatch, caps["few_a"], caps["few_b"], "--fail-on", "freeze_user_ms>+5%")
    assert rc == 0
    assert "not evaluated: too few runs (n=3 vs 3)" in capsys.readouterr().err


@pytest.mark.parametrize("expr,msg", [
    ("freeze_user_ms>>5", "expected NAME>VALUE"),
    ("no_such_metric>+5%", "unknown metric or phase 'no_such_metric'"),
])
def test_fail_on_bad_expression_is_one_line(caps, monkeypatch, capsys, expr, msg):
    rc = _run_cli(monkeypatch, caps["base"], caps["slow"], "--fail-on", expr)
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- bad input


def test_bad_input_messages(caps, monkeypatch, capsys, tmp_path):
    def one_line_error(*argv):
        rc = _run_cli(monkeypatch, *argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1, err
        return err

    assert "at least two captures" in one_line_error(caps["base"])
    assert "given twice" in one_line_error(caps["base"], caps["base"])
    assert "--label given 1 times for 2 captures" in one_line_error(
        caps["base"], caps["slow"], "--label", "x")
    assert "nothing to compare against" in one_line_error(caps["base"], caps["pool"])
    assert "nothing to compare against" in one_line_error(
        caps["base"], caps["slow"], "--label", "k", "--label", "k")
    text = tmp_path / "notes.snap"
    text.write_text("hello")
    assert "not a snapprof capture" in one_line_error(caps["base"], text)
    assert "no such file" in one_line_error(caps["base"], tmp_path / "missing.snap")


def test_no_common_metric(tmp_path):
    a, b = tmp_path / "a.snap", tmp_path / "b.snap"
    for path, rel, name in ((a, "k1", "freeze_user_ms"), (b, "k2", "write_ms")):
        with CaptureWriter(path) as w:
            w.set_meta({"kernel_release": rel})
            run = Run(trigger="snapshot", status="complete")
            run.metric(name, 1.0, "ms", "probe")
            w.add_run(run)
    with pytest.raises(SnapprofError, match="no metric or phase measured in both k1 and k2"):
        _cmp(a, b)


def test_no_complete_run(tmp_path, caps, monkeypatch, capsys):
    """A kernel whose every cycle failed is the worst regression: it is compared on its
    failure rate (and gated), with one note for its absent figures; with no complete run
    anywhere there is nothing to compare."""
    a = tmp_path / "failed.snap"
    with CaptureWriter(a) as w:
        w.set_meta({"kernel_release": "k1"})
        for _ in range(3):
            w.add_run(Run(trigger="snapshot", status="failed", error="EBUSY"))
    cmp = _cmp(caps["slow"], a)
    assert cmp.failure_rates["k1"]["failed"] == 3 and cmp.failure_rates["k1"]["runs"] == 3
    assert cmp.diffs.empty and cmp.not_comparable.empty
    assert any("k1 (failed.snap) has no complete run (3 failed): none of its figures can be "
               "compared, only its failure rate" in n for n in cmp.label_notes)
    for fmt in ("text", "json", "html"):
        out = tmp_path / f"c.{fmt}"
        assert _run_cli(monkeypatch, caps["slow"], a, "--format", fmt, "-o", out,
                        "--fail-on", "failure_rate>0") == 1
        assert "has no complete run" in out.read_text()
    assert "crossed: 3 of 3 cycles failed" in capsys.readouterr().err
    b = tmp_path / "failed2.snap"
    with CaptureWriter(b) as w:
        w.set_meta({"kernel_release": "k2"})
        w.add_run(Run(trigger="snapshot", status="incomplete", error="interrupted"))
    with pytest.raises(SnapprofError, match=r"no label has a complete run: nothing to compare "
                                            r"\(k1: 3 failed; k2: 1 incomplete\)"):
        _cmp(a, b)


# --------------------------------------------------------------------------- outputs


def test_text_json_html_outputs(caps, monkeypatch, capsys, tmp_path):
    assert _run_cli(monkeypatch, caps["base"], caps["slow"]) == 0
    text = capsys.readouterr().out
    assert "baseline = the first label, 6.1.0-fixture" in text
    assert "(2 failed excluded)" in text
    assert "freeze_user_ms" in text and "worse" in text

    out = tmp_path / "c.json"
    assert _run_cli(monkeypatch, caps["base"], caps["slow"], "--format", "json", "-o", out) == 0
    data = json.loads(out.read_text())  # strict JSON: NaN became null
    assert data["baseline"] == "6.1.0-fixture"
    fu = next(d for d in data["differences"] if d["name"] == "freeze_user_ms")
    assert fu["verdict"] == "worse" and fu["n_base"] == 8
    few = tmp_path / "few.json"
    assert _run_cli(monkeypatch, caps["few_a"], caps["few_b"], "--format", "json", "-o", few) == 0
    row = next(d for d in json.loads(few.read_text())["differences"] if d["name"] == "freeze_user_ms")
    assert row["ci_low"] is None

    html = tmp_path / "c.html"
    assert _run_cli(monkeypatch, caps["base"], caps["slow"], "-o", html,
                    "--fail-on", "freeze_user_ms>+10%") == 1
    page = html.read_text()
    assert page.count("<svg") >= 5  # devices, tasks, phases, pages, distributions
    assert "<script" not in page  # capture text is escaped, in tables and in the SVG
    assert "&lt;script&gt;" in page
    assert "http://" not in page.replace("http://www.w3.org", "")  # self-contained
    assert "kernel 6.1 does not count zero pages" in page
    assert _run_cli(monkeypatch, caps["base"], caps["slow"], "-o", html) == 2  # exists: --force
    assert "exists" in capsys.readouterr().err


def test_load_captures_equals_load_capture(caps, tmp_path):
    """The batched loader gives exactly the frames of frames.load_capture, file by file."""
    import pandas as pd
    from report_fixtures import write_capture

    odd = write_capture(tmp_path / "odd.snap")  # failed and incomplete runs, a copy phase
    paths = [caps["base"], odd, caps["slow"]]
    for path, f in zip(paths, load_captures(paths)):
        ref = load_capture(path)
        assert f.meta == ref.meta and f.source == ref.source
        for attr in ("runs", "metrics", "not_measured", "phases", "events", "tasks", "devices",
                     "kmsg", "probes"):
            pd.testing.assert_frame_equal(getattr(f, attr), getattr(ref, attr), obj=attr)
        pd.testing.assert_frame_equal(f.wide(), ref.wide())


def test_many_labels_html(tmp_path):
    from snapprof.report.compare_html import MAX_CHANGE_FIGURES, MAX_ECDF_LABELS, render_html

    n_labels = max(MAX_ECDF_LABELS, MAX_CHANGE_FIGURES) + 2
    paths = [make_capture(tmp_path / f"k{i}.snap", release=f"k{i}", n=3, seed=i)
             for i in range(n_labels)]
    c = compare(group_captures(load_captures(paths)))
    assert c.labels == [f"k{i}" for i in range(n_labels)]
    assert set(c.diffs["label"]) == set(c.labels[1:])
    page = render_html(c)
    assert "label (in order, baseline = 0)" in page  # median/min–max panels, not ECDFs
    assert page.count("drawn for the first") == n_labels - 1 - MAX_CHANGE_FIGURES


def test_level_option(caps, monkeypatch, capsys):
    # 3 vs 3 runs: no 95 % interval, but a 90 % one (best two-sided p = 2/20)
    assert _run_cli(monkeypatch, caps["few_a"], caps["few_b"], "--level", "0.9",
                    "--fail-on", "freeze_user_ms>+10%") == 1
    out = capsys.readouterr().out
    assert "90% CI of change" in out and "worse" in out
    for bad in ("1.5", "95", "x"):
        with pytest.raises(SystemExit) as exc:
            _run_cli(monkeypatch, caps["base"], caps["slow"], "--level", bad)
        assert exc.value.code == 2
        assert "--level" in capsys.readouterr().err


def test_load_captures_in_worker_processes(caps, tmp_path):
    """From PARALLEL_FROM captures on, workers read them: same frames, same one-line errors."""
    import pandas as pd

    from snapprof.analysis.compare import PARALLEL_FROM

    paths = [caps["base"], caps["slow"]] * (PARALLEL_FROM // 2 + 1)
    par = load_captures(paths, jobs=2)
    seq = load_captures(paths, jobs=1)
    assert [f.source for f in par] == [p.name for p in paths]
    for a, b in zip(par, seq):
        for attr in ("runs", "metrics", "phases", "devices", "tasks"):
            pd.testing.assert_frame_equal(getattr(a, attr), getattr(b, attr), obj=attr)
    bad = tmp_path / "bad.snap"
    bad.write_text("not a capture")
    with pytest.raises(SnapprofError, match="bad.snap: not a snapprof capture"):
        load_captures(paths + [bad], jobs=2)


def test_device_totals_in_sql_equal_pandas_on_edge_cases(tmp_path):
    """read_device_totals (SQLite) gives frames.device_totals of the rows: first driver
    named, a device with no timed callback NaN (not 0), names shared across buses summed."""
    import pandas as pd

    from snapprof.analysis.frames import device_totals, read_device_totals
    from snapprof.capture import CaptureReader

    path = tmp_path / "dev.snap"
    with CaptureWriter(path) as w:
        w.set_meta({"kernel_release": "6.1.0-fixture"})
        for r in range(2):
            run = Run(trigger="snapshot", status="complete")
            run.devices = [  # (device, driver, parent, event, stage, start_ns, duration_ns, error, pid)
                ("host0", None, None, "freeze", "prepare", 1, 5, 0, 1),
                ("host0", "scsi_host", None, "freeze", "suspend", 2, 7 + r, 0, 1),
                ("host0", "scsi", None, "freeze", "suspend", 3, 11, 0, 1),
                ("untimed", "x", None, "freeze", "suspend", 4, None, 0, 1),
                ("nodrv", None, None, "freeze", "suspend", 5, 2**40, 0, 1),
                ("nodrv", None, None, "thaw", "resume", 6, 3, 0, 1),
            ]
            w.add_run(run)
    ref = load_capture(path)
    with CaptureReader(path) as reader:
        summed = read_device_totals(reader)
    pd.testing.assert_frame_equal(summed, device_totals(ref.devices))
    run1 = summed[summed["run_id"] == 1].set_index("device")
    assert run1.loc["host0", "driver"] == "scsi_host" and run1.loc["host0", "duration_ns"] == 23
    assert math.isnan(run1.loc["untimed", "duration_ns"])
    assert pd.isna(run1.loc["nodrv", "driver"]) and run1.loc["nodrv", "duration_ns"] == 2**40 + 3
    light = load_captures([path], for_compare=True)[0]
    assert light.devices.empty and light.kmsg.empty and set(light.omitted) == {"devices", "kmsg"}
    pd.testing.assert_frame_equal(light.device_totals(), ref.device_totals())
