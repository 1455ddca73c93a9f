"""snapprof service: record every hibernation the machine makes, as a systemd service.

Standard library only. `snapprof service install` writes /etc/systemd/system/snapprof.service,
which runs `snapprof record --trigger none --rotate DIR` as a system service: in
system.slice, outside user.slice (which systemd 256 and later freezes with the cgroup freezer
before the kernel's own freezer runs), so the recorder is frozen only by the kernel, like
every task, and never holds hibernation up. `snapprof report` reads its captures at any
time, including the one being written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from snapprof.termsafe import visible

UNIT_NAME = "snapprof.service"
UNIT_DIR = "/etc/systemd/system"
STATE_DIR = "/var/lib/snapprof"

UNIT = """\
# Written by `snapprof service install`; remove with `snapprof service uninstall`.
[Unit]
Description=snapprof: record every hibernation (eBPF profiler, captures in {dir})
ConditionPathExists=/sys/power/state
After=local-fs.target

[Service]
Type=simple
# a system service: in system.slice, outside the user.slice systemd freezes before hibernating
Slice=system.slice
ExecStart={python} -m snapprof record --trigger none --rotate {dir} --rotate-mb {mb} --rotate-days {days:g} --keep {keep}
Environment=PYTHONPATH={pythonpath}
# SIGTERM stops the recorder between cycles, cleanly (settings it changed put back)
TimeoutStopSec=30
Restart=on-failure
RestartSec=30
Nice=10

[Install]
WantedBy=multi-user.target
"""

EPILOG = """\
examples:
  snapprof service install                  # write the unit, enable and start it
  snapprof service install --dir /srv/snapprof --rotate-mb 32 --keep 4
  snapprof service status                   # the unit's state and the captures it wrote
  snapprof report /var/lib/snapprof/snapprof-*.snap   # at any time, even while it records
  snapprof service uninstall                # stop, disable, remove the unit (captures stay)
  snapprof service unit                     # print the unit it would write
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "service", help="record every hibernation as a systemd service",
        description="Install, inspect or remove a systemd service that runs `snapprof record "
                    "--trigger none` outside user.slice and writes rotating captures.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("install", "uninstall", "status", "unit"))
    p.add_argument("--dir", default=STATE_DIR, help=f"where the captures go (default {STATE_DIR})")
    p.add_argument("--rotate-mb", type=int, default=64, metavar="N",
                   help="a new capture past N MiB (default 64)")
    p.add_argument("--rotate-days", type=float, default=7.0, metavar="D",
                   help="a new capture after D days (default 7)")
    p.add_argument("--keep", type=int, default=8, metavar="N", help="captures kept (default 8)")
    p.add_argument("--unit-dir", default=UNIT_DIR, help=argparse.SUPPRESS)  # tests
    p.add_argument("--no-start", action="store_true", help="install without enabling and starting it")
    p.add_argument("--force", action="store_true",
                   help="install even where this machine cannot hibernate now (it is said why)")
    p.set_defaults(func=run)
    return p


def unit_text(args) -> str:
    import snapprof  # noqa: PLC0415

    return UNIT.format(dir=os.path.abspath(args.dir), mb=args.rotate_mb, days=args.rotate_days,
                       keep=args.keep, python=sys.executable,
                       pythonpath=os.path.dirname(os.path.dirname(os.path.abspath(snapprof.__file__))))


def _systemctl(*argv: str) -> None:
    from snapprof.errors import SnapprofError  # noqa: PLC0415

    exe = shutil.which("systemctl")
    if exe is None:
        raise SnapprofError("no systemctl: this machine does not run systemd")
    p = subprocess.run([exe, *argv], capture_output=True, text=True)
    if p.returncode != 0:
        err = (p.stderr.strip() or p.stdout.strip()).splitlines()
        raise SnapprofError(f"systemctl {' '.join(argv)}: exit {p.returncode}"
                            + (f": {err[-1]}" if err else ""))


def _check(args) -> None:
    from snapprof.errors import SnapprofError  # noqa: PLC0415
    from snapprof.record import sysinfo  # noqa: PLC0415

    if args.rotate_mb < 1 or args.keep < 1 or not 0 < args.rotate_days <= 3650:
        raise SnapprofError("--rotate-mb and --keep must be at least 1, --rotate-days in (0, 3650]")
    if os.geteuid() != 0:
        raise SnapprofError(f"snapprof service {args.action} needs root")
    if not os.path.isdir("/run/systemd/system") and args.unit_dir == UNIT_DIR:
        raise SnapprofError("systemd is not running on this machine (no /run/systemd/system)")
    try:  # a real hibernation needs a resume device and active swap
        sysinfo.check_can_record("hibernate")
    except SnapprofError as exc:
        if not args.force:
            raise SnapprofError(f"this machine cannot hibernate now: {exc}; the service would "
                                "record nothing (--force installs it anyway)") from None
        print(f"snapprof service: warning: this machine cannot hibernate now: {exc}",
              file=sys.stderr)


def run(args) -> int:
    from snapprof.errors import SnapprofError  # noqa: PLC0415

    unit_path = os.path.join(args.unit_dir, UNIT_NAME)
    if args.action == "unit":
        sys.stdout.write(unit_text(args))
        return 0
    if args.action == "status":
        state = "not installed" if not os.path.exists(unit_path) else "installed"
        print(f"snapprof service: {unit_path}: {state}")
        if state == "installed" and shutil.which("systemctl"):
            p = subprocess.run(["systemctl", "is-active", UNIT_NAME], capture_output=True, text=True)
            print(visible(f"snapprof service: {UNIT_NAME}: {p.stdout.strip() or 'unknown'}"))
        caps = sorted(f for f in os.listdir(args.dir) if f.endswith(".snap")) \
            if os.path.isdir(args.dir) else []
        print(visible(f"snapprof service: {len(caps)} capture(s) in {args.dir}"
                      + (f", newest {caps[-1]}" if caps else "")))
        return 0
    if args.action == "uninstall":
        if os.geteuid() != 0:
            raise SnapprofError("snapprof service uninstall needs root")
        if not os.path.exists(unit_path):
            raise SnapprofError(f"{unit_path} does not exist: nothing to uninstall")
        if args.unit_dir == UNIT_DIR:
            _systemctl("disable", "--now", UNIT_NAME)
        os.unlink(unit_path)
        if args.unit_dir == UNIT_DIR:
            _systemctl("daemon-reload")
        print(f"snapprof service: removed {unit_path} (the captures in {args.dir} stay)")
        return 0
    _check(args)
    os.makedirs(args.dir, mode=0o750, exist_ok=True)
    tmp = unit_path + ".new"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(unit_text(args))
        os.replace(tmp, unit_path)
    except OSError as exc:
        raise SnapprofError(f"cannot write {unit_path}: {exc.strerror or exc}") from None
    print(f"snapprof service: wrote {unit_path}")
    if args.unit_dir == UNIT_DIR:
        _systemctl("daemon-reload")
        if not args.no_start:
            _systemctl("enable", "--now", UNIT_NAME)
            print(f"snapprof service: {UNIT_NAME} enabled and started; captures go to {args.dir}")
    return 0
