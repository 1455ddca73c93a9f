"""Host side of `snapprof lab record --trigger hibernate` (snapprof.lab.hibernate).

The console logs in tests/data/hibernate-*-boot{1,2}.log are real: the serial consoles of
`snapprof lab record --trigger hibernate` cycles in the lab (QEMU TCG, Debian kernels),
trimmed to the kernel lines from the recorder's start on (boot 1) and from the boot
kernel's start on (boot 2); hibernate-bookworm-swap64M-boot1.log is a real boot 1 with a
64 MiB swap disk (saving failed); hibernate-trixie-lz4-boot{1,2}.log a real lz4 cycle whose
boot kernel could not read the image; hibernate-trixie-7.3-boot{1,2}.log trixie's userspace
with the 7.3.4 backports kernel (no "Creating image:" line). QEMU is faked here (run_guest), nothing boots.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from snapprof.capture import CaptureReader, CaptureWriter, Run
from snapprof.errors import SnapprofError
from snapprof.lab import hibernate as hib
from snapprof.lab.qemu import GuestResult
from snapprof.record.console import console_records, split_console
from snapprof.record.kmsg import kernel_figures

DATA = Path(__file__).parent / "data"


def real_logs(distro):
    return ((DATA / f"hibernate-{distro}-boot1.log").read_text(),
            (DATA / f"hibernate-{distro}-boot2.log").read_text())


def figures(records):
    return {n: v for n, v, *_ in kernel_figures(records)}


@pytest.mark.parametrize("distro", ["bookworm", "trixie", "trixie-7.3"])
def test_console_part_on_real_logs(distro):
    b1, b2 = real_logs(distro)
    split = split_console(b1 + "\n" + b2)
    metrics, rows, notes = hib.console_part(split)
    got = {m[0]: m for m in metrics}
    w, b = figures(split.writer), figures(split.boot)
    # the writer's figures are the writing kernel's own lines, the boot kernel's its own
    assert got["write_kbytes"][1] == w["write_kbytes"]
    assert got["write_kbytes"][1] == 4 * got["write_pages"][1]
    assert got["read_pages"][1] == got["write_pages"][1]
    assert got["read_kbytes"][1] == got["write_kbytes"][1]
    assert got["read_ms"][1] == b["read_ms"] and got["read_mbps"][1] == b["read_mbps"]
    if distro == "trixie-7.3":
        # 6.19+: no "Creating image"/"Image created" (pm_deferred_pr_dbg); the copy is found
        # from the CPUs going offline after the freeze, and the rows start there
        assert "copy_pages" not in got and "copy_pages" not in w
        assert rows[0][3].startswith("Disabling non-boot CPUs")
    else:
        assert got["copy_pages"][1] == w["copy_pages"]
    assert got["write_ms"][4].startswith(hib.WRITER_SOURCE + ": ")
    assert got["read_ms"][4].startswith(hib.BOOT_SOURCE + ": ")
    assert all(m[3] == "kernel-log" for m in metrics)
    assert not (set(got) & {"freeze_user_ms", "sync_ms"})  # only the after-copy figures
    texts = [r[3] for r in rows]
    assert any("Wrote" in t for t in texts) and any("Read" in t and "kbytes" in t for t in texts)
    assert not any("Freezing user space processes completed" in t for t in texts[:3])
    assert notes == []
    assert hib.failure_reason(split, None, 0) is None


def test_failure_when_no_image_is_found():
    b1, _ = real_logs("bookworm")
    split = split_console(b1 + "\n[    0.000000] Linux version 6.1.0 (fresh boot)\n[    1.0] x\n")
    why = hib.failure_reason(split, None, hib.NOT_RESUMED)
    assert why.startswith("the guest did not resume from its image")
    metrics, rows, notes = hib.console_part(split)
    run = hib.join_run(None, metrics, rows, notes, why, 12.5)
    assert run.status == "failed" and run.error == why
    names = {m[0] for m in run.metrics}
    assert {"write_kbytes", "lab_offline_ms"} <= names and "read_ms" not in names
    nm = dict(run.not_measured)
    assert nm["read_ms"].startswith("not in the serial console log")


def test_join_keeps_recorded_figures_and_clears_not_measured():
    run = Run(trigger="hibernate", status="complete",
              metrics=[("copy_pages", 10.0, "pages", "probe", "x")],
              not_measured=[("write_ms", "after the atomic copy"), ("read_ms", "after the copy"),
                            ("shrink_ms", "fast path")],
              kmsg=[(1, 5, 6, "PM: hibernation: Need to copy 10 pages")])
    metrics = [("copy_pages", 11.0, "pages", "kernel-log", "console"),
               ("write_ms", 1650.0, "ms", "kernel-log", "console")]
    out = hib.join_run(run, metrics, [(None, 7, None, "PM: hibernation: Wrote 4 kbytes")], [], None, None)
    m = {r[0]: r for r in out.metrics}
    assert m["copy_pages"][1] == 10.0 and m["copy_pages"][3] == "probe"  # recorded one kept
    assert m["write_ms"][1] == 1650.0
    nm = dict(out.not_measured)
    assert "write_ms" not in nm and nm["shrink_ms"] == "fast path"
    assert nm["read_ms"].startswith("not in the serial console log")
    assert out.status == "complete" and len(out.kmsg) == 2


def test_make_swap_writes_a_v1_header(tmp_path):
    p = tmp_path / "swap.img"
    with open(p, "wb") as f:
        f.truncate(16 << 20)
    hib.make_swap(p)
    head = p.read_bytes()[:4096]
    assert head[4086:] == b"SWAPSPACE2"
    assert int.from_bytes(head[1024:1028], "little") == 1
    assert int.from_bytes(head[1028:1032], "little") == (16 << 20) // 4096 - 1


def test_swap_size_and_options():
    assert hib.check_swap_size("512M") == "512M" and hib.check_swap_size("1g") == "1G"
    for bad in ("0G", "x", "-1G", "12"):
        with pytest.raises(SnapprofError, match="bad --swap-size"):
            hib.check_swap_size(bad)
    assert "hibernate.compressor" not in hib.guest_script(None)
    assert "/sys/module/hibernate/parameters/compressor" in hib.guest_script("lz4")


# -- the whole host flow with QEMU faked ---------------------------------------------------

class FakeImage:
    distro = "bookworm"
    kernel_release = "6.1.0-test"


def _guest_capture(tmp: Path, with_run: bool, error: str | None = None) -> bytes:
    cap = tmp / "g.snap"
    with CaptureWriter(cap, force=True) as w:
        w.set_meta({"kernel_release": "6.1.0-test", "trigger": "hibernate"})
        w.set_probes([("freeze_processes", "freezer", "freeze_processes", 1, None)])
        if with_run:
            w.add_run(Run(trigger="hibernate", status="failed" if error else "complete", error=error,
                          metrics=[("cycle_ms", 1.0, "ms", "recorder", "x")],
                          not_measured=[("write_ms", "after the atomic copy")],
                          events=[(1, 0, 1, "sh", "begin", "hibernate", None, None)]))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(cap, arcname=Path(hib.GUEST_CAPTURE).name)
    cap.unlink()
    return buf.getvalue()


NO_SWAP = "writing 'disk' to /sys/power/state: No space left on device; kernel: PM: Not enough free swap"


def fake_qemu(monkeypatch, tmp_path, script):
    """script: list of (kind, console_text) per boot: kind = 'off' (powered off), 'resumed'
    (exit 0, capture with run), 'fresh' (NOT_RESUMED, capture without run), 'timeout'."""
    from snapprof.lab import build, qemu

    calls = []
    monkeypatch.setattr(build, "ensure_image", lambda d, progress=None: FakeImage())

    def run_guest(img, argv, out, **kw):
        kind, text = script[len(calls)]
        calls.append((argv, kw))
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "console.log").write_text(text)
        result_disk = Path(kw["extra_disks"][1].path)
        if kind in ("resumed", "fresh", "refused"):
            with open(result_disk, "r+b") as f:
                f.write(_guest_capture(tmp_path, kind != "fresh",
                                       NO_SWAP if kind == "refused" else None))
        rc = {"off": None, "resumed": 0, "fresh": hib.NOT_RESUMED, "timeout": None, "refused": 1}[kind]
        return GuestResult(rc, kind == "timeout", out / "console.log", 0.0, 1.0, 1.0, "", None, 0,
                           out, "bookworm", "6.1.0-test", kw.get("timeout"))

    monkeypatch.setattr(qemu, "run_guest", run_guest)
    return calls


def test_lab_flow_resumed_then_timeout_keeps_the_first_cycle(monkeypatch, tmp_path):
    b1, b2 = real_logs("bookworm")
    calls = fake_qemu(monkeypatch, tmp_path, [("off", b1), ("resumed", b2), ("timeout", "")])
    out = tmp_path / "out"
    with pytest.raises(SnapprofError, match="did not power off within 60 s") as exc:
        hib.lab_hibernate("bookworm", 2, out, timeout=60, stream=None, progress=lambda m: None)
    assert "\n" not in str(exc.value)
    # boot 2 used the same overlay, disks and kernel command line as boot 1
    assert calls[0][1]["overlay"] == calls[1][1]["overlay"]
    assert calls[0][1]["extra_append"] == calls[1][1]["extra_append"]
    assert "resume=/dev/vdb" in calls[0][1]["extra_append"]
    assert not (out / "bookworm-cycle1" / "disks").exists()  # disks removed
    assert not (out / "bookworm-cycle2" / "disks").exists()
    with CaptureReader(out / "bookworm.snap") as r:  # cycle 1 survived cycle 2's failure
        runs = r.runs()
        assert [x["status"] for x in runs] == ["complete"]
        m = {x["name"]: x for x in r.table("metrics")}
        assert r.meta()["lab_distro"] == "bookworm"
        assert len(r.table("events")) == 1
    split = split_console(b1 + "\n" + b2)
    assert m["write_kbytes"]["value"] == figures(split.writer)["write_kbytes"]
    assert m["read_kbytes"]["value"] == figures(split.boot)["read_kbytes"]
    assert m["lab_offline_ms"]["method"] == "recorder" and m["lab_offline_ms"]["value"] > 0


def test_lab_flow_not_resumed_is_a_failed_run(monkeypatch, tmp_path):
    b1, _ = real_logs("bookworm")
    fresh = "[    0.000000] Linux version 6.1.0-test\n[    2.000000] PM: Image not found (code -22)\n"
    fake_qemu(monkeypatch, tmp_path, [("off", b1), ("fresh", fresh)])
    cap, cycles = hib.lab_hibernate("bookworm", 1, tmp_path / "o", stream=None,
                                    progress=lambda m: None)
    assert cycles[0].status == "failed"
    assert cycles[0].error.startswith("the guest did not resume from its image")
    with CaptureReader(cap) as r:
        (run,) = r.runs()
        assert run["status"] == "failed" and run["error"] == cycles[0].error
        names = {x["name"] for x in r.table("metrics")}
        assert "write_kbytes" in names and "read_kbytes" not in names


def test_lab_command_reports_a_failed_cycle_in_one_line(monkeypatch, tmp_path, capsys):
    from snapprof import cli

    b1, _ = real_logs("bookworm")
    fake_qemu(monkeypatch, tmp_path, [("off", b1), ("fresh", "[    0.000000] Linux version 6.1\n")])
    rc = cli.main(["lab", "record", "--trigger", "hibernate", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert err[-1].startswith("snapprof lab: error: cycle 1 failed: the guest did not resume")


def test_bad_options(tmp_path):
    with pytest.raises(SnapprofError, match="bad --runs"):
        hib.lab_hibernate("bookworm", 0, tmp_path)
    with pytest.raises(SnapprofError, match="bad --compressor"):
        hib.lab_hibernate("bookworm", 1, tmp_path, compressor="zstd")


def test_left_out_areas_are_explained_not_measured():
    why = hib.unrecorded_areas(hib.SAFE_AREAS)
    assert "image_pages" in why and "shrink_ms" in why and "freeze_user_ms" not in why
    assert hib.unrecorded_areas(None) == {}
    run = Run(trigger="hibernate", status="complete", metrics=[("copy_pages", 5.0, "pages", "kernel-log", "x")])
    out = hib.join_run(run, [], [], [], None, None, why)
    nm = dict(out.not_measured)
    assert "swsusp_save" in nm["image_pages"] and "copy_pages" not in nm


def test_swap_too_small_is_one_failed_run_and_no_second_boot(monkeypatch, tmp_path, capsys):
    from snapprof import cli

    calls = fake_qemu(monkeypatch, tmp_path, [("refused", "[    0.000000] Linux version 6.1\n")])
    out = tmp_path / "o"
    rc = cli.main(["lab", "record", "--trigger", "hibernate", "--swap-size", "64M", "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(calls) == 1  # no boot 2: the guest never powered off
    assert err[-1] == f"snapprof lab: error: cycle 1 failed: {NO_SWAP}"
    with CaptureReader(out / "bookworm.snap") as r:
        (run,) = r.runs()
        assert run["status"] == "failed" and "Not enough free swap" in run["error"]


def test_wrote_line_without_saving_done_is_not_a_write_figure():
    # real: 64 MiB swap, saving stopped at 40 %, yet "Wrote 370012 kbytes in 8.96 seconds"
    text = (DATA / "hibernate-bookworm-swap64M-boot1.log").read_text()
    assert "Wrote 370012 kbytes" in text and "Image saving done" not in text
    metrics, _rows, notes = hib.console_part(split_console(text))
    names = {m[0] for m in metrics}
    assert "write_pages" in names and "copy_pages" in names
    assert not names & {"write_ms", "write_kbytes", "write_mbps"}
    assert any("was not written whole" in n for n in notes)
    run = hib.join_run(Run(trigger="hibernate", status="failed", error="ENOSPC"), metrics, [], notes,
                       None, None)
    assert "was not written whole" in dict(run.not_measured)["write_kbytes"]
    assert run.status == "failed" and run.error == "ENOSPC"


def test_lz4_image_the_boot_kernel_cannot_read():
    # real (trixie 6.12, hibernate.compressor=lz4): the initramfs has no lz4 module, so the
    # boot kernel cannot read the image and the guest boots afresh
    b1 = (DATA / "hibernate-trixie-lz4-boot1.log").read_text()
    b2 = (DATA / "hibernate-trixie-lz4-boot2.log").read_text()
    split = split_console(b1 + "\n" + b2)
    why = hib.failure_reason(split, None, hib.NOT_RESUMED, console_records(b2))
    assert why == "the guest did not resume from its image: PM: hibernation: lz4 compression is not available"
    metrics, _rows, _notes = hib.console_part(split)
    m = {x[0]: x[1] for x in metrics}
    assert m["write_compressed_kbytes"] == 134946 and "read_ms" not in m
    assert m["write_kbytes"] == 4 * m["write_pages"]


def test_lab_record_snapshot_and_pm_test_boot_once_and_report(monkeypatch, tmp_path, capsys):
    from types import SimpleNamespace

    from snapprof import cli
    from snapprof.lab import build, compare

    calls = []

    def fake_record(key, runs, out, **kw):
        calls.append((key, runs, kw["record_args"]))
        out.mkdir(parents=True, exist_ok=True)
        cap = out / f"{build.slug(key)}.snap"
        cap.write_bytes(b"")
        return cap, SimpleNamespace(duration_s=61.0)

    monkeypatch.setattr(compare, "record_in_guest", fake_record)
    monkeypatch.setattr(compare, "write_report", lambda cap, html: html.write_text("<html></html>"))
    monkeypatch.setattr(build, "ensure_image", lambda key, **kw: None)
    out = tmp_path / "o"
    assert cli.main(["lab", "record", "--distro", "trixie", "--trigger", "pm-test:freezer", "--runs", "2",
                     "--record-arg=--image-size=0", "-o", str(out)]) == 0
    assert calls == [("trixie", 2, ["--trigger", "pm-test:freezer", "--image-size=0"])]
    assert (out / "trixie.html").exists() and "recorded in the trixie guest" in capsys.readouterr().out


def test_a_guest_capture_with_only_a_begun_cycle_has_no_run(tmp_path):
    """The recorder in the guest commits the cycle's row as it begins; a guest that never
    came back leaves only that row, and the lab (which knows why from the consoles) takes
    it as no run of the cycle — the begun row never hides the real reason."""
    from snapprof.capture import CaptureWriter, Run
    from snapprof.lab.hibernate import run_from_capture

    path = tmp_path / "guest.snap"
    with CaptureWriter(path) as w:
        w.set_meta({"kernel_release": "6.12.0-test"})
        w.begin_run("hibernate", "2026-12-01T00:00:00Z")
    meta, _probes, run = run_from_capture(path)
    assert meta["kernel_release"] == "6.12.0-test" and run is None
    path2 = tmp_path / "guest2.snap"
    with CaptureWriter(path2) as w:
        rid = w.begin_run("hibernate", None)
        w.add_run(Run(trigger="hibernate", status="complete"), rid)
    assert run_from_capture(path2)[2].status == "complete"
