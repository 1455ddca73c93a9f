"""The systemd lab guest without a kernel (snapprof.lab.systemd): image keys and recipes,
systemd's part of the time from a journal, the boot-1 job, the two-boot flow with QEMU faked.

tests/data/systemd-hibernate-journal-info.json is real: `journalctl -b -o json` of a
trixie+systemd guest (systemd 257.13) after `systemctl hibernate` and the resume, PID 1 at
its default (info) level, trimmed to the entries of the cycle.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snapprof.errors import SnapprofError
from snapprof.lab import build, systemd

DATA = Path(__file__).parent / "data"
INFO = DATA / "systemd-hibernate-journal-info.json"


def test_image_keys():
    assert systemd.split("trixie+systemd") == ("trixie", "systemd")
    assert systemd.split("trixie") == ("trixie", None)
    # a kernel release holds "+": it is no init variant
    assert systemd.split("trixie:7.3.4+deb13-amd64") == ("trixie:7.3.4+deb13-amd64", None)
    assert build.validate_distro("trixie+systemd") == "trixie+systemd"
    assert build.validate_distro("trixie:7.3.4+deb13-amd64") == "trixie:7.3.4+deb13-amd64"
    with pytest.raises(SnapprofError, match="bad init variant 'openrc'"):
        build.validate_distro("trixie+openrc")
    with pytest.raises(SnapprofError, match="its suite's own kernel"):
        build.validate_distro("trixie+systemd:7.3.4+deb13-amd64")
    with pytest.raises(SnapprofError, match="bad distro name"):
        build.validate_distro("../x+systemd")
    assert build.slug("trixie+systemd") == "trixie+systemd"


def test_recipe_is_the_suites_plus_systemds_and_leaves_the_suites_alone():
    base = build.recipe("trixie")
    assert not {"init_variant", "init_packages"} & set(base)  # existing images keep their hash
    assert base["init"] == build.GUEST_INIT_PATH
    rec = build.recipe("trixie+systemd")
    assert {k: v for k, v in rec.items() if k in base and k != "init"} == \
        {k: v for k, v in base.items() if k != "init"}
    assert rec["init"] == systemd.INIT and rec["init_variant"] == "systemd"
    assert build.recipe_hash(rec) != build.recipe_hash(base)
    assert build.recipe_hash(rec) == build.recipe_hash(build.recipe("trixie+systemd"))


def test_recipe_hash_follows_the_guest_files(monkeypatch):
    h = build.recipe_hash(build.recipe("trixie+systemd"))
    monkeypatch.setattr(systemd, "UNIT_TEXT", systemd.UNIT_TEXT + "# changed\n")
    assert build.recipe_hash(build.recipe("trixie+systemd")) != h
    monkeypatch.undo()
    monkeypatch.setattr(systemd, "MASKED", systemd.MASKED + ("cron.service",))
    assert build.recipe_hash(build.recipe("trixie+systemd")) != h


def test_the_image_boots_systemd_and_the_lab_unit(tmp_path):
    img = build.Image("trixie+systemd", tmp_path, tmp_path / "d", tmp_path / "k", tmp_path / "i",
                      "6.12", "", "", "", meta={"init": systemd.INIT})
    assert img.init_path == "/usr/lib/systemd/systemd"
    assert f"ExecStart={systemd.JOB_STARTER_PATH}" in systemd.UNIT_TEXT
    starter = systemd.JOB_STARTER.read_text()
    # the message the host reads as a boot failure (qemu.BOOT_FAILURES), as snapprof-boot's
    assert "snapprof-boot: cannot mount the job share" in starter
    assert "exec /bin/sh /run/snapprof-job/guest-init.sh" in starter
    assert "mount -t tmpfs" not in starter and "mount -t proc" not in starter  # systemd's


def info_journal():
    return systemd.read_journal(INFO.read_text())


def test_systemds_part_from_a_real_journal():
    metrics, missing = systemd.journal_figures(info_journal())
    got = {m[0]: m for m in metrics}
    # differences of the entries' own timestamps (see the data file), on one clock each
    assert got["systemd_logind_ms"][1] == (1796120457723534 - 1796120457534806) / 1000
    assert got["systemd_sleep_pre_ms"][1] == (1796120458672133 - 1796120457723534) / 1000
    assert got["user_slice_frozen_ms"][1] == (1796120458553972 - 1796120457723534) / 1000
    assert got["systemd_sleep_call_ms"][1] == (138117548 - 129700881) / 1000  # CLOCK_MONOTONIC
    assert got["user_slice_thawed_ms"][1] == (1796120517592757 - 1796120516941116) / 1000
    assert got["systemd_sleep_post_ms"][1] == (1796120518164188 - 1796120516941116) / 1000
    assert got["systemd_hibernate_unit_ms"][1] == (138700926 - 128751347) / 1000
    assert got["systemd_sleep_wall_ms"][1] == (1796120516941116 - 1796120458672133) / 1000
    for name, value, unit, method, source in metrics:
        assert unit == "ms" and method == "journal" and value >= 0
        assert source.startswith(systemd.JOURNAL_SOURCE)
    assert "CLOCK_MONOTONIC" in got["systemd_sleep_call_ms"][4]
    assert "RTC" in got["systemd_sleep_wall_ms"][4]
    # PID 1 at info level: the freezer's state changes are not logged, and it is said why
    assert set(missing) == {"user_slice_freeze_ms", "user_slice_thaw_ms", "user_slice_freeze_failed_ms"}
    assert all("only at debug level" in missing[n] for n in ("user_slice_freeze_ms", "user_slice_thaw_ms"))
    # systemd froze user.slice: no wait it gave up on, and it is said so
    assert "systemd-sleep logged no \"Failed to freeze unit 'user.slice'\"" in missing["user_slice_freeze_failed_ms"]


def test_debug_freezer_lines_give_the_freeze_and_thaw():
    entries = info_journal()
    i = next(i for i, e in enumerate(entries) if e["MESSAGE"].startswith("Performing sleep"))

    def line(text, t):
        return {"MESSAGE": f"user.slice: Freezer state changed {text}", "_SOURCE_REALTIME_TIMESTAMP": str(t),
                "__MONOTONIC_TIMESTAMP": "1"}

    entries[i:i] = [line("running -> freezing", 1000), line("freezing -> frozen", 16500)]
    entries.append(line("frozen -> thawing", 50000))
    entries.append(line("thawing -> running", 119500))
    got = {m[0]: m[1] for m in systemd.journal_figures(entries)[0]}
    assert got["user_slice_freeze_ms"] == 15.5 and got["user_slice_thaw_ms"] == 69.5


def test_a_journal_without_a_sleep_or_its_return_gives_no_figure_for_it():
    entries = info_journal()
    metrics, missing = systemd.journal_figures([])
    assert metrics == [] and set(missing) == {name for name, *_ in systemd.SPANS}
    metrics, missing = systemd.journal_figures([e for e in entries
                                                if not e["MESSAGE"].startswith("Performing sleep")])
    assert metrics == [] and all("systemd-sleep did not hibernate" in w for w in missing.values())
    # a failed sleep: no return, so no span that ends there (and no made-up figure)
    failed = [dict(e, MESSAGE="Failed to put system to sleep. System resumed again: No such device")
              if e["MESSAGE"].startswith("System returned") else e for e in entries]
    metrics, missing = systemd.journal_figures(failed)
    got = {m[0] for m in metrics}
    assert "systemd_sleep_call_ms" not in got and "systemd_sleep_wall_ms" not in got
    assert "systemd_sleep_pre_ms" in got
    assert missing["systemd_sleep_call_ms"] == ("not in the journal: no "
                                                "\"System returned from sleep operation 'hibernate'\"")


def test_read_journal_skips_what_is_not_an_entry():
    text = '{"MESSAGE": "a", "__MONOTONIC_TIMESTAMP": "1"}\nnot json\n{"MESSAGE": [1, 2]}\n{bad\n[]\n'
    assert systemd.read_journal(text) == [{"MESSAGE": "a", "__MONOTONIC_TIMESTAMP": "1"}]


def test_guest_job_installs_the_service_and_hibernates_from_user_slice():
    job = systemd.guest_job()
    assert "python3 -m snapprof service install" in job
    assert "PYTHONPATH=/tmp/snapprof-tree" in job  # the service survives the 9p share's death
    assert ("systemd-run --quiet --scope --slice=user.slice --unit=snapprof-lab-hibernate "
            "systemctl hibernate") in job
    assert "--slice=user.slice --unit=snapprof-lab-user sleep" in job
    assert "systemd-analyze log-level debug" not in job
    assert "systemd-analyze log-level debug" in systemd.guest_job(debug=True)
    assert "tar -cf /dev/vdc" in job and "journal.json" in job  # capture and journal come back


# -- the two-boot flow, QEMU faked --------------------------------------------------------------

def fake_systemd_qemu(monkeypatch, tmp_path, script):
    from test_lab_hibernate import FakeImage, fake_qemu

    calls = fake_qemu(monkeypatch, tmp_path, script)

    class Image(FakeImage):
        distro = "trixie+systemd"
        meta = {"systemd_version": "257.13-1~deb13u1"}

    monkeypatch.setattr(build, "ensure_image", lambda d, progress=None: Image())
    return calls


def test_systemd_hibernate_joins_console_and_journal(monkeypatch, tmp_path):
    from snapprof.capture import CaptureReader
    from snapprof.lab import hibernate as hib
    from snapprof.lab import qemu
    from test_lab_hibernate import real_logs

    b1, b2 = real_logs("trixie")
    calls = fake_systemd_qemu(monkeypatch, tmp_path, [("off", b1), ("resumed", b2)])
    fake = qemu.run_guest

    def with_journal(img, argv, out, **kw):
        res = fake(img, argv, out, **kw)
        if res.returncode == 0:  # the restored job left its journal in the outbox
            (Path(out) / "journal.json").write_text(INFO.read_text())
        return res

    monkeypatch.setattr(qemu, "run_guest", with_journal)
    cap, cyc, journal = systemd.systemd_hibernate("trixie+systemd", tmp_path / "o", stream=None,
                                                  progress=lambda m: None)
    assert calls[0][0] == ["sh", "-c", systemd.guest_job()]  # boot 1 runs the systemd job
    assert calls[1][0] == ["sh", "-c", hib.fresh_boot_script()]
    assert "tsc=reliable" in calls[0][1]["extra_append"]  # both boots, the same command line
    assert calls[0][1]["extra_append"] == calls[1][1]["extra_append"]
    assert cyc.status == "complete" and journal
    with CaptureReader(cap) as r:
        (run,) = r.runs()
        m = {x["name"]: x for x in r.table("metrics")}
        nm = {x["name"]: x["reason"] for x in r.table("not_measured")}
        assert r.meta()["lab_distro"] == "trixie+systemd"
        assert r.meta()["lab_systemd_version"] == "257.13-1~deb13u1"
    want = {x[0]: x[1] for x in systemd.journal_figures(info_journal())[0]}
    assert {n: m[n]["value"] for n in want} == want
    assert m["systemd_sleep_call_ms"]["method"] == "journal"
    assert "write_kbytes" in m and "read_kbytes" in m  # both boots' consoles joined as before
    assert "only at debug level" in nm["user_slice_freeze_ms"]


def test_systemd_hibernate_without_a_journal_says_why(monkeypatch, tmp_path):
    from snapprof.capture import CaptureReader
    from test_lab_hibernate import real_logs

    b1, b2 = real_logs("trixie")
    fake_systemd_qemu(monkeypatch, tmp_path, [("off", b1), ("resumed", b2)])
    cap, cyc, journal = systemd.systemd_hibernate("trixie+systemd", tmp_path / "o", stream=None,
                                                  progress=lambda m: None)
    assert journal == []
    with CaptureReader(cap) as r:
        names = {x["name"] for x in r.table("metrics")}
        nm = {x["name"]: x["reason"] for x in r.table("not_measured")}
    assert not names & {s[0] for s in systemd.SPANS}
    assert nm["systemd_sleep_call_ms"].startswith("the guest left no journal in its outbox")


def test_only_a_systemd_key(tmp_path):
    with pytest.raises(SnapprofError, match="not a systemd guest"):
        systemd.systemd_hibernate("trixie", tmp_path, stream=None)


def test_journal_data_is_real_and_trimmed():
    rows = [json.loads(x) for x in INFO.read_text().splitlines()]
    assert any(r["MESSAGE"] == "Performing sleep operation 'hibernate'..." for r in rows)
    assert all("__MONOTONIC_TIMESTAMP" in r for r in rows)


def test_systemds_figures_are_registered_and_reported_where_a_capture_has_them():
    """Every span the journal gives is a registry metric of area systemd (labelled, and a
    reason of its own where a capture lacks it); the report shows the section only for a
    capture that has one of them, in text and HTML."""
    import pandas as pd

    from snapprof import metrics
    from snapprof.analysis.frames import load_capture
    from snapprof.record.recorder import default_reason
    from snapprof.report.html import render_html
    from snapprof.report.model import build_model
    from snapprof.report.text import render_text

    names = [name for name, *_ in systemd.SPANS]
    assert sorted(names) == sorted(metrics.SYSTEMD_JOURNAL)
    assert all(metrics.get(n).area == "systemd" for n in names)
    assert "--trigger none" in default_reason(names[0], "snapshot")
    assert default_reason(names[0], "snapshot").endswith("this cycle: --trigger snapshot")

    frames = load_capture(Path(__file__).parent / "data" / "trixie-6.12-trigger-hibernate.snap")
    plain = build_model(frames)
    assert plain["systemd"] == []
    assert "systemd's part" not in render_text(plain) and 'id="systemd"' not in render_html(plain)

    figures, _missing = systemd.journal_figures(info_journal())
    rid = int(frames.runs["run_id"].iloc[0])
    extra = pd.DataFrame([{"run_id": rid, "name": n, "value": v, "unit": u, "method": m, "source": s}
                          for n, v, u, m, s in figures])
    frames.metrics = pd.concat([frames.metrics, extra], ignore_index=True)
    model = build_model(frames)
    shown = {r["name"] for r in model["systemd"]}
    assert shown == {n for n, *_ in figures} and "systemd_sleep_call_ms" in shown
    text = render_text(model)
    assert "systemd's part (the journal of `systemctl hibernate`)" in text
    assert metrics.get("systemd_sleep_call_ms").label in text
    assert 'id="systemd"' in render_html(model)
