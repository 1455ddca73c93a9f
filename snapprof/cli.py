"""The `snapprof` command line: one module per subcommand under snapprof/commands/.

Each command module imports only the standard library at its top level and exposes
    register(subparsers) -> argparse.ArgumentParser   (with set_defaults(func=run))
Heavy imports (bcc, pandas, matplotlib) happen inside run(), so `snapprof record`
stays light on the machine being hibernated.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from snapprof import __version__
from snapprof.errors import SnapprofError

# Order is the order shown in --help.
COMMANDS = ["lab", "probes", "record", "report", "compare", "export"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snapprof",
        description="eBPF profiler for Linux hibernation (suspend-to-disk).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"snapprof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"snapprof.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except SnapprofError as exc:
        print(f"snapprof {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"snapprof {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    return int(rc or 0)
