"""The capture file: one SQLite database with a versioned schema.

Standard library only: the recorder writes captures on the machine being hibernated.

Layout (schema version in ``PRAGMA user_version``; documented in README.md):

    meta          key, value                      capture-wide facts (kernel, machine, settings, trigger)
    probes        name, area, target, attached, reason
    runs          run_id, trigger, status, error, started_ns, ended_ns, started_wall, ringbuf_drops
    events        run_id, ts_ns, cpu, pid, comm, kind, name, value, detail
    metrics       run_id, name, value, unit, method, source
    not_measured  run_id, name, reason            a figure that was not measured in a run, and why
    tasks         run_id, pid, tgid, comm, kthread, stage, freeze_latency_ns, frozen
    devices       run_id, device, driver, parent, event, stage, start_ns, duration_ns, error, pid
    kmsg          run_id, seq, ts_us, level, text
    culprits      run_id, kind, stage, pid, tgid, comm, cmdline, state, wchan, stack,
                  stack_source, note, probe_stack
                                              (v2) a task that made the cycle fail, and where it was stuck
                                              (probe_stack: v3)
    processes     run_id, pid, tgid, comm, cmdline, rss_kb, anon_kb, shmem_kb, file_kb, swap_kb, source
                                              (v3) the largest memory users just before the cycle

Timestamps (``*_ns``) are CLOCK_BOOTTIME nanoseconds. A metric that was not measured
has no row in ``metrics`` (never a 0); its reason, when known, is in ``not_measured``.
Each run is written in one transaction, committed when the run ends, so a crash loses
at most the run in flight.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from snapprof.errors import SnapprofError

# 2: the culprits table (a version-1 capture reads as having none); 3: culprits.probe_stack
# and the processes table (an older capture reads as having none)
SCHEMA_VERSION = 3
APPLICATION_ID = 0x534E5050  # "SNPP": tells a capture from any other SQLite file

RUN_STATUSES = ("complete", "failed", "incomplete")
#: The error of a run whose cycle began but whose end was never written (CaptureWriter.begin_run)
STOPPED_IN_CYCLE = ("the recorder stopped during this cycle (killed, or the machine was lost): "
                    "no end was written, and nothing it measured in the cycle was saved")
EVENT_KINDS = ("begin", "end", "instant")

SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE probes (
    name     TEXT PRIMARY KEY,
    area     TEXT NOT NULL,
    target   TEXT,
    attached INTEGER NOT NULL CHECK (attached IN (0, 1)),
    reason   TEXT
);
CREATE TABLE runs (
    run_id        INTEGER PRIMARY KEY,
    trigger       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('complete', 'failed', 'incomplete')),
    error         TEXT,
    started_ns    INTEGER,
    ended_ns      INTEGER,
    started_wall  TEXT,
    ringbuf_drops INTEGER
);
CREATE TABLE events (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    ts_ns  INTEGER NOT NULL,
    cpu    INTEGER,
    pid    INTEGER,
    comm   TEXT,
    kind   TEXT NOT NULL CHECK (kind IN ('begin', 'end', 'instant')),
    name   TEXT NOT NULL,
    value  INTEGER,
    detail TEXT
);
CREATE INDEX events_run ON events(run_id, ts_ns);
CREATE TABLE metrics (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    name   TEXT NOT NULL,
    value  REAL NOT NULL,
    unit   TEXT NOT NULL,
    method TEXT NOT NULL,
    source TEXT,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE not_measured (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    name   TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE tasks (
    run_id            INTEGER NOT NULL REFERENCES runs(run_id),
    pid               INTEGER NOT NULL,
    tgid              INTEGER,
    comm              TEXT,
    kthread           INTEGER CHECK (kthread IN (0, 1)),
    stage             TEXT,
    freeze_latency_ns INTEGER,
    frozen            INTEGER CHECK (frozen IN (0, 1))
);
CREATE TABLE devices (
    run_id      INTEGER NOT NULL REFERENCES runs(run_id),
    device      TEXT NOT NULL,
    driver      TEXT,
    parent      TEXT,
    event       TEXT,
    stage       TEXT,
    start_ns    INTEGER,
    duration_ns INTEGER,
    error       INTEGER,
    pid         INTEGER
);
CREATE TABLE kmsg (
    run_id INTEGER REFERENCES runs(run_id),
    seq    INTEGER,
    ts_us  INTEGER,
    level  INTEGER,
    text   TEXT NOT NULL
);
CREATE TABLE culprits (
    run_id       INTEGER NOT NULL REFERENCES runs(run_id),
    kind         TEXT NOT NULL,
    stage        TEXT,
    pid          INTEGER NOT NULL,
    tgid         INTEGER,
    comm         TEXT,
    cmdline      TEXT,
    state        TEXT,
    wchan        TEXT,
    stack        TEXT,
    stack_source TEXT,
    note         TEXT,
    probe_stack  TEXT
);
CREATE TABLE processes (
    run_id   INTEGER NOT NULL REFERENCES runs(run_id),
    pid      INTEGER NOT NULL,
    tgid     INTEGER,
    comm     TEXT,
    cmdline  TEXT,
    rss_kb   INTEGER,
    anon_kb  INTEGER,
    shmem_kb INTEGER,
    file_kb  INTEGER,
    swap_kb  INTEGER,
    source   TEXT
);
"""

# Column order of the per-run row tables, shared by the writer and the reader.
COLUMNS = {
    "events": ("run_id", "ts_ns", "cpu", "pid", "comm", "kind", "name", "value", "detail"),
    "metrics": ("run_id", "name", "value", "unit", "method", "source"),
    "not_measured": ("run_id", "name", "reason"),
    "tasks": ("run_id", "pid", "tgid", "comm", "kthread", "stage", "freeze_latency_ns", "frozen"),
    "devices": ("run_id", "device", "driver", "parent", "event", "stage", "start_ns",
                "duration_ns", "error", "pid"),
    "kmsg": ("run_id", "seq", "ts_us", "level", "text"),
    "culprits": ("run_id", "kind", "stage", "pid", "tgid", "comm", "cmdline", "state", "wchan",
                 "stack", "stack_source", "note", "probe_stack"),
    "processes": ("run_id", "pid", "tgid", "comm", "cmdline", "rss_kb", "anon_kb", "shmem_kb",
                  "file_kb", "swap_kb", "source"),
}


@dataclass
class Run:
    """Everything one cycle produced; written in one transaction by CaptureWriter.add_run."""

    trigger: str
    status: str = "incomplete"
    error: str | None = None
    started_ns: int | None = None
    ended_ns: int | None = None
    started_wall: str | None = None
    ringbuf_drops: int | None = None
    events: list[tuple] = None  # (ts_ns, cpu, pid, comm, kind, name, value, detail)
    metrics: list[tuple] = None  # (name, value, unit, method, source)
    not_measured: list[tuple] = None  # (name, reason)
    tasks: list[tuple] = None  # (pid, tgid, comm, kthread, stage, freeze_latency_ns, frozen)
    devices: list[tuple] = None  # (device, driver, parent, event, stage, start_ns, duration_ns, error, pid)
    kmsg: list[tuple] = None  # (seq, ts_us, level, text)
    culprits: list[tuple] = None  # (kind, stage, pid, tgid, comm, cmdline, state, wchan, stack, stack_source, note, probe_stack)
    processes: list[tuple] = None  # (pid, tgid, comm, cmdline, rss_kb, anon_kb, shmem_kb, file_kb, swap_kb, source)

    def __post_init__(self):
        for name in COLUMNS:
            if getattr(self, name) is None:
                setattr(self, name, [])

    def metric(self, name: str, value: float | int | None, unit: str, method: str,
               source: str | None = None) -> None:
        """Record a measured figure. None means "not measured" and records nothing."""
        if value is None:
            return
        self.metrics.append((name, float(value), unit, method, source))

    def missing(self, name: str, reason: str) -> None:
        self.not_measured.append((name, reason))


class _Database:
    """Closes its SQLite connection on close() or at the end of a with-block."""

    db: sqlite3.Connection

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CaptureWriter(_Database):
    """Creates a capture and appends runs to it, one committed transaction per run."""

    def __init__(self, path: str | os.PathLike, force: bool = False):
        self.path = Path(path)
        if self.path.exists():
            if not force:
                raise SnapprofError(f"{self.path} exists; use --force to replace it")
            if self.path.is_dir():
                raise SnapprofError(f"{self.path} is a directory")
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise SnapprofError(f"cannot write {self.path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise SnapprofError(f"cannot write {self.path}: directory {parent} is not writable")
        tmp = self.path.with_name(self.path.name + ".new")
        for stale in (tmp, Path(str(tmp) + "-journal")):
            if stale.exists():
                stale.unlink()
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("BEGIN")
            for stmt in filter(str.strip, SCHEMA.split(";")):
                db.execute(stmt)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
            db.close()
            os.replace(tmp, self.path)  # a capture appears whole, with its schema, or not at all
        except (sqlite3.Error, OSError) as exc:
            raise SnapprofError(f"cannot create capture {self.path}: {exc}") from None
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA synchronous=FULL")

    def set_meta(self, items: dict[str, Any]) -> None:
        with self._txn():
            self.db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, str(v)) for k, v in items.items() if v is not None],
            )

    def set_probes(self, rows: Iterable[tuple]) -> None:
        """rows: (name, area, target, attached, reason)."""
        with self._txn():
            self.db.execute("DELETE FROM probes")
            self.db.executemany(
                "INSERT INTO probes(name, area, target, attached, reason) VALUES (?, ?, ?, ?, ?)",
                [(n, a, t, int(bool(att)), r) for n, a, t, att, r in rows],
            )

    def begin_run(self, trigger: str, started_wall: str | None) -> int:
        """Commit a cycle's row before the cycle starts: status incomplete, with the reason a
        reader sees if nothing more is ever written (the recorder killed, or the machine lost,
        while the cycle ran). add_run(run, run_id) replaces it when the cycle ends."""
        with self._txn():
            cur = self.db.execute(
                "INSERT INTO runs(trigger, status, error, started_wall) VALUES (?, ?, ?, ?)",
                (trigger, "incomplete", STOPPED_IN_CYCLE, started_wall))
        return cur.lastrowid

    def abandon_run(self, run_id: int, error: str) -> None:
        """A begun cycle that ended without its figures: it stays incomplete, with why."""
        with self._txn():
            self.db.execute("UPDATE runs SET error = ? WHERE run_id = ? AND status = 'incomplete'",
                            (error, run_id))

    def add_run(self, run: Run, run_id: int | None = None) -> int:
        """Write a finished cycle in one transaction; run_id: the row begin_run committed."""
        if run.status not in RUN_STATUSES:
            raise ValueError(f"bad run status {run.status!r}")
        with self._txn():
            values = (run.trigger, run.status, run.error, run.started_ns, run.ended_ns,
                      run.started_wall, run.ringbuf_drops)
            if run_id is not None:
                cur = self.db.execute(
                    "UPDATE runs SET trigger = ?, status = ?, error = ?, started_ns = ?,"
                    " ended_ns = ?, started_wall = coalesce(?, started_wall), ringbuf_drops = ?"
                    " WHERE run_id = ?", (*values, run_id))
                if cur.rowcount != 1:
                    raise ValueError(f"no run {run_id} begun in this capture")
            else:
                cur = self.db.execute(
                    "INSERT INTO runs(trigger, status, error, started_ns, ended_ns, started_wall,"
                    " ringbuf_drops) VALUES (?, ?, ?, ?, ?, ?, ?)", values)
                run_id = cur.lastrowid
            for table, cols in COLUMNS.items():
                rows = getattr(run, table)
                if not rows:
                    continue
                marks = ", ".join("?" * len(cols))
                self.db.executemany(
                    f"INSERT INTO {table}({', '.join(cols)}) VALUES ({marks})",
                    [(run_id, *row) for row in rows],
                )
        return run_id

    def _txn(self):
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


class CaptureReader(_Database):
    """Opens a capture for reading after checking that it is one, of a version this snapprof
    knows, with the schema and values a capture may hold.

    Every command that reads captures goes through this class. The file is never written:
    it is copied into memory (``snapprof.capture_open``: regular files only, a hot journal
    left by a killed writer rolled back in a private copy) and checked there
    (``snapprof.capture_check``: schema, integrity, impossible values). Problems that
    refuse the capture raise SnapprofError (one line naming the file); values left out are
    counted in ``warnings``. Every SQLite error while reading becomes a SnapprofError.
    """

    def __init__(self, path: str | os.PathLike):
        # imported here: the recorder (standard library only, on the machine being
        # hibernated) needs the writer alone
        from snapprof.capture_check import check
        from snapprof.capture_open import open_snapshot

        self.path = Path(path)
        self.db, self.version, notes = open_snapshot(self.path, APPLICATION_ID, SCHEMA_VERSION)
        self._bad_text: int | None = None
        try:
            self._findings = [*notes, *map(str, check(self.db, self.path))]
        except BaseException:
            self.db.close()
            raise

    @property
    def warnings(self) -> list[str]:
        """What was left out or recovered, counted, one line each (without the file name)."""
        out = list(self._findings)
        if self._bad_text:
            out.append(f"{self._bad_text} text values that are not valid UTF-8 (shown with "
                       "the bad bytes as \\x escapes)")
        return out

    def meta(self) -> dict[str, str]:
        return dict(self.fetch("SELECT key, value FROM meta"))

    def probes(self) -> list[dict]:
        return self.rows("SELECT name, area, target, attached, reason FROM probes ORDER BY area, name")

    def runs(self) -> list[dict]:
        return self.rows(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY run_id")

    def table(self, name: str) -> list[dict]:
        if name not in COLUMNS:
            raise ValueError(name)
        return self.rows(table_sql(name))

    def rows(self, sql: str, params: tuple = ()) -> list[dict]:
        cols, rows = self._query(sql, params)
        return [dict(zip(cols, row)) for row in rows]

    def fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        """All rows of a query as tuples; SQLite errors become a SnapprofError."""
        return self._query(sql, params)[1]

    def _query(self, sql: str, params: tuple) -> tuple[list[str], list[tuple]]:
        try:
            try:
                cur = self.db.execute(sql, params)
                return [d[0] for d in cur.description or ()], cur.fetchall()
            except (sqlite3.OperationalError, UnicodeDecodeError) as exc:
                if "decode" not in str(exc) or self._bad_text is not None:
                    raise
            self._bad_text = _count_bad_text(self.db)
            self.db.text_factory = _decode
            cur = self.db.execute(sql, params)
            return [d[0] for d in cur.description or ()], cur.fetchall()
        except (sqlite3.Error, UnicodeError) as exc:
            raise SnapprofError(f"{self.path}: cannot read the capture ({exc})") from None


RUN_COLUMNS = ("run_id", "trigger", "status", "error", "started_ns", "ended_ns",
               "started_wall", "ringbuf_drops")


def table_sql(name: str) -> str:
    """The query reading one per-run table, in CaptureReader.table's row order."""
    order = "run_id, ts_ns" if name == "events" else "run_id"
    return f"SELECT {', '.join(COLUMNS[name])} FROM {name} ORDER BY {order}"


def _decode(raw: bytes) -> str:
    """Text as stored; bytes that are not UTF-8 shown as \\x escapes (never dropped)."""
    return raw.decode("utf-8", "backslashreplace")


def _count_bad_text(db: sqlite3.Connection) -> int:
    """How many text values of the capture's tables are not valid UTF-8."""
    from snapprof.capture_check import RULES

    saved, db.text_factory = db.text_factory, bytes
    bad = 0
    try:
        for table, cols in RULES.items():
            for col in cols:
                for (value,) in db.execute(f"SELECT {col} FROM {table} "
                                           f"WHERE typeof({col}) = 'text'"):
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        bad += 1
    finally:
        db.text_factory = saved
    return bad
