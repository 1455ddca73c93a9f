"""The systemd lab guest: hibernation the way users start it (`systemctl hibernate`).

**The image** (key ``SUITE+systemd``, e.g. ``trixie+systemd``): the suite's cached image
(kernel, bcc, Python, byte for byte) plus the suite's systemd, systemd-sysv, udev and dbus,
installed with the guest's own apt; it boots with ``init=/usr/lib/systemd/systemd``. A unit,
snapprof-lab.service, runs /sbin/snapprof-systemd-job (guest-systemd.sh) once the boot has
finished: it mounts the run's 9p job share and hands over to the run's guest-init.sh like
the other guests' init does, so `snapprof lab run` and the two-boot hibernation path work
unchanged (the job runs in system.slice). What a lab guest does not need is masked (gettys:
ttyS1 carries the job's output; apt's and the file systems' timers; first-boot prompts);
the journal is volatile (in /run, so it is part of the hibernation image) and systemd shows
only errors on the console (its status lines would interleave with the kernel's).

**A hibernation through systemd** (`systemd_hibernate`, the lab test's library call): the
two boots of snapprof.lab.hibernate.one_cycle with another boot-1 job (`guest_job`): swap
on; `snapprof service install` (the package's own unit, from a tmpfs copy of the tree: the
9p shares do not survive a resume); a process in user.slice to be frozen; then
``systemctl hibernate`` run from a scope in user.slice. systemd-sleep freezes user.slice,
writes ``disk`` to /sys/power/state; the kernel writes the image and powers off. Boot 2
resumes it: systemd-sleep returns, the service records the cycle. The job then checks that
the service and the user.slice process came through, stops the service (its capture
closed), and leaves the capture on the result disk and the journal in the outbox.

**systemd's part of the time** (snapprof.record.journal): the service's recorder reads it
from the journal after the cycle; the lab reads the same from the journal the guest leaves
(journal.json, the restored system's) and adds what the recorder's run lacks. PID 1 logs
user.slice's freezer state changes only at debug level (guest_job(debug=True)).

**A freeze held up** (guest_job(blocker=True)): before the cycle, a cycle that fails. A FUSE
file system whose daemon never answers, and a process in user.slice stuck on it (state D in
fuse_get_req): systemd-sleep waits 60 s for user.slice to freeze, gives up and hibernates
anyway; the kernel's freezer fails on the same process (pm_freeze_timeout 3 s for it); the
service records the failed cycle with the process named twice, as the kernel's culprit and
as what held up systemd's cgroup freeze. The job then aborts the FUSE connection (the process
exits) and runs the cycle above.
Standard library only (the lab's host side).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import IO

from snapprof.errors import SnapprofError
from snapprof.record.journal import (  # noqa: F401  (the journal's figures, read here too)
    JOURNAL_FIELDS, JOURNAL_SOURCE, METHOD, SPANS, journal_figures, read_journal, sleep_marks)

VARIANT = "systemd"
PACKAGES = ("systemd", "systemd-sysv", "udev", "dbus")
INIT = "/usr/lib/systemd/systemd"
VARIANT_VERSION = 1  # the steps below that turn a suite's image into its systemd variant
JOB_STARTER = Path(__file__).with_name("guest-systemd.sh")
JOB_STARTER_PATH = "/sbin/snapprof-systemd-job"
LAB_UNIT = "snapprof-lab.service"
UNIT_TEXT = f"""\
# snapprof lab: the run's job (guest-init.sh from the 9p job share), once the boot finished
[Unit]
Description=snapprof lab job
After=basic.target

[Service]
Type=simple
ExecStart={JOB_STARTER_PATH}
StandardInput=null
StandardOutput=journal+console
StandardError=journal+console
KillMode=process

[Install]
WantedBy=multi-user.target
"""
# Units a lab guest does not need (masked: they cost boot time under TCG, or prompt).
MASKED = (
    "getty.target", "getty@.service", "serial-getty@.service", "console-getty.service",
    "systemd-firstboot.service", "apt-daily.timer", "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer", "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
    "systemd-tmpfiles-clean.timer", "systemd-networkd.service", "systemd-networkd.socket",
    "systemd-timesyncd.service", "systemd-pstore.service", "remote-fs.target",
    # every boot of an overlay on the never-written base is "the first after an update"
    "ldconfig.service", "systemd-update-done.service", "systemd-hwdb-update.service",
    "systemd-journal-catalog-update.service",
    "modprobe@drm.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
)
CONFIG = {
    # the journal in /run: in the hibernation image, and nothing written to the root disk
    "etc/systemd/journald.conf.d/50-snapprof-lab.conf":
        "[Journal]\nStorage=volatile\nRuntimeMaxUse=64M\nForwardToConsole=no\n",
    # only errors on the console: status lines would interleave with the kernel's lines
    "etc/systemd/system.conf.d/50-snapprof-lab.conf": "[Manager]\nShowStatus=error\n",
}


def split(key: str) -> tuple[str, str | None]:
    """An image key -> (the key without the init variant, the variant or None):
    "trixie+systemd" -> ("trixie", "systemd"); "trixie" -> ("trixie", None). The variant
    goes with the suite, before any ":RELEASE" (a release may hold "+": 7.3.4+deb13-amd64)."""
    suite, colon, release = (key or "").partition(":")
    base, sep, variant = suite.partition("+")
    return (base + colon + release, variant) if sep else (key, None)


def recipe_part() -> dict:
    """What the systemd variant adds to its suite's recipe (its hash decides rebuilds)."""
    return {
        "init_variant": VARIANT,
        "init": INIT,
        "init_packages": sorted(PACKAGES),
        "init_variant_version": VARIANT_VERSION,
        "init_files_sha256": hashlib.sha256(
            JOB_STARTER.read_bytes() + UNIT_TEXT.encode()
            + json.dumps([MASKED, CONFIG], sort_keys=True).encode()).hexdigest(),
    }


def populate(base_key: str, rootfs: Path, lab: Path, log_path: Path, progress, t0: float) -> dict:
    """The suite's root file system (from its cached image) with systemd as init."""
    import os

    from snapprof.lab import build, kernel

    base = build.ensure_image(base_key, progress, lab=lab)
    log_path.write_text(f"# {base_key} userspace with systemd as init\n")
    progress(f"copying the {base_key} root file system out of {base.disk} ({time.monotonic() - t0:.0f} s)")
    kernel.copy_rootfs(base.disk, rootfs)
    resolv = rootfs / "etc" / "resolv.conf"
    if os.path.islink(resolv) or not resolv.exists():
        resolv.unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", resolv)
    before = build.dpkg_versions(rootfs)
    with open(log_path, "a", buffering=1) as log, kernel.chroot_mounts(rootfs):
        progress(f"apt-get update in the guest ({base.meta.get('suite', base_key)})")
        kernel.chroot(rootfs, ["apt-get", "update", "-q"], log, "apt-get update")
        progress(f"installing {', '.join(PACKAGES)} ({time.monotonic() - t0:.0f} s)")
        kernel.chroot(rootfs, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
                      log, "installing systemd")
        kernel.chroot(rootfs, ["systemctl", "mask", *MASKED], log, "masking units")
        kernel.chroot(rootfs, ["systemctl", "set-default", "multi-user.target"], log, "systemctl set-default")
        kernel.chroot(rootfs, ["apt-get", "clean"], log, "apt-get clean")
    shutil.rmtree(rootfs / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    (rootfs / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    if not (rootfs / INIT.lstrip("/")).exists():
        raise SnapprofError(f"systemd did not install: no {INIT} in the guest; see {log_path}")
    for rel, text in CONFIG.items():
        (rootfs / rel).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / rel).write_text(text)
    starter = rootfs / JOB_STARTER_PATH.lstrip("/")
    shutil.copyfile(JOB_STARTER, starter)
    starter.chmod(0o755)
    unit = rootfs / "etc" / "systemd" / "system" / LAB_UNIT
    unit.write_text(UNIT_TEXT)
    wants = rootfs / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / LAB_UNIT).unlink(missing_ok=True)
    (wants / LAB_UNIT).symlink_to(f"/etc/systemd/system/{LAB_UNIT}")
    # one machine id for every boot of the image (systemd would make one per boot)
    mid = rootfs / "etc" / "machine-id"
    if not mid.exists() or not mid.read_text().strip():
        mid.write_text(hashlib.md5(f"snapprof-lab-{base_key}".encode()).hexdigest() + "\n")
    after = build.dpkg_versions(rootfs)
    return {
        "init": INIT,
        "init_variant": VARIANT,
        "systemd_version": after.get("systemd", ""),
        "base_image": str(base.dir),
        "base_recipe_hash": base.recipe_hash,
        "base_kernel_release": base.kernel_release,
        "userspace_added": sorted(p for p in after if p not in before),
        "userspace_upgraded": {p: f"{before[p]} -> {after[p]}" for p in sorted(before)
                               if p in after and before[p] != after[p]},
    }


# -- the boot-1 job ---------------------------------------------------------------------------

MARK = "snapprof-lab-systemd:"
SERVICE_DIR = "/var/lib/snapprof"
USER_UNIT = "snapprof-lab-user"  # the user.slice scope that must be frozen and thawed
STUCK_UNIT = "snapprof-lab-stuck"  # the user.slice scope that holds the freeze up (blocker)
STUCK_MOUNT = "/run/snapprof-stuck"
BLOCKED_FREEZE_TIMEOUT_MS = 3000  # pm_freeze_timeout for the held-up cycle (the kernel's: 20 s)
# A FUSE file system whose daemon never answers: this process opens /dev/fuse, mounts it and
# sleeps without reading a request, so the first request (INIT) never completes and every
# lookup waits in fuse_get_req(), uninterruptibly (the lab's failure job does the same in its
# own guest). Closing the fd (killing it) aborts the connection: the waiters get ENOTCONN.
FUSE_HOLDER = (
    "import ctypes, os, time\n"
    "fd = os.open(\"/dev/fuse\", os.O_RDWR)\n"
    "opts = (\"fd=%d,rootmode=40000,user_id=0,group_id=0\" % fd).encode()\n"
    f"if ctypes.CDLL(None, use_errno=True).mount(b\"snapprof-stuck\", b\"{STUCK_MOUNT}\", b\"fuse\", 0, opts):\n"
    "    raise SystemExit(\"mount: errno %d\" % ctypes.get_errno())\n"
    "time.sleep(1e6)\n")


def guest_job(ready_timeout: int = 600, cycle_timeout: int = 900, debug: bool = False,
              blocker: bool = False) -> str:
    """Boot 1's shell job (see the module doc). Markers on the job's output:
    ``MARK ready|hibernate|returned|service active|user.slice ...``. It exits 0 when the
    service recorded a run (3 when something did not come), its capture on the result disk
    (hibernate._copy_out) and the journal in the outbox (journal.json, journal.txt) either
    way. debug: PID 1 logs at debug level during the cycle (its freezer's state changes).
    blocker: first a cycle held up by a process stuck on a FUSE file system (``MARK
    blocked ...``, ``MARK unblocked``); the service records it as run 1, failed."""
    from snapprof.lab.hibernate import GUEST_CAPTURE, _copy_out
    from snapprof.lab.offline import GUEST_TREE

    fields = ",".join(JOURNAL_FIELDS)
    svc_log = "journalctl -q -b -o cat -u snapprof.service"
    # systemd-sleep's own messages by the identifier it sends with each, not by -u: journald
    # finds a sender's unit from its cgroup when it reads the message, and after the thaw it
    # reads a backlog (PID 1 at debug level); systemd-sleep exits 0.5 s after "System returned
    # from sleep operation", so that line can come without a unit: the likely reason a CI run
    # waited 900 s here for a line its journal had
    sleep_log = "journalctl -q -b -o cat SYSLOG_IDENTIFIER=systemd-sleep"

    def wait(cond: str, limit: int, what: str) -> str:
        return (f"n=0; until {cond}; do n=$((n+1)); "
                f"[ $n -gt {limit} ] && fail \"gave up waiting for {what}\"; sleep 1; done")

    cycles = 2 if blocker else 1

    return "\n".join([
        "set -u",
        f"M='{MARK}'",
        "finish() {",
        f"  journalctl -q -b -o json --output-fields={fields} > \"$SNAPPROF_OUTBOX/journal.json\"",
        "  journalctl -q -b -o short-monotonic > \"$SNAPPROF_OUTBOX/journal.txt\"",
        f"  cap=$(ls -t {SERVICE_DIR}/snapprof-*.snap 2>/dev/null | head -n 1)",
        f"  [ -n \"$cap\" ] && cp \"$cap\" {GUEST_CAPTURE}",
        f"  {_copy_out()}",
        "}",
        "fail() { echo \"$M $*\"; finish; exit 3; }",
        "swapon /dev/vdb || exit 2",
        "systemctl --version | head -n 1 | sed \"s/^/$M /\"",
        # the service's python runs from a tmpfs copy of the tree: /project dies at the resume
        "python3 -c 'from snapprof.lab.offline import relocate; relocate(\"/project\")' || exit 2",
        f"cd / && PYTHONPATH={GUEST_TREE} python3 -m snapprof service install || exit 2",
        wait(f"{svc_log} | grep -q 'waiting for hibernation cycles'", ready_timeout, "the service"),
        "echo \"$M ready after ${n} s\"",
        *(_blocked_cycle(wait, sleep_log, svc_log, cycle_timeout, ready_timeout) if blocker else []),
        # a process in user.slice, which systemd (>= 256) freezes before the kernel's freezer runs
        f"systemd-run --quiet --scope --slice=user.slice --unit={USER_UNIT} sleep 86400 &",
        "sleep 1",
        *(["systemd-analyze log-level debug"] if debug else []),
        "echo \"$M hibernate\"",
        # as a user would: from a process in user.slice (root here: no polkit in the guest)
        "systemd-run --quiet --scope --slice=user.slice --unit=snapprof-lab-hibernate systemctl hibernate"
        " || fail \"systemctl hibernate failed: $?\"",
        wait(f"[ $({sleep_log} | grep -c -e 'System returned from sleep' -e 'Failed to put system to "
             f"sleep') -ge {cycles} ]", cycle_timeout, "systemd-sleep to return"),
        *(["systemd-analyze log-level info"] if debug else []),
        f"{sleep_log} | grep -e 'returned from sleep' -e 'Failed to put' | tail -n 1 | sed \"s/^/$M /\"",
        wait(f"{svc_log} | grep -q -E '^run {cycles}: '", ready_timeout, "the service's run"),
        f"{svc_log} | grep -E '^run [0-9]+: ' | sed \"s/^/$M service /\"",
        "echo \"$M service $(systemctl is-active snapprof.service)\"",
        f"echo \"$M user.slice $(systemctl show -p FreezerState --value user.slice) "
        f"{USER_UNIT} $(systemctl is-active {USER_UNIT}.scope)\"",
        "systemctl stop snapprof.service",  # SIGTERM: the recorder closes its capture
        "finish",
        "echo \"$M done\"",
    ]) + "\n"


def _blocked_cycle(wait, sleep_log: str, svc_log: str, cycle_timeout: int, ready_timeout: int) -> list[str]:
    """The held-up cycle of guest_job(blocker=True): a process in user.slice stuck on a FUSE
    file system nobody serves; `systemctl hibernate`; systemd-sleep waits for user.slice to
    freeze (60 s), gives up, hibernates anyway; the kernel's freezer fails on the same
    process after BLOCKED_FREEZE_TIMEOUT_MS; the connection is then aborted (the process
    exits) and pm_freeze_timeout put back."""
    import shlex

    return [
        "modprobe fuse 2>/dev/null",
        f"mkdir -p {STUCK_MOUNT}",
        f"python3 -c {shlex.quote(FUSE_HOLDER)} & holder=$!",
        wait(f"grep -q ' {STUCK_MOUNT} fuse' /proc/mounts", 60, "the FUSE mount"),
        f"systemd-run --quiet --scope --slice=user.slice --unit={STUCK_UNIT} stat {STUCK_MOUNT}/x "
        "> /dev/null 2>&1 & stuck=$!",
        wait("[ \"$(cut -d' ' -f3 /proc/$stuck/stat 2>/dev/null)\" = D ]", 60, "the process to be stuck"),
        "freeze_timeout=$(cat /sys/power/pm_freeze_timeout)",
        f"echo {BLOCKED_FREEZE_TIMEOUT_MS} > /sys/power/pm_freeze_timeout",
        "echo \"$M blocked hibernate pid $stuck\"",
        "systemd-run --quiet --scope --slice=user.slice --unit=snapprof-lab-hibernate-1 systemctl hibernate"
        " || fail \"systemctl hibernate failed: $?\"",
        wait(f"{sleep_log} | grep -q -e 'Failed to put system to sleep' -e 'System returned from sleep'",
             cycle_timeout, "the held-up hibernation to end"),
        "echo $freeze_timeout > /sys/power/pm_freeze_timeout",
        f"{sleep_log} | grep -e 'Failed to freeze' -e 'Failed to put' -e 'returned from sleep' "
        "| sed \"s/^/$M blocked /\"",
        f"kill $holder; umount -l {STUCK_MOUNT}",  # the connection aborts: the stuck stat exits
        wait("[ \"$(cut -d' ' -f3 /proc/$stuck/stat 2>/dev/null)\" != D ]", 60, "the stuck process to exit"),
        "wait $stuck 2>/dev/null",
        "echo \"$M unblocked\"",
        wait(f"{svc_log} | grep -q -E '^run 1: '", ready_timeout, "the service's run of the held-up cycle"),
        f"{svc_log} | grep -E '^run 1: ' | sed \"s/^/$M service /\"",
    ]


# Both boots of the cycle. Seen once in this lab (trixie 6.12, a loaded host): while the
# writing kernel saved the image, the clocksource watchdog found the TSC "skewed 503 ms" from
# the HPET, switched to the HPET, whose counter did not run after the copy: the clock stood
# still at "Image saving done" and the power-off never came (QEMU killed after the timeout).
# Under TCG the TSC follows the host clock, as the HPET does: trust it, no watchdog.
KERNEL_ARGS = ("tsc=reliable",)


# -- the lab cycle ----------------------------------------------------------------------------

def systemd_hibernate(distro: str, out_dir: Path, *, swap_size: str = "1G", memory: str = "2G",
                      cpus: int = 2, timeout: float = 1200, stream: IO[str] | None = sys.stdout,
                      debug: bool = False, blocker: bool = False, progress=None):
    """One `systemctl hibernate` cycle in the systemd guest `distro` (SUITE+systemd) with
    the snapprof service recording it; returns (capture, Cycle, journal entries).
    The capture (out_dir/<slug>.snap) holds the service's run of the cycle, joined with both
    boots' console figures (snapprof.lab.hibernate) and systemd's part from the journal.
    blocker: a held-up cycle first (guest_job); its failed run is in the service's own
    capture, kept as out_dir/<slug>-cycle1/guest.snap."""
    from snapprof.lab import build
    from snapprof.lab.hibernate import _Output, check_swap_size, one_cycle

    if split(distro)[1] != VARIANT:
        raise SnapprofError(f"{distro} is not a systemd guest: give SUITE+{VARIANT}, e.g. trixie+{VARIANT}")
    build.validate_distro(distro)
    say = progress or (lambda m: print(f"snapprof lab systemd: {m}", file=sys.stderr, flush=True))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    img = build.ensure_image(distro, progress=say)
    capture = out_dir / f"{build.slug(distro)}.snap"
    output = _Output(capture, {"lab_distro": distro,
                               "lab_trigger": "systemctl hibernate with the snapprof service recording "
                                              "(two QEMU boots, serial console and journal joined)",
                               "lab_compressor": "kernel default", "lab_probe_areas": "all",
                               "lab_systemd_version": img.meta.get("systemd_version", "")})
    journal: list[dict] = []

    def systemd_part(r1, r2):
        text = ""
        for res in (r2, r1):  # the restored system's job packs its outbox in boot 2
            p = None if res is None else Path(res.output_dir) / "journal.json"
            if p is not None and p.is_file():
                text = p.read_text(errors="replace")
                break
        journal[:] = read_journal(text)
        if not journal:
            why = "the guest left no journal in its outbox (its job did not finish)"
            return [], {name: why for name, *_ in SPANS}
        return journal_figures(journal)

    try:
        cyc = one_cycle(img, 1, out_dir, output, compressor=None, swap_size=check_swap_size(swap_size),
                        memory=memory, cpus=cpus, timeout=timeout, stream=stream, say=say,
                        job=guest_job(debug=debug, blocker=blocker), more=systemd_part, extra_append=KERNEL_ARGS)
    finally:
        output.close()
    return capture, cyc, journal
