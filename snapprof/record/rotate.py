"""Captures that rotate: a recorder that runs for months (snapprof as a service) writes into
a folder, starting a new capture when the current one is too large or too old, and keeps
the newest few. Standard library only.

    w = RotatingWriter(folder, max_bytes=64 << 20, max_age_s=7 * 86400, keep=8)
    w.set_meta(...); w.set_probes(...)      # remembered: every new file gets them
    run_id = w.add_run(run)                 # rotates first if the current file is due
    w.current                               # the file being written (readable at any time)

Each file is a complete capture of its own (snapprof-YYYYmmddTHHMMSSZ.snap); a rotation
happens only before a cycle's first write (its begun row, or its run), so no cycle is split
across files and no empty capture is left at the end. Files are removed oldest
first when there are more than `keep`; only files named like this writer's are touched.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from snapprof.capture import CaptureWriter, Run
from snapprof.errors import SnapprofError

NAME = re.compile(r"^snapprof-\d{8}T\d{6}Z(?:-\d+)?\.snap$")


class RotatingWriter:
    def __init__(self, folder: str | os.PathLike, max_bytes: int | None = 64 << 20,
                 max_age_s: float | None = 7 * 86400, keep: int = 8, clock=time.time):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SnapprofError(f"cannot write captures into {self.folder}: not a directory")
        if not os.access(self.folder, os.W_OK):
            raise SnapprofError(f"cannot write captures into {self.folder}: not writable")
        if keep < 1:
            raise SnapprofError("keep at least one capture")
        self.max_bytes, self.max_age_s, self.keep, self.clock = max_bytes, max_age_s, keep, clock
        self._meta: dict = {}
        self._probes: list | None = None
        self.rotations = 0
        self._open()

    # -- the CaptureWriter interface the recorder uses ------------------------------------
    def set_meta(self, items: dict) -> None:
        self._meta.update(items)
        self.writer.set_meta(items)

    def set_probes(self, rows) -> None:
        self._probes = list(rows)
        self.writer.set_probes(self._probes)

    def begin_run(self, trigger: str, started_wall: str | None) -> int:
        if self._due():  # before a cycle begins: its row and its end go to the same file
            self.rotate()
        self.runs_in_current += 1
        return self.writer.begin_run(trigger, started_wall)

    def abandon_run(self, run_id: int, error: str) -> None:
        self.writer.abandon_run(run_id, error)

    def add_run(self, run: Run, run_id: int | None = None) -> int:
        if run_id is None:
            if self._due():  # a run begun in this file ends in it
                self.rotate()
            self.runs_in_current += 1
        return self.writer.add_run(run, run_id)

    def close(self) -> None:
        self.writer.close()

    # -- rotation ---------------------------------------------------------------------------
    def _due(self) -> bool:
        if not self.runs_in_current:  # never leave a capture without a run behind
            return False
        if self.max_bytes is not None and self.current.stat().st_size >= self.max_bytes:
            return True
        return self.max_age_s is not None and self.clock() - self.opened >= self.max_age_s

    def rotate(self) -> None:
        self.writer.close()
        self.rotations += 1
        self._open()
        if self._meta:
            self.writer.set_meta(self._meta)
        if self._probes is not None:
            self.writer.set_probes(self._probes)

    def _open(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
        path, n = self.folder / f"snapprof-{stamp}.snap", 1
        while path.exists():
            path, n = self.folder / f"snapprof-{stamp}-{n}.snap", n + 1
        self.writer = CaptureWriter(path)
        self.current, self.opened, self.runs_in_current = path, self.clock(), 0
        self._prune()

    def files(self) -> list[Path]:
        """This writer's captures in the folder, oldest first."""
        return sorted((p for p in self.folder.iterdir() if NAME.match(p.name)),
                      key=lambda p: (p.stat().st_mtime, p.name))

    def _prune(self) -> None:
        old = [p for p in self.files() if p != self.current]
        for p in old[:max(0, len(old) - (self.keep - 1))]:
            try:
                p.unlink()
            except OSError:
                pass
