"""Opening a capture for reading: a consistent in-memory copy, the file left untouched.

``open_snapshot(path)`` checks what it is given before SQLite sees it, then copies the
database into memory with SQLite's backup API, so everything later (schema check, value
rules, every query of every command) works on a private copy:

- only a regular file is opened: a FIFO, a device or a socket is refused up front (the
  file is opened with O_NONBLOCK for the check, so a FIFO cannot hang the command), and
  so is a ``-journal``/``-wal`` beside it that is not a regular file;
- the file must start with SQLite's header, and its ``application_id`` and
  ``user_version`` must be a capture's of a version this snapprof knows;
- the file is opened with ``mode=ro``: SQLite's locks keep a live recorder's commits
  whole, and nothing is ever written to it or beside it;
- a capture whose writer was killed mid-transaction has a *hot journal* beside it.
  SQLite must roll it back before reading, which a read-only connection cannot do. Then
  the file and its journal are copied into a private temporary folder, SQLite rolls the
  copy back there (every committed run kept, the transaction in flight gone) and the
  copy is read; the warning says so. The same happens for a capture left in WAL mode.

Every SQLite error becomes a one-line ``SnapprofError`` naming the file. Standard
library only.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path

from snapprof.errors import SnapprofError

SQLITE_HEADER = b"SQLite format 3\x00"
SIDECARS = ("-journal", "-wal")
#: Seconds to wait for a live writer's lock before giving up.
BUSY_TIMEOUT = 10.0

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, word in _KINDS:
        if test(mode):
            return word
    return "not a regular file"


def _read_head(path: Path) -> bytes:
    """The first 100 bytes (SQLite's header) of a regular file; anything else refused."""
    try:
        st = os.stat(path)  # a socket cannot be opened at all: say what it is
    except FileNotFoundError:
        raise SnapprofError(f"{path}: no such file") from None
    except OSError as exc:
        raise SnapprofError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        raise SnapprofError(f"{path}: is {kind_of(st.st_mode)}, not a capture file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise SnapprofError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SnapprofError(f"{path}: is a directory, not a capture") from None
    except OSError as exc:
        raise SnapprofError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise SnapprofError(f"{path}: is a directory, not a capture")
        if not stat.S_ISREG(st.st_mode):
            raise SnapprofError(f"{path}: is {kind_of(st.st_mode)}, not a capture file")
        return os.read(fd, 100)
    except OSError as exc:
        raise SnapprofError(f"{path}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _sidecars(path: Path) -> list[Path]:
    """The journal / WAL files beside a capture (each checked to be a regular file)."""
    found = []
    for suffix in SIDECARS:
        side = Path(str(path) + suffix)
        try:
            st = os.lstat(side)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise SnapprofError(f"{path}: cannot check {side.name}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise SnapprofError(f"{path}: {side.name} beside it is {kind_of(st.st_mode)}, "
                                "not a journal; refusing to read the capture")
        found.append(side)
    return found


def _check_ids(db: sqlite3.Connection, path: Path, expect_app: int, newest: int) -> int:
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if app_id != expect_app:
        raise SnapprofError(f"{path}: not a snapprof capture (SQLite application_id {app_id:#x})")
    if version > newest:
        raise SnapprofError(
            f"{path}: capture schema version {version} is newer than this snapprof "
            f"understands ({newest}); upgrade snapprof to read it")
    if version < 1:
        raise SnapprofError(f"{path}: unknown capture schema version {version}")
    return version


def _copy_to_memory(src: sqlite3.Connection) -> sqlite3.Connection:
    mem = sqlite3.connect(":memory:")
    src.backup(mem)
    return mem


def _read_only(path: Path, app_id: int, newest: int) -> tuple[sqlite3.Connection, int]:
    src = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    try:
        version = _check_ids(src, path, app_id, newest)
        return _copy_to_memory(src), version
    finally:
        src.close()


def _private_copy(path: Path, sidecars: list[Path], app_id: int,
                  newest: int) -> tuple[sqlite3.Connection, int]:
    """Copy the file and its journal/WAL aside and let SQLite recover the copy there."""
    with tempfile.TemporaryDirectory(prefix="snapprof-read-") as tmp:
        copy = Path(tmp) / "capture.snap"
        shutil.copyfile(path, copy)
        for side in sidecars:
            shutil.copyfile(side, Path(str(copy) + side.name[len(path.name):]))
        src = sqlite3.connect(copy, timeout=BUSY_TIMEOUT)
        try:
            version = _check_ids(src, path, app_id, newest)
            return _copy_to_memory(src), version
        finally:
            src.close()


def open_snapshot(path: Path, app_id: int, newest: int) -> tuple[sqlite3.Connection, int, list[str]]:
    """(in-memory copy of the capture, its schema version, warnings). Raises SnapprofError."""
    head = _read_head(path)
    if not head.startswith(SQLITE_HEADER):
        raise SnapprofError(f"{path}: not a snapprof capture (not an SQLite file)")
    sidecars = _sidecars(path)
    wal = len(head) >= 20 and (head[18] == 2 or head[19] == 2)
    try:
        if not wal:
            try:
                db, version = _read_only(path, app_id, newest)
                return db, version, []
            except sqlite3.Error:
                if not sidecars:
                    raise
        db, version = _private_copy(path, sidecars, app_id, newest)
    except sqlite3.Error as exc:
        raise SnapprofError(f"{path}: not a readable capture ({exc})") from None
    except OSError as exc:
        raise SnapprofError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if wal:
        return db, version, ["capture in WAL mode: read from a private copy (the file is "
                             "left untouched)"]
    names = ", ".join(s.name for s in sidecars)
    return db, version, [f"its writer stopped in the middle of a transaction ({names} "
                         "beside it): read from a private copy with that transaction "
                         "rolled back (every committed run kept; the file is left untouched)"]
