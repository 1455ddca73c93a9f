"""What the reading commands (report, compare, export) write on the user's behalf.

- ``check_output``: an output path is refused, ``--force`` or not, when it is one of the
  command's input captures (by name, symlink or hard link) or a journal/WAL name beside
  one (a file there would pass for a hot journal), when it is a directory where a file is
  meant, or when it is not a regular file (a FIFO, a device: use ``-o -`` for stdout).
  An existing regular file needs ``--force``.
- ``write_atomic``: text goes to a temporary file beside the output, renamed over it when
  complete; the temporary file is removed on every error path (including Ctrl-C).
- ``print_warnings``: the reader's counted warnings, one line each, on stderr, with the
  capture's name; control characters made visible.

Standard library only.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile

from snapprof.capture_open import SIDECARS, kind_of
from snapprof.errors import SnapprofError
from snapprof.termsafe import visible


def _same(a: str, b: str) -> bool:
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def refuse_input(path: str, inputs: list[str]) -> None:
    """Refuse ``path`` (to be written) when it is an input or a journal name beside one."""
    for src in inputs:
        if _same(path, src):
            raise SnapprofError(f"{path} is the input capture {src}: refusing to overwrite it "
                                "(even with --force); choose another -o")
        for suffix in SIDECARS + ("-shm",):
            if os.path.realpath(path) == os.path.realpath(src) + suffix:
                raise SnapprofError(f"{path} would sit beside {src} as its SQLite {suffix[1:]} "
                                    "file; choose another -o")


def check_output(path: str, inputs: list[str], force: bool) -> None:
    """Raise SnapprofError when writing the file ``path`` must not happen."""
    refuse_input(path, inputs)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SnapprofError(f"cannot write {path}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise SnapprofError(f"{path} is a directory; name a file with -o")
    if not stat.S_ISREG(st.st_mode):
        raise SnapprofError(f"{path} is {kind_of(st.st_mode)}: snapprof writes regular files "
                            "only (use -o - for stdout)")
    if not force:
        raise SnapprofError(f"{path} exists; use --force to replace it")


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` through a temporary file."""
    folder = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                   suffix=".tmp")
    except OSError as exc:
        raise SnapprofError(f"cannot write {path}: {exc.strerror}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise SnapprofError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def print_warnings(command: str, paths, frames_list) -> None:
    """Each capture's counted warnings (``CaptureFrames.warnings``), one line each."""
    for path, frames in zip(paths, frames_list):
        for line in frames.warnings:
            print(f"snapprof {command}: warning: {visible(path)}: {visible(line)}",
                  file=sys.stderr)
