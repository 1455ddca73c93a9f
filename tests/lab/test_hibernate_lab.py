"""A real hibernation in the lab, whole: write, power-off, boot-kernel read, restore.

One cycle per distro (two QEMU boots each, ~3-6 min under TCG): `snapprof lab record
--trigger hibernate` as a library call. Checks: one capture run with both halves; its
written and read figures are the ones the writing and the boot kernel printed on the
serial console (read independently here from the raw logs); the restored guest carried
on (the recorder's run is complete) and what the recorder saw before the atomic copy
(BPF events, /dev/kmsg lines) survived the restore.
"""

from __future__ import annotations

import math
import re

import pytest

from conftest import LAB_DISTROS, lab_id

pytestmark = pytest.mark.lab

WROTE = re.compile(r"Wrote (\d+) kbytes in (\d+)\.(\d\d) seconds \((\d+)\.(\d\d) MB/s\)")
READ = re.compile(r"Read (\d+) kbytes in (\d+)\.(\d\d) seconds \((\d+)\.(\d\d) MB/s\)")
SAVING = re.compile(r"(?:Compressing and saving|Saving and compressing|Saving) image data(?: pages)? \((\d+) pages\)")
LOADING = re.compile(r"(?:Loading and decompressing image data|Loading image data pages) \((\d+) pages\)")
CREATED = re.compile(r"Image created \((\d+) pages copied")


@pytest.fixture(scope="module", params=LAB_DISTROS, ids=lab_id)
def cycle(request, lab_guest, tmp_path_factory):
    return _one_cycle(request.param, lab_guest, tmp_path_factory)


def _one_cycle(distro, lab_guest, tmp_path_factory, tag="", **kw):
    from snapprof.capture import CaptureReader
    from snapprof.lab.hibernate import lab_hibernate

    lab_guest(distro)  # builds the image if needed
    out = tmp_path_factory.mktemp(f"hib-{distro}{tag}")
    capture, cycles = lab_hibernate(distro, 1, out, stream=None, timeout=1200, **kw)
    with CaptureReader(capture) as r:
        data = {"runs": r.runs(), "meta": r.meta(),
                "metrics": {m["name"]: m for m in r.table("metrics")},
                "not_measured": {m["name"]: m["reason"] for m in r.table("not_measured")},
                "events": r.table("events"), "kmsg": r.table("kmsg")}
    folder = out / f"{distro}-cycle1"
    data["boot1"] = (folder / "boot1" / "console.log").read_text(errors="replace")
    boot2 = folder / "boot2" / "console.log"
    data["boot2"] = boot2.read_text(errors="replace") if boot2.exists() else ""
    data["cycle"] = cycles[0]
    print(f"\n{distro}{tag}: {cycles[0]}")
    return data


def _one(pattern, text):
    found = pattern.findall(text)
    assert len(found) == 1, (pattern.pattern, found)
    return found[0]


def test_one_run_with_both_halves(cycle):
    (run,) = cycle["runs"]
    assert run["status"] == "complete", run["error"]
    assert run["trigger"] == "hibernate"
    m = cycle["metrics"]
    for name in ("write_pages", "write_kbytes", "write_ms", "read_pages", "read_kbytes", "read_ms"):
        assert name in m, name
    assert m["write_ms"]["source"].startswith("serial console, writing kernel")
    assert m["read_ms"]["source"].startswith("serial console, boot kernel")
    assert not {"write_ms", "read_ms", "write_kbytes", "read_kbytes"} & set(cycle["not_measured"])
    assert m["lab_offline_ms"]["method"] == "recorder" and "host monotonic clock" in m["lab_offline_ms"]["source"]
    assert m["lab_offline_ms"]["value"] > 0


def test_written_figures_are_the_writing_kernels(cycle):
    m = cycle["metrics"]
    kb, s, cs, mb, mbc = _one(WROTE, cycle["boot1"])
    assert m["write_kbytes"]["value"] == int(kb)
    assert m["write_ms"]["value"] == int(s) * 1000 + int(cs) * 10
    assert m["write_mbps"]["value"] == pytest.approx(int(mb) + int(mbc) / 100)
    assert m["write_pages"]["value"] == int(_one(SAVING, cycle["boot1"]))
    assert m["write_kbytes"]["value"] == 4 * m["write_pages"]["value"]
    created = CREATED.findall(cycle["boot1"])
    if created:  # the writer's "Image created" (6.1 prints it at the default loglevel)
        assert m["copy_pages"]["value"] == int(created[-1])
    if "image_pages" in m:  # the recorder's own figure, from before the copy
        assert m["image_pages"]["value"] == m["write_pages"]["value"] + 1  # + the header page


def test_what_came_before_the_copy_is_recorded_in_a_real_hibernation(cycle):
    # every probe but swsusp_save's return (pending across the copy): preallocation and the
    # pages to copy, counted before the copy, against the writing kernel's own lines
    m = cycle["metrics"]
    assert m["prealloc_ms"]["method"] == "probe" and m["prealloc_ms"]["value"] > 0
    allocated = re.search(r"Allocated (\d+) pages for snapshot", cycle["boot1"])
    assert m["preallocated_pages"]["value"] == int(allocated.group(1))
    need = m["copy_needed_pages"]
    assert need["method"] == "probe"
    logged = [re.search(r"(?:Need to copy|Normal pages needed:) (\d+)", k["text"])
              for k in cycle["kmsg"] if k["seq"] is not None]  # the restored guest's own log
    assert need["value"] == int(next(x for x in logged if x).group(1))
    # what was written is what was counted (less the zero pages 6.6+ skips), plus the PFN list
    assert m["write_pages"]["value"] <= need["value"] + math.ceil(need["value"] * 8 / 4096)
    assert "copy_window_ms" in cycle["not_measured"]  # swsusp_save's return is not probed
    if "copy_pages" in m:  # up to 6.18 the writer's console says "Image created (N pages copied)"
        assert m["copy_pages"]["method"] == "kernel-log"
        assert m["copy_pages"]["source"].startswith("serial console, writing kernel")
    else:  # 6.19+: not logged, and the probe reading it needs swsusp_save's return
        assert "left out where a real hibernation may run" in cycle["not_measured"]["copy_pages"]


def test_read_figures_are_the_boot_kernels(cycle):
    m = cycle["metrics"]
    kb, s, cs, mb, mbc = _one(READ, cycle["boot2"])
    assert m["read_kbytes"]["value"] == int(kb)
    assert m["read_ms"]["value"] == int(s) * 1000 + int(cs) * 10
    assert m["read_mbps"]["value"] == pytest.approx(int(mb) + int(mbc) / 100)
    assert m["read_pages"]["value"] == int(_one(LOADING, cycle["boot2"]))
    assert m["read_pages"]["value"] == m["write_pages"]["value"]  # the image read is the one written


def test_restored_guest_kept_what_it_saw_before_the_copy(cycle):
    names = {(e["name"], e["kind"]) for e in cycle["events"]}
    assert ("freeze_processes", "begin") in names and ("freeze_processes", "end") in names
    from_kmsg = [k["text"] for k in cycle["kmsg"] if k["seq"] is not None]  # the guest's /dev/kmsg
    from_console = [k["text"] for k in cycle["kmsg"] if k["seq"] is None]
    assert any("Freezing user space processes" in t for t in from_kmsg)
    assert any(WROTE.search(t) for t in from_console) and any(READ.search(t) for t in from_console)
    assert not any(WROTE.search(t) for t in from_kmsg)  # rolled back: written after the copy
    assert cycle["meta"]["lab_distro"] in LAB_DISTROS


# -- lz4 (6.12 offers hibernate.compressor; the boot kernel's initramfs must load lz4) --------
@pytest.fixture(scope="module")
def lz4(lab_guest, tmp_path_factory):
    return _one_cycle("trixie", lab_guest, tmp_path_factory, "-lz4", compressor="lz4")


def test_lz4_image_is_written_and_read_back(lz4):
    (run,) = lz4["runs"]
    assert run["status"] == "complete", run["error"]
    assert lz4["meta"]["lab_compressor"] == "lz4"
    assert re.search(r"for lz4 compression", lz4["boot1"])
    assert re.search(r"for lz4 decompression", lz4["boot2"])
    assert "compression is not available" not in lz4["boot2"]
    m = lz4["metrics"]
    kb, *_ = _one(WROTE, lz4["boot1"])
    assert m["write_kbytes"]["value"] == int(kb)
    rkb, *_ = _one(READ, lz4["boot2"])
    assert m["read_kbytes"]["value"] == int(rkb)
    assert m["read_pages"]["value"] == m["write_pages"]["value"]
    compressed = re.search(r"Image size after compression: (\d+) kbytes", lz4["boot1"])
    assert compressed and m["write_compressed_kbytes"]["value"] == int(compressed.group(1))
    assert m["write_compressed_kbytes"]["value"] < m["write_kbytes"]["value"]


# -- a guest that does not resume: the swap disk wiped between the boots ----------------------
@pytest.fixture(scope="module")
def wiped(lab_guest, tmp_path_factory):
    return _one_cycle("bookworm", lab_guest, tmp_path_factory, "-wiped", wipe_swap=True)


def test_a_guest_that_does_not_resume_gives_a_failed_run_with_the_reason(wiped):
    (run,) = wiped["runs"]
    assert run["status"] == "failed"
    assert run["error"].startswith("the guest did not resume from its image"), run["error"]
    assert wiped["cycle"].status == "failed"
    m, nm = wiped["metrics"], wiped["not_measured"]
    kb, *_ = _one(WROTE, wiped["boot1"])  # the write happened and is kept
    assert m["write_kbytes"]["value"] == int(kb)
    assert m["write_kbytes"]["source"].startswith("serial console, writing kernel")
    assert not READ.search(wiped["boot2"])  # nothing was read ...
    for name in ("read_ms", "read_kbytes", "read_pages"):
        assert name not in m and nm.get(name), name  # ... so no read figure, and a reason
