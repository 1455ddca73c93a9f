"""Boot a lab guest's own kernel under QEMU (TCG) and run one command in it.

    from snapprof.lab.qemu import run_guest
    res = run_guest("trixie", ["python3", "-m", "snapprof", "--version"], "out/")
    res.check()          # SnapprofError on timeout, kernel panic or a guest that never ran CMD
    res.returncode, res.output, res.console_log, res.boot_s, res.duration_s

Inside the guest (see guest-init.sh): CMD runs as root in /project, the project tree
(snapprof.paths.project_root()) shared read-only over 9p; /output is the host's output
folder, read-write; proc, sys, devtmpfs, devpts, debugfs, tracefs and bpffs are mounted;
PYTHONPATH=/project, PYTHONDONTWRITEBYTECODE=1, SNAPPROF_OUTPUT=/output. CMD's stdout and
stderr (one stream) come back on a second serial port and are streamed to `stream`; the
kernel console (ttyS0) is kept as <output>/console.log. When CMD ends the guest syncs and
powers off.

Disks: /dev/vda is the root file system, a qcow2 overlay on the cached base image (the
base is never written); extra disks follow as /dev/vdb, /dev/vdc... To keep a guest's
state across two boots (e.g. hibernate to a swap disk, then boot again with
`resume=/dev/vdb`), pass the same `overlay` path and `extra_disks` to both runs:

    ov = Path("work/root.qcow2")                       # created on first use, then reused
    swap = create_disk(Path("work/swap.img"), "1G")    # raw, sparse
    run_guest("bookworm", ["sh", "-c", "mkswap /dev/vdb && swapon /dev/vdb && echo disk > /sys/power/state"],
              out1, overlay=ov, extra_disks=[swap], extra_append=["resume=/dev/vdb", "no_console_suspend"])
    run_guest("bookworm", ["true"], out2, overlay=ov, extra_disks=[swap],
              extra_append=["resume=/dev/vdb", "no_console_suspend"])

Measured on bookworm: the first run hibernates and powers off (returncode None, no panic);
the second boot's initramfs loads the image and the restored CMD carries on: its output
arrives on the second run's stream and its exit status in the second run's returncode
(the SNAPPROF_EXIT marker on the console). But the 9p shares do not survive the resume
(virtio-9p has no PM restore, so any access to /project or /output after it hangs): a
job that hibernates must import everything it needs before, and after the resume report
through stdout or the outbox, not through /output.

The outbox survives all of that: files CMD writes to $SNAPPROF_OUTBOX (/run/snapprof-outbox,
a tmpfs, so it is part of a hibernation image) are packed by the guest init, when CMD
ends, onto one more virtio disk (after the extra disks), and unpacked by the host into
the output folder. Use it for results produced after a /dev/snapshot cycle or a resume:
any freeze/thaw of devices kills the 9p shares (virtio-9p has no PM callbacks), so /output
and /project hang from then on. The outbox disk is 256 MiB unless `outbox_size` says more.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

from snapprof.errors import SnapprofError
from snapprof.lab import build, host
from snapprof.paths import project_root
from snapprof.termsafe import visible

GUEST_INIT = Path(__file__).with_name("guest-init.sh")
GUEST_PROJECT = "/project"
GUEST_OUTPUT = "/output"
GUEST_OUTBOX = "/run/snapprof-outbox"

# Lines in a console log that mean the guest failed to boot or died.
BOOT_FAILURES = (
    re.compile(r"Kernel panic - not syncing: ?(.*)"),
    re.compile(r"ALERT! +(.*?)(?: Dropping to a shell!)?$"),
    re.compile(r"snapprof-boot: (cannot mount the job share.*)"),
    re.compile(r"(Kernel Offset: .*)?VFS: (Unable to mount root fs.*)"),
)
START_RE = re.compile(rb"SNAPPROF_START uptime=([0-9.]+)")
# A fresh boot whose console says nothing for this long before the job starts has hung
# (seen once in CI: a 7.3 kernel stopped for good while bringing up its second CPU under
# TCG, and QEMU ran to the 1200 s timeout). In 146 lab boots kept on this project's host
# that reached their job, the longest silence before it was 33 s on the guests' clocks
# (which follow the host's under TCG), the latest job start 90 s after power-on.
BOOT_STALL_S = 240
EXIT_RE = re.compile(r"SNAPPROF_EXIT=(\d+)")


@dataclass(frozen=True)
class Disk:
    """An extra virtio disk. format: 'raw' or 'qcow2'."""

    path: Path
    format: str = "raw"


@dataclass
class GuestResult:
    """What one boot did.

    returncode: CMD's exit status; None when CMD never finished (timeout, panic, a guest
        that hibernated and powered off, a boot that never reached CMD).
    timed_out: the host killed QEMU after `timeout` seconds.
    console_log: the kernel console (ttyS0) of this boot.
    duration_s: host wall time from starting QEMU to its exit.
    boot_s: host wall time from starting QEMU to CMD starting (None if it never started).
    guest_uptime_at_start_s: the guest's /proc/uptime when CMD started.
    output: CMD's stdout+stderr, as streamed.
    outbox_files: files CMD left in $SNAPPROF_OUTBOX, now in output_dir.
    panic: the line that shows the guest died or could not boot, else None; or, for a
        fresh boot that stalled before the job started, that it stalled and its last line.
    last_line: the console's last line that is not blank (control characters as escapes,
        cut to 200 characters), None for an empty console: where a guest that hung stopped.
    """

    returncode: int | None
    timed_out: bool
    console_log: Path
    duration_s: float
    boot_s: float | None
    guest_uptime_at_start_s: float | None
    output: str
    panic: str | None
    qemu_returncode: int | None
    output_dir: Path
    distro: str
    kernel_release: str
    timeout: float | None = None
    outbox_files: list[str] = field(default_factory=list)
    last_line: str | None = None

    def where(self) -> str:
        """'; its console's last line: ...' for a message, or '' when the console was empty."""
        return f"; its console's last line: '{self.last_line}'" if self.last_line else ""

    def check(self) -> "GuestResult":
        """Raise SnapprofError unless CMD ran to the end (its status may be non-zero)."""
        if self.timed_out:
            raise SnapprofError(
                f"the {self.distro} guest did not finish within {self.timeout:g} s; QEMU was killed "
                f"(console log: {self.console_log}){self.where()}; raise --timeout if the job is just slow",
                exit_code=124,
            )
        if self.panic:
            raise SnapprofError(
                f"the {self.distro} guest did not boot or died: {self.panic} (console log: {self.console_log}); "
                f"rebuild the image with `snapprof lab build --force --distro {self.distro}` if this persists"
            )
        if self.returncode is None:
            raise SnapprofError(
                f"the {self.distro} guest stopped before the command finished (QEMU exit {self.qemu_returncode}); "
                f"see the console log {self.console_log}"
            )
        return self


def find_boot_failure(console_text: str) -> str | None:
    """The first line of a console log that shows a kernel panic or a failed boot."""
    for line in console_text.splitlines():
        line = line.strip()
        for pat in BOOT_FAILURES:
            m = pat.search(line)
            if m:
                return visible(line[m.start():])
    return None


def find_exit_status(console_text: str) -> int | None:
    found = EXIT_RE.findall(console_text)
    return int(found[-1]) if found else None


def parse_memory(memory: str | int) -> str:
    """QEMU's -m value from '2G', '1536M' or a number of MiB; SnapprofError if malformed."""
    m = re.fullmatch(r"\s*(\d+)\s*([MmGg]?)i?[Bb]?\s*", str(memory))
    if not m or int(m.group(1)) == 0:
        raise SnapprofError(f"bad memory size {memory!r}: use e.g. 2G or 1536M")
    mib = int(m.group(1)) * (1024 if m.group(2).upper() == "G" else 1)
    if mib < 256:
        raise SnapprofError(f"memory {memory!r} is too small for a lab guest: give at least 256M")
    return f"{mib}M"


def create_overlay(base: Path, path: Path) -> Path:
    """A qcow2 file at `path` backed by the raw `base` image (the base stays untouched)."""
    tools = host.require_tools(["qemu-img"])
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_run([tools["qemu-img"], "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(Path(base).absolute()),
                str(path)], "qemu-img create")
    return path


def create_disk(path: Path, size: str, format: str = "raw") -> Disk:
    """A new empty (sparse) disk for extra_disks, e.g. a swap disk for hibernation."""
    tools = host.require_tools(["qemu-img"])
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_run([tools["qemu-img"], "create", "-q", "-f", format, str(path), size], "qemu-img create")
    return Disk(Path(path), format)


def _backing_file(overlay: Path) -> str | None:
    tools = host.require_tools(["qemu-img"])
    proc = subprocess.run([tools["qemu-img"], "info", "-U", "--output=json", str(overlay)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SnapprofError(f"cannot read the overlay {overlay}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout).get("backing-filename")


def unpack_outbox(disk: Path, output_dir: Path) -> list[str]:
    """Extract the tar the guest init wrote on the outbox disk into output_dir; the names
    extracted (none if the guest wrote nothing)."""
    import tarfile

    with open(disk, "rb") as f:
        head = f.read(512)
    if not head.strip(b"\0"):
        return []
    try:
        with tarfile.open(disk, "r:") as tar:
            members = [m for m in tar.getmembers() if m.name not in (".", "./")]
            tar.extractall(output_dir, members=members, filter="data")
            return sorted(m.name.removeprefix("./") for m in members if m.isfile())
    except (tarfile.TarError, OSError) as exc:
        raise SnapprofError(f"cannot unpack the guest's outbox into {output_dir}: {exc}") from None


def _check_run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SnapprofError(f"{what} failed: {last}")


def job_script(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    """The guest-side script that runs argv with the lab environment."""
    envs = {
        "HOME": "/root",
        "PYTHONPATH": GUEST_PROJECT,
        "PYTHONDONTWRITEBYTECODE": "1",
        "SNAPPROF_OUTPUT": GUEST_OUTPUT,
        "SNAPPROF_PROJECT": GUEST_PROJECT,
        "SNAPPROF_OUTBOX": GUEST_OUTBOX,
        "LC_ALL": "C.UTF-8",
    }
    envs.update(env or {})
    lines = ["# written by snapprof.lab.qemu"]
    for k, v in envs.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise SnapprofError(f"bad environment variable name {k!r}")
        lines.append(f"export {k}={shlex.quote(v)}")
    lines.append(f"cd {GUEST_PROJECT} || exit 125")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


def qemu_command(
    img: build.Image,
    qemu: str,
    overlay: Path,
    job_dir: Path,
    output_dir: Path,
    console_log: Path,
    job_out: Path | None,
    memory: str = "2G",
    cpus: int = 2,
    extra_disks: Sequence[Disk] = (),
    extra_append: Sequence[str] = (),
    project: Path | None = None,
) -> list[str]:
    """The qemu-system-x86_64 command line for one boot (job_out None: job port on stdio)."""
    append = ["root=/dev/vda", "rw", "console=ttyS0", f"init={img.init_path}", "panic=-1", *extra_append]
    cmd = [
        qemu, "-accel", "tcg", "-cpu", "max", "-m", parse_memory(memory), "-smp", str(int(cpus)),
        "-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none",
        "-kernel", str(img.kernel), "-initrd", str(img.initrd), "-append", " ".join(append),
        "-drive", f"file={overlay},if=virtio,format=qcow2",
    ]
    for d in extra_disks:
        cmd += ["-drive", f"file={d.path},if=virtio,format={d.format}"]
    share = "local,security_model=none,path={},mount_tag={}"
    cmd += ["-virtfs", share.format(job_dir, "snapprof_job")]
    cmd += ["-virtfs", share.format(project or project_root(), "snapprof_project") + ",readonly=on"]
    cmd += ["-virtfs", share.format(output_dir, "snapprof_output")]
    cmd += ["-chardev", f"file,id=console,path={console_log}", "-serial", "chardev:console"]
    if job_out is None:
        cmd += ["-chardev", "stdio,id=job,signal=off", "-serial", "chardev:job"]
    else:
        cmd += ["-chardev", f"file,id=job,path={job_out}", "-serial", "chardev:job"]
    return cmd


def _as_disk(d) -> Disk:
    if isinstance(d, Disk):
        return Disk(Path(d.path).absolute(), d.format)
    p = Path(d).absolute()
    try:
        with open(p, "rb") as f:
            fmt = "qcow2" if f.read(4) == b"QFI\xfb" else "raw"
    except OSError as exc:
        raise SnapprofError(f"cannot open extra disk {p}: {exc.strerror}") from None
    return Disk(p, fmt)


def run_guest(
    distro: str | build.Image,
    argv: Sequence[str],
    output_dir: str | os.PathLike | None = None,
    memory: str | int = "2G",
    cpus: int = 2,
    timeout: float | None = 900,
    extra_disks: Sequence[str | os.PathLike | Disk] | None = None,
    overlay: str | os.PathLike | None = None,
    extra_append: Sequence[str] | str | None = None,
    stream: IO[str] | None | str = "stdout",
    env: dict[str, str] | None = None,
    interactive: bool = False,
    progress=None,
    outbox_size: str = "256M",
) -> GuestResult:
    """Boot the `distro` lab guest (building its image first if needed), run `argv` in it
    and return a GuestResult. Does not raise for the guest's own failures: call
    .check() for that. Raises SnapprofError for bad arguments or a missing host tool.

    output_dir: host folder shared read-write at /output (created; default: a new
        temporary folder); console.log is written there.
    timeout: seconds before QEMU is killed (None: no limit).
    overlay: a qcow2 root-disk overlay to create (if missing) or reuse (if present), kept
        after the run; default: a throw-away overlay.
    extra_disks: paths (raw or qcow2, detected) or Disk objects: /dev/vdb, /dev/vdc...
    extra_append: extra kernel command-line arguments (list, or one string).
    stream: where CMD's output is written as it arrives (default: sys.stdout at call
        time; None: only collected in GuestResult.output).
    env: extra environment variables for CMD.
    interactive: connect the job port to this terminal and run a login shell (argv ignored).
    outbox_size: size of the outbox disk (see the module's docstring).
    """
    if stream == "stdout":
        stream = sys.stdout
    img = distro if isinstance(distro, build.Image) else build.ensure_image(distro, progress=progress)
    tools = host.require_tools(host.RUN_TOOLS)
    if not interactive and not argv:
        raise SnapprofError("no command given to run in the guest (put it after --)")
    if int(cpus) < 1:
        raise SnapprofError(f"bad --cpus {cpus}: give 1 or more")
    if timeout is not None and timeout <= 0:
        raise SnapprofError(f"bad timeout {timeout}: give a number of seconds > 0")
    if isinstance(extra_append, str):
        extra_append = extra_append.split()
    disks = [_as_disk(d) for d in (extra_disks or [])]
    memory = parse_memory(memory)

    out = Path(output_dir).absolute() if output_dir else Path(tempfile.mkdtemp(prefix="snapprof-lab-"))
    out.mkdir(parents=True, exist_ok=True)
    console_log = out / "console.log"
    fresh = overlay is None or not Path(overlay).exists()
    # A fresh boot (no state on its root disk) that has not started the job is stopped when
    # its console stays silent for BOOT_STALL_S: it has hung. Never a boot with state: a
    # resume boot is silent while it reads the image, and then runs no job of its own.
    stall_s = BOOT_STALL_S if fresh and not interactive else None
    for attempt in (1, 2):
        result = _run_once(img, tools, argv, out, console_log, memory, cpus, timeout, disks, overlay,
                           extra_append, stream, env, interactive, outbox_size, stall_s)
        # A kernel that dies or hangs while booting, before the job started, on a fresh root
        # disk (TCG now and then trips over the kernel's own text patching: "Oops: int3" in
        # sched_clock_cpu at 6 s; once, a 7.3 kernel stopped bringing up its second CPU): boot
        # once more and say so. Never after the job started, and never on a disk with state
        # (a resume boot must not be silently retried).
        if attempt == 2 or interactive or not fresh or not result.panic or result.boot_s is not None:
            return result
        kept = out / "console-attempt1.log"
        shutil.copyfile(console_log, kept)
        note = (f"snapprof lab: the {img.distro} guest failed before the job started ({result.panic}); "
                f"booting once more (first console log: {kept})\n")
        sys.stderr.write(note)
        if overlay is not None:
            Path(overlay).unlink(missing_ok=True)
    return result


def _run_once(img, tools, argv, out, console_log, memory, cpus, timeout, disks, overlay,
              extra_append, stream, env, interactive, outbox_size, stall_s) -> GuestResult:
    work = Path(tempfile.mkdtemp(prefix="snapprof-run-"))
    try:
        if overlay is None:
            ov = create_overlay(img.disk, work / "root.qcow2")
        else:
            ov = Path(overlay).absolute()
            if not ov.exists():
                create_overlay(img.disk, ov)
            elif Path(_backing_file(ov) or "") != img.disk.absolute():
                raise SnapprofError(f"overlay {ov} is not backed by the {img.distro} image {img.disk}; "
                                    f"use a new overlay path")
        job_dir = work / "job"
        job_dir.mkdir()
        shutil.copyfile(GUEST_INIT, job_dir / "guest-init.sh")
        outbox = create_disk(work / "outbox.img", outbox_size)
        conf = {"MODE": "shell" if interactive else "run", "OUTBOX_DEV": "/dev/vd" + chr(ord("b") + len(disks))}
        if interactive and sys.stdout.isatty():
            size = shutil.get_terminal_size()
            conf.update(ROWS=str(size.lines), COLS=str(size.columns))
        (job_dir / "job.conf").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in conf.items()))
        # The recorder keeps the image it ran in (suite, or suite:kernel) as lab_distro.
        env = {"SNAPPROF_LAB_DISTRO": img.distro, **(env or {})}
        (job_dir / "job.sh").write_text(job_script(argv if not interactive else ["/bin/bash", "-l"], env))
        job_out = None if interactive else work / "job.out"
        if job_out:
            job_out.touch()
        console_log.write_bytes(b"")
        cmd = qemu_command(img, tools["qemu-system-x86_64"], ov, job_dir, out, console_log, job_out,
                           memory, cpus, [*disks, outbox], list(extra_append or ()))
        result = _supervise(cmd, img, out, console_log, job_out, work, stream, timeout, interactive, stall_s)
        result.outbox_files = unpack_outbox(outbox.path, out)
        status_file = job_dir / "exit-status"
        if result.returncode is None and status_file.exists():
            try:
                result.returncode = int(status_file.read_text().strip())
            except ValueError:
                pass
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _die_with_parent() -> None:
    """In the QEMU child, before exec: the kernel kills QEMU if snapprof dies (even by
    SIGKILL), so no guest is left running without its supervisor."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def last_line(console_text: str) -> str | None:
    """The console's last line that is not blank, terminal-safe and at most 200 characters."""
    for line in reversed(console_text.splitlines()):
        if line.strip():
            line = visible(line.strip())
            return line if len(line) <= 200 else line[:199] + "…"
    return None


def _supervise(cmd, img, out, console_log, job_out, work, stream, timeout, interactive,
               stall_s=None) -> GuestResult:
    """Run QEMU to its end, the timeout, a panic (3 s after it), or, with stall_s, a console
    silent for stall_s seconds before the job started (recorded as `panic`)."""
    qemu_err = work / "qemu.stderr"
    t0 = time.monotonic()
    deadline = None if timeout is None else t0 + timeout
    with open(qemu_err, "wb") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=None if interactive else subprocess.DEVNULL,
            stderr=err,
            start_new_session=not interactive,
            preexec_fn=_die_with_parent,
        )
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    collected: list[str] = []
    job_f = open(job_out, "rb") if job_out else None
    con_f = open(console_log, "rb")
    console = bytearray()
    boot_s = uptime = None
    panic = None
    panic_seen_at = None
    timed_out = False
    stalled = False
    heard = t0

    def pump() -> None:
        nonlocal boot_s, uptime, panic, panic_seen_at, heard
        if job_f:
            chunk = job_f.read()
            if chunk:
                text = decoder.decode(chunk)
                collected.append(text)
                if stream is not None:
                    stream.write(text)
                    stream.flush()
        chunk = con_f.read()
        if chunk:
            heard = time.monotonic()
            console.extend(chunk)
            if boot_s is None:
                m = START_RE.search(console)
                if m:
                    boot_s = time.monotonic() - t0
                    uptime = float(m.group(1))
            if panic is None and EXIT_RE.search(console.decode("utf-8", "replace")) is None:
                panic = find_boot_failure(console.decode("utf-8", "replace"))
                if panic:
                    panic_seen_at = time.monotonic()

    try:
        while proc.poll() is None:
            pump()
            now = time.monotonic()
            if deadline is not None and now > deadline:
                timed_out = True
                break
            if panic_seen_at is not None and now - panic_seen_at > 3:
                break  # give the kernel 3 s to print the trace, then stop the guest
            if stall_s is not None and boot_s is None and panic is None and now - heard > stall_s:
                stalled = True
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            _stop(proc)
        pump()
        if job_f:
            job_f.close()
        con_f.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            collected.append(tail)
            if stream is not None:
                stream.write(tail)
                stream.flush()
    duration = time.monotonic() - t0
    text = console.decode("utf-8", "replace")
    rc = find_exit_status(text)
    tail = last_line(text)
    if stalled:  # set only before the job started, so there is no exit status to weigh
        panic = f"the console was silent for {stall_s:g} s while booting (last line: '{tail or ''}'); QEMU was stopped"
    if rc is not None:
        panic = None
    elif proc.returncode not in (0, None) and not timed_out and not panic and boot_s is None:
        qerr = qemu_err.read_text(errors="replace").strip().splitlines()
        raise SnapprofError(f"qemu-system-x86_64 failed (exit {proc.returncode}): "
                            f"{qerr[-1] if qerr else 'no message'}")
    return GuestResult(
        returncode=rc,
        timed_out=timed_out,
        console_log=console_log,
        duration_s=round(duration, 2),
        boot_s=None if boot_s is None else round(boot_s, 2),
        guest_uptime_at_start_s=uptime,
        output="".join(collected),
        panic=panic,
        qemu_returncode=proc.returncode,
        output_dir=out,
        distro=img.distro,
        kernel_release=img.kernel_release,
        timeout=timeout,
        last_line=tail,
    )


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
