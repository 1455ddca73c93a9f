"""Splitting a hibernate+resume serial log into the writing, boot and restored kernels.

The logs are synthetic but made of the real lines: the format strings of kernel/power/*.c,
kernel/cpu.c and kernel/reboot.c (6.1.192 / 6.12.117) and the figures measured in the lab
(lab-notes.md: "Wrote 126124 kbytes in 1.65 seconds (76.43 MB/s)", "Loading and
decompressing image data (31531 pages)", "Read 126124 kbytes in 2.09 seconds (60.34 MB/s)").
"""

import pytest

from snapprof.record.console import console_records, split_console
from snapprof.record.kmsg import copy_window_from_printk, kernel_errors, kernel_figures

BOOT1 = """\
SeaBIOS (version 1.16.2-debian-1.16.2-1)
Booting from ROM..
[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-01)
[    0.000000] Command line: root=/dev/vda rw console=ttyS0 init=/lab-init panic=-1 resume=/dev/vdb no_console_suspend
[    0.412345] PM: hibernation: Registered nosave memory: [mem 0x00000000-0x00000fff]
Begin: Loading essential drivers ... done.
Begin: Running /scripts/init-premount ... [    3.141592] virtio_blk virtio1: [vdb] 1048576 512-byte logical blocks (537 MB/512 MiB)
done.
[   14.200000] Adding 524284k swap on /dev/vdb.  Priority:-2 extents:1 across:524284k FS
[   45.000100] PM: hibernation: hibernation entry
[   45.010000] Filesystems sync: 0.009 seconds
[   45.010100] Freezing user space processes
[   45.012345] Freezing user space processes completed (elapsed 0.002 seconds)
[   45.012400] OOM killer disabled.
[   45.012500] PM: hibernation: Preallocating image memory
[   49.512500] PM: hibernation: Allocated 70111 pages for snapshot
[   49.512600] PM: hibernation: Allocated 280444 kbytes in 4.50 seconds (62.32 MB/s)
[   49.512700] Freezing remaining freezable tasks
[   49.540000] Freezing remaining freezable tasks completed (elapsed 0.027 seconds)
[   49.700000] Disabling non-boot CPUs ...
[   49.710000] smpboot: CPU 1 is now offline
[   49.710100] PM: hibernation: Creating image:
[   49.750000] PM: hibernation: Need to copy 70111 pages
[   50.010100] PM: hibernation: Image created (70111 pages copied)
[   49.715200] Enabling non-boot CPUs ...
[   49.750000] CPU1 is up
[   50.300000] PM: Using 1 thread(s) for compression
[   50.300100] PM: Compressing and saving image data (31531 pages)...
[   50.310000] PM: Image saving progress:   0%
[   51.950000] PM: Image saving progress: 100%
[   51.960000] PM: hibernation: Wrote 126124 kbytes in 1.65 seconds (76.43 MB/s)
[   51.960100] PM: Image saving done
[   51.970000] PM: S|
[   52.100000] reboot: Power down
"""

BOOT2 = """\
SeaBIOS (version 1.16.2-debian-1.16.2-1)
[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-01)
[    0.000000] Command line: root=/dev/vda rw console=ttyS0 init=/lab-init panic=-1 resume=/dev/vdb no_console_suspend
Begin: Running /scripts/local-premount ... [    9.000000] PM: Image signature found, resuming
[    9.000100] PM: hibernation: resume from hibernation
[    9.010000] Freezing user space processes
[    9.011000] Freezing user space processes completed (elapsed 0.001 seconds)
[    9.011100] OOM killer disabled.
[    9.011200] Freezing remaining freezable tasks
[    9.020000] Freezing remaining freezable tasks completed (elapsed 0.008 seconds)
[    9.100000] PM: Using 3 thread(s) for decompression
[    9.100100] PM: Loading and decompressing image data (31531 pages)...
[    9.110000] PM: Image loading progress:   0%
[   11.180000] PM: Image loading progress: 100%
[   11.190000] PM: Image loading done
[   11.190100] PM: hibernation: Read 126124 kbytes in 2.09 seconds (60.34 MB/s)
[   11.300000] Disabling non-boot CPUs ...
[   11.310000] smpboot: CPU 1 is now offline
[   49.710050] Enabling non-boot CPUs ...
[   49.730000] CPU1 is up
[   50.400000] OOM killer enabled.
[   50.400100] Restarting tasks ... done.
[   50.500000] PM: hibernation: hibernation exit
"""


def test_split_two_boots():
    split = split_console(BOOT1 + BOOT2)
    assert split.boots == 2 and split.notes == []
    assert split.writer[0][3].startswith("Linux version 6.1.0-50-amd64")
    assert split.writer[-1][3] == "reboot: Power down"
    assert split.boot[-1][3] == "smpboot: CPU 1 is now offline"
    assert split.restored[0][3] == "Enabling non-boot CPUs ..."
    assert split.restored[-1][3] == "PM: hibernation: hibernation exit"

    w = {r[0]: r[1] for r in kernel_figures(split.writer)}
    assert w["write_kbytes"] == 126124 and w["write_ms"] == 1650 and w["write_mbps"] == 76.43
    assert w["write_pages"] == 31531 and w["copy_pages"] == 70111
    assert w["freeze_user_ms"] == 2 and w["freeze_kernel_ms"] == 27 and w["sync_ms"] == 9
    assert "read_kbytes" not in w
    b = {r[0]: r[1] for r in kernel_figures(split.boot)}
    assert b["read_kbytes"] == 126124 and b["read_ms"] == 2090 and b["read_pages"] == 31531
    assert b["decompress_threads"] == 3
    assert b["freeze_user_ms"] == 1  # the boot kernel's own freeze, not the writer's
    assert "write_kbytes" not in b
    assert kernel_figures(split.restored) == []
    # the writer's copy window from its own clock: Creating image: -> Image created
    assert copy_window_from_printk(split.writer)[1] == pytest.approx(300.0)
    assert copy_window_from_printk(split.boot) is None


def test_kernel_line_after_user_output_is_kept():
    recs = console_records(BOOT1)
    assert (None, 3_141_592, None,
            "virtio_blk virtio1: [vdb] 1048576 512-byte logical blocks (537 MB/512 MiB)") in recs
    assert all(not r[3].startswith(("Begin:", "SeaBIOS", "done.")) for r in recs)


def test_restored_clock_behind_boot_kernel():
    # the writer hibernated 5 s after boot, the boot kernel took 11 s: the clock steps back
    early = BOOT2.replace("[   49.710050]", "[    5.710050]").replace(
        "[   49.730000]", "[    5.730000]")
    split = split_console(BOOT1 + early)
    assert split.restored[0][1] == 5_710_050
    assert split.boot[-1][3] == "smpboot: CPU 1 is now offline"


def test_restored_clock_just_after_boot_kernel():
    # no step back and less than a second ahead: found by crossing the writer's copy time
    writer = BOOT1.replace("[   49.710000] smpboot", "[   11.400000] smpboot").replace(
        "[   49.710100] PM: hibernation: Creating", "[   11.400100] PM: hibernation: Creating")
    near = BOOT2.replace("[   49.710050]", "[   11.400050]").replace(
        "[   49.730000]", "[   11.420000]")
    split = split_console(writer + near)
    assert split.restored and split.restored[0][3] == "Enabling non-boot CPUs ..."


def test_failed_resume_recovers():
    failed = BOOT2.split("[   11.300000]")[0] + (
        "[   11.300000] PM: hibernation: Failed to load image, recovering.\n"
        "[   11.400000] PM: hibernation: resume failed (-22)\n"
        "[   12.000000] EXT4-fs (vda): mounted filesystem with ordered data mode.\n")
    split = split_console(BOOT1 + failed)
    assert split.restored == []
    assert split.boot[-1][3].startswith("EXT4-fs")
    assert "failed to load the image" in " ".join(split.notes)
    assert kernel_errors(split.boot) == ["PM: hibernation: Failed to load image, recovering.",
                                         "PM: hibernation: resume failed (-22)"]


def test_writer_only_and_no_write():
    split = split_console(BOOT1)
    assert split.boots == 1 and split.writer and not split.boot
    assert split.notes == ["no boot logged a resume from the image"]
    noswap = BOOT1.split("[   50.300000]")[0] + (
        "[   50.300000] PM: Cannot find swap device, try swapon -a\n"
        "[   50.400000] PM: hibernation: hibernation exit\n")
    split = split_console(noswap)
    assert "image not written" in split.notes[0]
    assert kernel_errors(split.writer) == ["PM: Cannot find swap device, try swapon -a"]


def test_three_boots_picks_the_pair():
    # an ordinary boot first (no hibernation), then the writer, then the resume
    plain = "[    0.000000] Linux version 6.1.0-50-amd64 (x)\n[    1.000000] hello\n"
    split = split_console(plain + BOOT1 + BOOT2)
    assert split.boots == 3
    assert any("hibernation entry" in r[3] for r in split.writer)
    assert split.restored


def test_empty_log():
    split = split_console("SeaBIOS\nBooting from ROM..\n")
    assert split.boots == 0 and split.writer == [] and split.notes
