"""The `snapprof` command line: one module per subcommand under snapprof/commands/.

Each command module imports only the standard library at its top level and exposes
    register(subparsers) -> argparse.ArgumentParser   (with set_defaults(func=run))
Heavy imports (bcc, pandas, matplotlib) happen inside run(), so `snapprof record`
stays light on the machine being hibernated.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from snapprof import __version__
from snapprof.errors import SnapprofError
from snapprof.termsafe import visible

# Order is the order shown in --help.
COMMANDS = ["lab", "probes", "record", "report", "compare", "export", "pool", "service"]


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


#: Exit status of a failure snapprof did not foresee (a bug): one line, and the traceback
#: only with SNAPPROF_DEBUG=1.
INTERNAL_ERROR = 3


def _show_warning(command: str):
    """warnings.showwarning for the CLI: one line each, control characters made visible
    (a library's warning can quote capture text, e.g. matplotlib's "Glyph missing")."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"snapprof {command}: warning: {visible(message)}", file=file or sys.stderr)
    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    saved = warnings.showwarning
    warnings.showwarning = _show_warning(args.command)
    try:
        rc = args.func(args)
    except SnapprofError as exc:
        print(f"snapprof {args.command}: error: {visible(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"snapprof {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: one line, never a screenful
        if os.environ.get("SNAPPROF_DEBUG"):
            raise
        print(f"snapprof {args.command}: internal error: {visible(type(exc).__name__)}: "
              f"{visible(exc)} (a bug in snapprof; SNAPPROF_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return INTERNAL_ERROR
    finally:
        warnings.showwarning = saved
    return int(rc or 0)
