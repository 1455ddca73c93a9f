"""The lab without a kernel: cache paths, host checks, recipe/idempotency, the build's
atomicity, QEMU command lines, console-log parsing, the supervisor (with a fake QEMU)
and the `snapprof lab` command line."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import textwrap
from collections import namedtuple
from pathlib import Path

import pytest

from snapprof import cli
from snapprof.errors import SnapprofError
from snapprof.lab import build, host, qemu
from snapprof.lab.hibernate import boot_failure

PANIC_LOG = """\
[    1.234567] Run /init as init process
[    2.000000] VFS: Cannot open root device "vdz" or unknown-block(0,0): error -6
[    2.000100] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)
[    2.000200] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0-50-amd64 #1  Debian 6.1.176-1
"""
GOOD_LOG = """\
[    0.000000] Linux version 6.12.57+deb13-amd64
[    3.100000] virtio_blk virtio1: [vda] 8388608 512-byte logical blocks
[    9.000000] EXT4-fs (vda): mounted filesystem with ordered data mode.

SNAPPROF_START uptime=9.51

SNAPPROF_EXIT=3
[   12.000000] sysrq: Power Off
"""


# ---- cache location and host checks -------------------------------------------------

def test_lab_dir_resolution(tmp_path):
    home = Path.home()
    assert host.lab_dir({}) == home / ".cache" / "snapprof" / "lab"
    assert host.lab_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "snapprof" / "lab"
    # a relative XDG_CACHE_HOME is invalid per the XDG spec and ignored
    assert host.lab_dir({"XDG_CACHE_HOME": "rel/cache"}) == home / ".cache" / "snapprof" / "lab"
    assert host.lab_dir({"XDG_CACHE_HOME": str(tmp_path), "SNAPPROF_LAB_DIR": str(tmp_path / "x")}) == tmp_path / "x"


def test_missing_tools_named_with_their_packages():
    with pytest.raises(SnapprofError) as exc:
        host.require_tools(["qemu-system-x86_64", "debootstrap", "qemu-img"],
                           finder=lambda n: "/usr/bin/qemu-img" if n == "qemu-img" else None)
    msg = str(exc.value)
    assert "qemu-system-x86_64 (Debian package qemu-system-x86)" in msg
    assert "debootstrap (Debian package debootstrap)" in msg
    assert "qemu-img" not in msg.split(";")[0]
    assert "apt-get install --no-install-recommends debootstrap qemu-system-x86" in msg
    assert "\n" not in msg
    assert host.require_tools(["qemu-img"], finder=lambda n: "/x/" + n) == {"qemu-img": "/x/qemu-img"}


def test_not_root():
    with pytest.raises(SnapprofError, match="needs root"):
        host.require_root("building the bookworm lab image", euid=1000)
    host.require_root("x", euid=0)


def test_too_little_disk(tmp_path):
    Usage = namedtuple("Usage", "total used free")
    small = lambda p: Usage(10 * host.GiB, 9 * host.GiB, 1 * host.GiB)  # noqa: E731
    with pytest.raises(SnapprofError, match=r"needs 5\.0 GiB free in .*only 1\.0 GiB free"):
        host.require_free_space(tmp_path / "not" / "yet", 5 * host.GiB, "building", usage=small)
    big = lambda p: Usage(10 * host.GiB, 0, 9 * host.GiB)  # noqa: E731
    assert host.require_free_space(tmp_path / "a", 5 * host.GiB, "building", usage=big) == 9 * host.GiB


# ---- distros and recipes --------------------------------------------------------------

def test_validate_distro(tmp_path):
    (tmp_path / "bookworm").touch()
    assert build.validate_distro("bookworm", tmp_path) == "bookworm"
    with pytest.raises(SnapprofError, match="unknown distro 'hamm2'"):
        build.validate_distro("hamm2", tmp_path)
    for bad in ("", "../etc", "Bookworm", "a b"):
        with pytest.raises(SnapprofError, match="bad distro name"):
            build.validate_distro(bad, tmp_path)


def test_recipe_hash_is_stable_and_sensitive(monkeypatch):
    h1 = build.recipe_hash(build.recipe("bookworm"))
    assert h1 == build.recipe_hash(build.recipe("bookworm"))
    assert h1 != build.recipe_hash(build.recipe("trixie"))
    monkeypatch.setattr(build, "PACKAGES", build.PACKAGES + ("strace",))
    assert build.recipe_hash(build.recipe("bookworm")) != h1
    monkeypatch.undo()
    monkeypatch.setattr(build, "CONFIGURE_VERSION", build.CONFIGURE_VERSION + 1)
    assert build.recipe_hash(build.recipe("bookworm")) != h1


def fake_image(lab: Path, distro: str, recipe_hash: str | None = None, skip: str = "") -> Path:
    d = lab / distro
    d.mkdir(parents=True)
    for name in ("disk.img", "vmlinuz", "initrd.img"):
        if name != skip:
            (d / name).write_bytes(b"x")
    if skip != "image.json":
        h = recipe_hash or build.recipe_hash(build.recipe(distro))
        (d / "image.json").write_text(json.dumps({"recipe_hash": h, "kernel_release": "6.1.0-50-amd64"}))
    return d


def test_image_status(tmp_path):
    fake_image(tmp_path, "bookworm")
    fake_image(tmp_path, "trixie", recipe_hash="0" * 16)
    fake_image(tmp_path, "forky", skip="image.json")  # an interrupted build: no stamp
    fake_image(tmp_path, "sid", skip="initrd.img")
    assert build.image_status("bookworm", tmp_path) == "ready"
    assert build.image_status("trixie", tmp_path) == "stale"
    assert build.image_status("forky", tmp_path) == "missing"
    assert build.image_status("sid", tmp_path) == "missing"
    assert build.load_image("bookworm", tmp_path).kernel_release == "6.1.0-50-amd64"


def test_ready_image_is_reused_without_root(tmp_path, monkeypatch):
    fake_image(tmp_path, "bookworm")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert build.ensure_image("bookworm", lab=tmp_path).disk == tmp_path / "bookworm" / "disk.img"
    fake_image(tmp_path, "trixie", recipe_hash="0" * 16)
    with pytest.raises(SnapprofError, match="needs root"):
        build.ensure_image("trixie", lab=tmp_path)


@pytest.fixture
def fake_debootstrap(monkeypatch):
    """Replace debootstrap by a function that lays out a tiny root file system."""
    calls = []

    def fake(distro, rootfs, debs, log_path, exe, progress, t0, pkgs=None):
        calls.append(distro)
        if os.environ.get("FAKE_DEBOOTSTRAP_FAIL"):
            rootfs.mkdir(parents=True)
            raise SnapprofError("debootstrap failed (exit 1): E: Couldn't download packages")
        rel = "6.1.0-50-amd64"
        for d in ("etc", f"lib/modules/{rel}", "boot", "var/lib/dpkg", "sbin", "var/cache/apt/archives"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        (rootfs / "boot" / f"vmlinuz-{rel}").write_bytes(b"kernel")
        (rootfs / "boot" / f"initrd.img-{rel}").write_bytes(b"initrd")
        (rootfs / "var/lib/dpkg/status").write_text(
            "Package: python3-bpfcc\nStatus: install ok installed\nVersion: 0.26.0+ds-1\n\n"
            "Package: python3\nStatus: install ok installed\nVersion: 3.11.2-1+b1\n")

    monkeypatch.setattr(build, "_debootstrap", fake)
    monkeypatch.setattr(host, "require_root", lambda *a, **k: None)
    if not host.find_tool("mkfs.ext4"):
        pytest.skip("mkfs.ext4 (e2fsprogs) is not installed")
    monkeypatch.setattr(build, "DISK_SIZE", "8M")
    return calls


def test_build_is_idempotent_and_rebuilds_on_recipe_change(tmp_path, fake_debootstrap, monkeypatch):
    img = build.ensure_image("bookworm", lab=tmp_path)
    assert fake_debootstrap == ["bookworm"]
    assert (img.kernel_release, img.bcc_version, img.python_version) == ("6.1.0-50-amd64", "0.26.0+ds-1", "3.11.2-1+b1")
    assert img.kernel.read_bytes() == b"kernel" and img.initrd.read_bytes() == b"initrd"
    assert not os.stat(img.disk).st_mode & stat.S_IWUSR  # the base image is read-only
    assert build.ensure_image("bookworm", lab=tmp_path) == img
    assert fake_debootstrap == ["bookworm"]  # not rebuilt
    monkeypatch.setattr(build, "CONFIGURE_VERSION", build.CONFIGURE_VERSION + 1)
    img2 = build.ensure_image("bookworm", lab=tmp_path)
    assert fake_debootstrap == ["bookworm", "bookworm"]
    assert img2.recipe_hash != img.recipe_hash
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") and p.is_dir()) == []


def test_failed_build_leaves_nothing_that_looks_complete(tmp_path, fake_debootstrap, monkeypatch):
    fake_image(tmp_path, "bookworm", recipe_hash="0" * 16)  # a stale image from an old recipe
    monkeypatch.setenv("FAKE_DEBOOTSTRAP_FAIL", "1")
    with pytest.raises(SnapprofError, match="debootstrap failed"):
        build.ensure_image("bookworm", lab=tmp_path)
    assert build.image_status("bookworm", tmp_path) == "stale"  # still the old one, never a half one
    assert not list(tmp_path.glob(".build-*"))


def test_interrupted_build_is_cleaned_by_the_next(tmp_path, fake_debootstrap):
    leftover = tmp_path / ".build-bookworm-99999" / "rootfs" / "etc"
    leftover.mkdir(parents=True)
    (leftover / "hostname").write_text("x")
    assert build.image_status("bookworm", tmp_path) == "missing"
    build.ensure_image("bookworm", lab=tmp_path)
    assert not (tmp_path / ".build-bookworm-99999").exists()
    assert build.image_status("bookworm", tmp_path) == "ready"


def test_debootstrap_progress_is_condensed():
    now = [0.0]
    seen = []
    p = build.DebootstrapProgress(seen.append, t0=0.0, every=10, clock=lambda: now[0])
    for i in range(50):
        now[0] = i * 0.5
        p.feed(f"I: Retrieving pkg{i} 1.0\n")
    p.feed("I: Unpacking the base system...\n")
    p.feed("E: Couldn't download http://deb.debian.org/x.deb\n")
    assert [s.split("] ")[1] for s in seen] == [
        "Retrieving pkg0 1.0", "Retrieving pkg20 1.0", "Retrieving pkg40 1.0", "Unpacking the base system..."]
    assert p.last_error == "Couldn't download http://deb.debian.org/x.deb"


def test_dpkg_version_reads_status(tmp_path):
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(
        "Package: python3-bpfcc\nStatus: deinstall ok config-files\nVersion: 0.1\n\n"
        "Package: python3-bpfcc\nStatus: install ok installed\nVersion: 0.31.0+ds-7\n")
    assert build.dpkg_version(tmp_path, "python3-bpfcc") == "0.31.0+ds-7"
    assert build.dpkg_version(tmp_path, "nope") == ""


# ---- console logs, arguments, command lines ---------------------------------------------

def test_boot_failure_detection():
    assert qemu.find_boot_failure(PANIC_LOG) == \
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
    assert qemu.find_boot_failure(GOOD_LOG) is None
    alert = "Begin: Running /scripts/local-block ... done.\nALERT!  /dev/vda does not exist.  Dropping to a shell!\n"
    assert qemu.find_boot_failure(alert) == "ALERT!  /dev/vda does not exist.  Dropping to a shell!"
    assert qemu.find_exit_status(GOOD_LOG) == 3
    assert qemu.find_exit_status(PANIC_LOG) is None


def test_parse_memory():
    assert qemu.parse_memory("2G") == "2048M"
    assert qemu.parse_memory("1536M") == "1536M"
    assert qemu.parse_memory(3072) == "3072M"
    assert qemu.parse_memory("4GiB") == "4096M"
    for bad in ("lots", "0", "-1G", "2T"):
        with pytest.raises(SnapprofError, match="bad memory size"):
            qemu.parse_memory(bad)
    with pytest.raises(SnapprofError, match="too small"):
        qemu.parse_memory("64M")


def test_job_script_quotes_and_sets_the_environment():
    s = qemu.job_script(["sh", "-c", "echo 'a b' $HOME; exit 3"], {"FOO": "x y"})
    assert "export PYTHONPATH=/project" in s and "export PYTHONDONTWRITEBYTECODE=1" in s
    assert "export FOO='x y'" in s
    assert s.rstrip().endswith("exec sh -c 'echo '\"'\"'a b'\"'\"' $HOME; exit 3'")
    with pytest.raises(SnapprofError, match="bad environment variable"):
        qemu.job_script(["true"], {"A-B": "1"})


def _img(tmp_path) -> build.Image:
    return build.Image("trixie", tmp_path, tmp_path / "disk.img", tmp_path / "vmlinuz", tmp_path / "initrd.img",
                       "6.12.57+deb13-amd64", "0.31.0", "3.13", "abc", {"init": "/sbin/snapprof-boot"})


def test_qemu_command(tmp_path):
    cmd = qemu.qemu_command(_img(tmp_path), "qemu", tmp_path / "ov.qcow2", tmp_path / "job", tmp_path / "out",
                            tmp_path / "out/console.log", tmp_path / "job.out", "3G", 2,
                            [qemu.Disk(tmp_path / "swap.img")], ["resume=/dev/vdb"], project=Path("/src"))
    line = " ".join(cmd)
    assert "-accel tcg -cpu max -m 3072M -smp 2" in line
    assert "-enable-kvm" not in line and "kvm" not in line
    append = cmd[cmd.index("-append") + 1]
    assert append.split() == ["root=/dev/vda", "rw", "console=ttyS0", "init=/sbin/snapprof-boot", "panic=-1",
                              "resume=/dev/vdb"]
    drives = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-drive"]
    assert drives == [f"file={tmp_path}/ov.qcow2,if=virtio,format=qcow2", f"file={tmp_path}/swap.img,if=virtio,format=raw"]
    shares = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-virtfs"]
    assert any("path=/src,mount_tag=snapprof_project" in s and s.endswith("readonly=on") for s in shares)
    assert any(f"path={tmp_path}/out,mount_tag=snapprof_output" in s and "readonly" not in s for s in shares)
    assert "-no-reboot" in cmd


def test_result_check_messages(tmp_path):
    base = dict(console_log=tmp_path / "console.log", duration_s=1.0, boot_s=None, guest_uptime_at_start_s=None,
                output="", qemu_returncode=0, output_dir=tmp_path, distro="bookworm", kernel_release="6.1")
    with pytest.raises(SnapprofError, match="did not finish within 30 s") as exc:
        qemu.GuestResult(returncode=None, timed_out=True, panic=None, timeout=30, **base).check()
    assert exc.value.exit_code == 124
    with pytest.raises(SnapprofError, match="did not boot or died: Kernel panic"):
        qemu.GuestResult(returncode=None, timed_out=False, panic="Kernel panic - not syncing: x", **base).check()
    assert qemu.GuestResult(returncode=3, timed_out=False, panic=None, **base).check().returncode == 3
    hung = qemu.GuestResult(returncode=None, timed_out=True, panic=None, timeout=1200,
                            last_line="[    0.889135] .... node  #0, CPUs:      #1", **base)
    assert boot_failure(hung, "boot 1").endswith(
        "(boot 1); QEMU was killed; console log " f"{tmp_path}/console.log; its console's last line: "
        "'[    0.889135] .... node  #0, CPUs:      #1'")


# ---- the supervisor, with a fake QEMU ----------------------------------------------------

FAKE_QEMU = textwrap.dedent("""\
    #!{python}
    import os, sys, time
    args = sys.argv[1:]
    def chardev(name):
        for i, a in enumerate(args):
            if a == "-chardev" and f"id={{name}}," in args[i + 1]:
                return args[i + 1].split("path=")[1]
    behaviour = os.environ["FAKE_QEMU"]
    count = os.environ.get("FAKE_QEMU_COUNT")
    if count:
        n = int(open(count).read() or 0) + 1 if os.path.exists(count) else 1
        open(count, "w").write(str(n))
        if behaviour == "panic-once":
            behaviour = "panic" if n == 1 else "exit3"
        if behaviour == "stall-once":
            behaviour = "stall" if n == 1 else "exit3"
    con = open(chardev("console"), "w")
    con.write("[    0.1] Linux version 6.1.0-50-amd64\\n"); con.flush()
    if behaviour == "panic":
        con.write("[    2.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\\n"); con.flush()
        time.sleep(60)
    elif behaviour == "stall":  # stops for good while booting, as a 7.3 kernel once did in CI
        con.write("[    0.000000] Probably due to long platform interrupts.\\x1b[31m\\n"); con.flush()
        time.sleep(60)
    elif behaviour == "hang":
        con.write("\\nSNAPPROF_START uptime=9.5\\n"); con.flush()
        time.sleep(60)
    elif behaviour == "exit3":
        con.write("\\nSNAPPROF_START uptime=9.5\\n"); con.flush()
        with open(chardev("job"), "w") as job:
            job.write("hello from the guest\\n")
        con.write("\\nSNAPPROF_EXIT=3\\n")
    elif behaviour == "fail":
        sys.stderr.write("qemu-system-x86_64: -drive file=x: Could not open 'x'\\n")
        sys.exit(1)
""")


@pytest.fixture
def fake_qemu(tmp_path, monkeypatch):
    if not host.find_tool("qemu-img"):
        pytest.skip("qemu-img (qemu-utils) is not installed")
    exe = tmp_path / "bin" / "qemu-system-x86_64"
    exe.parent.mkdir()
    exe.write_text(FAKE_QEMU.format(python=sys.executable))
    exe.chmod(0o755)
    real = host.find_tool
    monkeypatch.setattr(host, "find_tool", lambda n: str(exe) if n == "qemu-system-x86_64" else real(n))
    img_dir = tmp_path / "img"
    img_dir.mkdir()
    img = _img(img_dir)
    img.disk.write_bytes(b"\0" * 65536)
    return img


@pytest.mark.parametrize("behaviour", ["exit3", "panic", "hang", "fail"])
def test_supervisor_with_fake_qemu(fake_qemu, tmp_path, monkeypatch, behaviour):
    import io
    monkeypatch.setenv("FAKE_QEMU", behaviour)
    out = tmp_path / "out"
    stream = io.StringIO()
    if behaviour == "fail":
        with pytest.raises(SnapprofError, match="qemu-system-x86_64 failed .*Could not open"):
            qemu.run_guest(fake_qemu, ["true"], out, timeout=20, stream=stream)
        return
    if behaviour == "hang":  # a job that started and hangs is never taken for a stalled boot
        monkeypatch.setattr(qemu, "BOOT_STALL_S", 1)
    res = qemu.run_guest(fake_qemu, ["true"], out, timeout=4 if behaviour == "hang" else 30, stream=stream)
    assert res.console_log == out / "console.log" and res.console_log.exists()
    if behaviour == "exit3":
        assert (res.returncode, res.timed_out, res.panic) == (3, False, None)
        assert stream.getvalue() == res.output == "hello from the guest\n"
        assert res.boot_s is not None and res.guest_uptime_at_start_s == 9.5
    elif behaviour == "panic":
        assert res.returncode is None and not res.timed_out
        assert res.panic.startswith("Kernel panic - not syncing: Attempted to kill init!")
        assert res.duration_s < 20  # stopped soon after the panic, not at the timeout
        with pytest.raises(SnapprofError, match="did not boot or died"):
            res.check()
    else:
        assert res.timed_out and res.returncode is None and 4 <= res.duration_s < 20
        assert res.panic is None and res.last_line == "SNAPPROF_START uptime=9.5"
        with pytest.raises(SnapprofError, match="did not finish within 4 s.*last line: 'SNAPPROF_START"):
            res.check()


def test_a_kernel_dying_while_booting_a_fresh_disk_is_booted_once_more(fake_qemu, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_QEMU", "panic-once")
    monkeypatch.setenv("FAKE_QEMU_COUNT", str(tmp_path / "count"))
    res = qemu.run_guest(fake_qemu, ["true"], tmp_path / "out", timeout=30, stream=None)
    assert res.returncode == 3 and res.panic is None
    assert (tmp_path / "count").read_text() == "2"
    assert "Kernel panic" in (tmp_path / "out" / "console-attempt1.log").read_text()
    assert "failed before the job started (Kernel panic" in capsys.readouterr().err


def test_a_fresh_boot_that_stalls_before_the_job_is_stopped_and_booted_once_more(fake_qemu, tmp_path, monkeypatch,
                                                                                 capsys):
    monkeypatch.setattr(qemu, "BOOT_STALL_S", 2)
    monkeypatch.setenv("FAKE_QEMU", "stall-once")
    monkeypatch.setenv("FAKE_QEMU_COUNT", str(tmp_path / "count"))
    res = qemu.run_guest(fake_qemu, ["true"], tmp_path / "out", timeout=30, stream=None)
    assert res.returncode == 3 and res.panic is None and res.duration_s < 20
    assert (tmp_path / "count").read_text() == "2"
    assert "platform interrupts" in (tmp_path / "out" / "console-attempt1.log").read_text()
    err = capsys.readouterr().err
    assert "failed before the job started (the console was silent for 2 s while booting" in err
    assert "\\x1b[31m" in err and "\x1b" not in err  # the console's escape shown, never sent


def test_a_boot_that_stalls_twice_is_a_failure_with_its_last_line(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setattr(qemu, "BOOT_STALL_S", 2)
    monkeypatch.setenv("FAKE_QEMU", "stall")
    monkeypatch.setenv("FAKE_QEMU_COUNT", str(tmp_path / "count"))
    res = qemu.run_guest(fake_qemu, ["true"], tmp_path / "out", timeout=30, stream=None)
    assert (tmp_path / "count").read_text() == "2" and not res.timed_out and res.duration_s < 20
    assert res.panic.startswith("the console was silent for 2 s while booting "
                                "(last line: '[    0.000000] Probably due to long platform interrupts.\\x1b[31m')")
    with pytest.raises(SnapprofError, match="did not boot or died: the console was silent"):
        res.check()


def test_a_boot_with_state_is_not_stopped_for_silence(fake_qemu, tmp_path, monkeypatch):
    # boot 2 of a cycle reads the image in silence and runs no job of its own
    monkeypatch.setattr(qemu, "BOOT_STALL_S", 1)
    monkeypatch.setenv("FAKE_QEMU", "exit3")
    ov = tmp_path / "keep" / "root.qcow2"
    qemu.run_guest(fake_qemu, ["true"], tmp_path / "o1", overlay=ov, stream=None)
    monkeypatch.setenv("FAKE_QEMU", "stall")
    monkeypatch.setenv("FAKE_QEMU_COUNT", str(tmp_path / "count"))
    res = qemu.run_guest(fake_qemu, ["true"], tmp_path / "o2", overlay=ov, stream=None, timeout=4)
    assert res.timed_out and res.panic is None and 4 <= res.duration_s < 20
    assert (tmp_path / "count").read_text() == "1"


def test_last_line_is_terminal_safe_and_short():
    assert qemu.last_line("a\nb\x1b[2J\n\n  \n") == "b\\x1b[2J"
    assert qemu.last_line("") is None and qemu.last_line("\n \n") is None
    long = qemu.last_line("x" * 500)
    assert len(long) == 200 and long.endswith("…")


def test_a_boot_with_state_is_never_retried(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU", "exit3")
    ov = tmp_path / "keep" / "root.qcow2"
    qemu.run_guest(fake_qemu, ["true"], tmp_path / "o1", overlay=ov, stream=None)  # boot 1
    monkeypatch.setenv("FAKE_QEMU", "panic")
    monkeypatch.setenv("FAKE_QEMU_COUNT", str(tmp_path / "count"))
    res = qemu.run_guest(fake_qemu, ["true"], tmp_path / "o2", overlay=ov, stream=None, timeout=30)
    assert res.panic and (tmp_path / "count").read_text() == "1"  # boot 2 (a resume) not retried


def test_kept_overlay_must_match_the_image(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU", "exit3")
    ov = tmp_path / "keep" / "root.qcow2"
    qemu.run_guest(fake_qemu, ["true"], tmp_path / "o1", overlay=ov, stream=None)
    assert ov.exists()  # kept for a second boot
    assert qemu.run_guest(fake_qemu, ["true"], tmp_path / "o2", overlay=ov, stream=None).returncode == 3
    other = tmp_path / "other.raw"
    other.write_bytes(b"\0" * 65536)
    bad = qemu.create_overlay(other, tmp_path / "bad.qcow2")
    with pytest.raises(SnapprofError, match="is not backed by the trixie image"):
        qemu.run_guest(fake_qemu, ["true"], tmp_path / "o3", overlay=bad, stream=None)


# ---- the command line --------------------------------------------------------------------

def test_cli_parsing():
    p = cli.build_parser()
    a = p.parse_args(["lab", "run", "--distro", "trixie", "--timeout", "60", "-o", "out", "--",
                      "python3", "-m", "snapprof", "--version"])
    assert (a.lab_command, a.distro, a.timeout, a.output, a.memory, a.cpus) == ("run", "trixie", 60, "out", "2G", 2)
    assert [x for x in a.cmd if x != "--"] == ["python3", "-m", "snapprof", "--version"]
    a = p.parse_args(["lab", "build"])
    assert (a.lab_command, a.distro, a.force) == ("build", "bookworm", False)


@pytest.mark.parametrize("argv, message", [
    (["lab", "build", "--distro", "hamm2"], "unknown distro 'hamm2'"),
    (["lab", "run", "--distro", "nosuch", "--", "true"], "unknown distro 'nosuch'"),
    (["lab", "run"], "no command to run in the guest"),
    (["lab", "run", "--"], "no command to run in the guest"),
])
def test_cli_bad_input_is_one_line(argv, message, capsys):
    if not build.DEBOOTSTRAP_SCRIPTS.is_dir() and "distro" in message:
        pytest.skip("debootstrap is not installed: suites cannot be checked")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_missing_qemu_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SNAPPROF_LAB_DIR", str(tmp_path))
    fake_image(tmp_path, "bookworm")
    monkeypatch.setattr(host, "find_tool", lambda n: None)
    assert cli.main(["lab", "run", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "missing host tools: qemu-system-x86_64 (Debian package qemu-system-x86)" in err
    assert err.count("\n") == 1


def test_cli_status_and_up_to_date_build(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SNAPPROF_LAB_DIR", str(tmp_path))
    fake_image(tmp_path, "bookworm")
    fake_image(tmp_path, "trixie", recipe_hash="0" * 16)
    assert cli.main(["lab", "status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"lab cache: {tmp_path}"
    assert out[1].split()[:2] == ["bookworm", "ready"] and "kernel 6.1.0-50-amd64" in out[1]
    assert out[2].split()[:2] == ["trixie", "stale"]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # a current image needs no root
    assert cli.main(["lab", "build"]) == 0
    assert "bookworm image is up to date" in capsys.readouterr().err
    assert cli.main(["lab", "build", "--distro", "trixie"]) == 2  # stale: a rebuild needs root
    assert "needs root" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["guest-init.sh", "guest-boot.sh"])
def test_guest_scripts_are_valid_posix_sh(script):
    sh = shutil.which("dash") or shutil.which("sh")
    path = Path(build.__file__).with_name(script)
    import subprocess
    proc = subprocess.run([sh, "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
