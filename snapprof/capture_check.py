"""The capture reader's validation: schema, integrity, and the values a capture may hold.

``check(db, path)`` runs on the reader's private in-memory copy (``capture_open``), never
on the file. It refuses, with one line naming the file and the problem:

- a missing table, a missing column, a column declared with another type;
- a database that fails SQLite's ``PRAGMA quick_check`` (corrupt pages, broken indexes).

It then applies the value rules of ``RULES`` and ``_impossible``: a value a capture
cannot hold is left out and **counted** in a warning (``Finding``): a cell that may be
absent becomes NULL (absent, never 0), a row that cannot stand without it is dropped.
docs/capture-format.md lists every rule and why it refuses or drops.

Standard library only.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from snapprof.errors import SnapprofError

#: The largest magnitude of a real value (metrics): beyond it a float no longer holds
#: every integer, and no hibernation figure comes near it (2**53 ns is 104 days).
MAX_REAL = 2 ** 53
#: The longest span a duration column may hold (ns): 2**53 ns, 104 days.
MAX_DURATION_NS = 2 ** 53
#: Units whose figures cannot be negative (errno and unknown units can).
NON_NEGATIVE_UNITS = ("ms", "pages", "bytes", "kB", "count", "MB/s", "ratio")
#: Meta keys that reporters format as numbers: a value that is not a finite number >= 0
#: is left out.
NUMERIC_META = ("mem_total_kb", "swap_total_kb", "image_size", "reserved_size", "page_size")
RUN_STATUSES = ("complete", "failed", "incomplete")
EVENT_KINDS = ("begin", "end", "instant")

# column kinds: I integer, R real (integers accepted), T text; a trailing "!" = required
RULES: dict[str, dict[str, str]] = {
    "meta": {"key": "T!", "value": "T!"},
    "probes": {"name": "T!", "area": "T!", "target": "T", "attached": "I!", "reason": "T"},
    "runs": {"run_id": "I!", "trigger": "T!", "status": "T!", "error": "T", "started_ns": "I",
             "ended_ns": "I", "started_wall": "T", "ringbuf_drops": "I"},
    "events": {"run_id": "I!", "ts_ns": "I!", "cpu": "I", "pid": "I", "comm": "T", "kind": "T!",
               "name": "T!", "value": "I", "detail": "T"},
    "metrics": {"run_id": "I!", "name": "T!", "value": "R!", "unit": "T!", "method": "T!",
                "source": "T"},
    "not_measured": {"run_id": "I!", "name": "T!", "reason": "T!"},
    "tasks": {"run_id": "I!", "pid": "I!", "tgid": "I", "comm": "T", "kthread": "I",
              "stage": "T", "freeze_latency_ns": "I", "frozen": "I"},
    "devices": {"run_id": "I!", "device": "T!", "driver": "T", "parent": "T", "event": "T",
                "stage": "T", "start_ns": "I", "duration_ns": "I", "error": "I", "pid": "I"},
    "kmsg": {"run_id": "I!", "seq": "I", "ts_us": "I", "level": "I", "text": "T!"},
    "culprits": {"run_id": "I!", "kind": "T!", "stage": "T", "pid": "I!", "tgid": "I", "comm": "T",
                 "cmdline": "T", "state": "T", "wchan": "T", "stack": "T", "stack_source": "T",
                 "note": "T", "probe_stack": "T"},
    "processes": {"run_id": "I!", "pid": "I!", "tgid": "I", "comm": "T", "cmdline": "T",
                  "rss_kb": "I", "anon_kb": "I", "shmem_kb": "I", "file_kb": "I", "swap_kb": "I",
                  "source": "T"},
}
#: Tables an older writer did not have (schema version 1: culprits; 2: processes): absent is
#: read as empty.
OPTIONAL_TABLES = {"culprits", "processes"}
#: Columns an older writer may not have had, with their type: absent is read as NULL
#: (devices.pid came after the first captures; culprits.probe_stack with version 3).
OPTIONAL_COLUMNS = {("devices", "pid"): "INTEGER", ("culprits", "probe_stack"): "TEXT"}
_AFFINITY = {"I": ("INT",), "R": ("REAL", "FLOA", "DOUB", "INT"), "T": ("CHAR", "CLOB", "TEXT")}
_WORD = {"I": "an integer", "R": "a finite number", "T": "text"}
PER_RUN = ("events", "metrics", "not_measured", "tasks", "devices", "kmsg", "culprits", "processes")


@dataclass
class Finding:
    """A counted problem: ``count`` values or rows of ``what`` were left out."""

    count: int
    what: str

    def __str__(self) -> str:
        return f"{self.count} {self.what}"


def check(db: sqlite3.Connection, path: Path) -> list[Finding]:
    """Refuse (SnapprofError) or clean the in-memory copy; returns the counted findings."""
    saved, db.text_factory = db.text_factory, _lenient
    try:
        # CHECK constraints are value rules here (below), not corruption
        db.execute("PRAGMA ignore_check_constraints = ON")
        _check_schema(db, path)
        _check_integrity(db, path)
        findings = _types(db) + _impossible(db)
    except (sqlite3.Error, UnicodeError) as exc:
        raise SnapprofError(f"{path}: not a readable capture ({exc})") from None
    finally:
        db.text_factory = saved
    return [f for f in findings if f.count]


def _lenient(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, cols in RULES.items():
        if table not in tables and table in OPTIONAL_TABLES:
            from snapprof.capture import SCHEMA  # noqa: PLC0415 (the writer's own definition)

            start = SCHEMA.index(f"CREATE TABLE {table} (")
            db.execute(SCHEMA[start:SCHEMA.index(");", start) + 2])
            continue
        if table not in tables:
            raise SnapprofError(f"{path}: not a valid capture: table {table} is missing")
        declared = {r[1]: (r[2] or "").upper() for r in db.execute(f"PRAGMA table_info({table})")}
        for col, kind in cols.items():
            if col not in declared:
                if (table, col) in OPTIONAL_COLUMNS:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {col} "
                               f"{OPTIONAL_COLUMNS[(table, col)]}")
                    continue
                raise SnapprofError(f"{path}: not a valid capture: table {table} has no "
                                    f"column {col}")
            if not any(a in declared[col] for a in _AFFINITY[kind[0]]):
                raise SnapprofError(
                    f"{path}: not a valid capture: column {table}.{col} is declared "
                    f"{declared[col] or 'without a type'}, not {_WORD[kind[0]].split()[-1]}")


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    # NULL in a NOT NULL column is a value problem (the value rules drop the row), not a
    # corrupt page; CHECK constraints are not checked (ignore_check_constraints)
    problems = [r[0] for r in db.execute("PRAGMA quick_check(100)")
                if not r[0].startswith("NULL value in ")]
    if problems and problems != ["ok"]:
        problems = problems[:3]
        raise SnapprofError(f"{path}: corrupt capture (SQLite integrity check: "
                            f"{'; '.join(problems)})")


def _valid(col: str, kind: str) -> str:
    """SQL: the value of col is of its kind (NULL is not)."""
    if kind == "I":
        return f"typeof({col}) = 'integer'"
    if kind == "R":
        return f"(typeof({col}) IN ('integer', 'real') AND abs({col}) <= {MAX_REAL})"
    return f"typeof({col}) = 'text'"


def _types(db: sqlite3.Connection) -> list[Finding]:
    """Wrong types: a required cell drops its row, another becomes NULL (absent)."""
    out = []
    for table, cols in RULES.items():
        # one scan to find out whether the table has anything to fix (a sound one has not)
        wrong = " OR ".join(f"NOT ({_valid(c, k[0])})" if k.endswith("!") else
                            f"({c} IS NOT NULL AND NOT ({_valid(c, k[0])}))"
                            for c, k in cols.items())
        if db.execute(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {wrong})").fetchone()[0] == 0:
            continue
        for col, spec in cols.items():
            kind, required = spec[0], spec.endswith("!")
            if required:
                n = db.execute(f"DELETE FROM {table} WHERE NOT ({_valid(col, kind)})").rowcount
                what = f"{table} rows without {_WORD[kind]} in {col}"
            else:
                n = db.execute(f"UPDATE {table} SET {col} = NULL WHERE {col} IS NOT NULL "
                               f"AND NOT ({_valid(col, kind)})").rowcount
                what = f"{table}.{col} values that are not {_WORD[kind]} (left out)"
            out.append(Finding(n, what + (" (BLOBs, text where numbers belong, non-finite or "
                                          "out-of-range numbers)" if kind != "T" else "")))
    return out


def _delete(db, sql: str, params=()) -> int:
    return db.execute(sql, params).rowcount


def _dedupe(db, table: str, key: str, what: str) -> list[Finding]:
    """Rows repeating a key: exact copies collapse to one; conflicting ones all go (which
    of them is right cannot be known)."""
    cols = ", ".join(RULES[table])
    same = _delete(db, f"DELETE FROM {table} WHERE rowid NOT IN "
                       f"(SELECT min(rowid) FROM {table} GROUP BY {cols})")
    differ = _delete(db, f"DELETE FROM {table} WHERE ({key}) IN "
                         f"(SELECT {key} FROM {table} GROUP BY {key} HAVING count(*) > 1)")
    return [Finding(same, f"{what} repeated exactly (one kept)"),
            Finding(differ, f"{what} with conflicting duplicates (all left out)")]


#: (table, column, condition, what): cells that become absent where the condition holds
_CELL_RULES = [
    *((t, c, f"{c} < 0", f"negative {t}.{c} values (left out)") for t, c in (
        ("runs", "started_ns"), ("runs", "ended_ns"), ("runs", "ringbuf_drops"),
        ("devices", "start_ns"), ("devices", "duration_ns"), ("tasks", "freeze_latency_ns"),
        ("kmsg", "ts_us"))),
    *((t, c, f"{c} > {MAX_DURATION_NS}", f"{t}.{c} values over 2**53 ns (104 days; left out)")
      for t, c in (("devices", "duration_ns"), ("tasks", "freeze_latency_ns"))),
    *((t, c, f"{c} NOT IN (0, 1)", f"{t}.{c} values other than 0 and 1 (left out)")
      for t, c in (("tasks", "kthread"), ("tasks", "frozen"))),
]


def _absent_where(db: sqlite3.Connection, rules) -> list[Finding]:
    """Apply cell rules, one scan per table when it has nothing to fix (the usual case)."""
    out = []
    for table in dict.fromkeys(r[0] for r in rules):
        mine = [r for r in rules if r[0] == table]
        any_bad = " OR ".join(f"({cond})" for _, _, cond, _ in mine)
        if not db.execute(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {any_bad})").fetchone()[0]:
            continue
        for _, col, cond, what in mine:
            out.append(Finding(db.execute(f"UPDATE {table} SET {col} = NULL WHERE {cond}").rowcount,
                               what))
    return out


def _impossible(db: sqlite3.Connection) -> list[Finding]:
    out = []
    statuses = ", ".join(f"'{s}'" for s in RUN_STATUSES)
    out.append(Finding(_delete(db, f"DELETE FROM runs WHERE status NOT IN ({statuses})"),
                       f"runs with a status other than {', '.join(RUN_STATUSES)} (left out "
                       "with their rows)"))
    out.append(Finding(_delete(db, "DELETE FROM runs WHERE run_id IN (SELECT run_id FROM runs "
                                   "GROUP BY run_id HAVING count(*) > 1)"),
                       "runs sharing a run_id (left out with their rows: the rows cannot be "
                       "told apart)"))
    out.append(Finding(db.execute(
        "UPDATE runs SET started_ns = NULL, ended_ns = NULL WHERE ended_ns < started_ns"
    ).rowcount, "runs ending before they start (start and end times left out)"))
    out += _absent_where(db, _CELL_RULES)
    out.append(Finding(_delete(db, "DELETE FROM probes WHERE attached NOT IN (0, 1)"),
                       "probes rows whose attached is neither 0 nor 1"))
    kinds = ", ".join(f"'{k}'" for k in EVENT_KINDS)
    out.append(Finding(_delete(db, f"DELETE FROM events WHERE kind NOT IN ({kinds})"),
                       f"events of a kind other than {', '.join(EVENT_KINDS)}"))
    out.append(Finding(_delete(db, "DELETE FROM events WHERE ts_ns < 0"),
                       "events with a negative timestamp"))
    units = ", ".join(f"'{u}'" for u in NON_NEGATIVE_UNITS)
    out.append(Finding(_delete(db, f"DELETE FROM metrics WHERE value < 0 AND unit IN ({units})"),
                       "negative metrics (in a unit that cannot be negative)"))
    kb = " OR ".join(f"{c} < 0" for c in ("rss_kb", "anon_kb", "shmem_kb", "file_kb", "swap_kb"))
    out.append(Finding(_delete(db, f"DELETE FROM processes WHERE {kb}"),
                       "processes rows with a negative amount of memory"))
    for table in PER_RUN:
        n = _delete(db, f"DELETE FROM {table} WHERE run_id NOT IN (SELECT run_id FROM runs)")
        out.append(Finding(n, f"{table} rows of runs that do not exist (or were left out above)"))
    out += _dedupe(db, "meta", "key", "meta keys")
    out += _dedupe(db, "probes", "name", "probes")
    out += _dedupe(db, "metrics", "run_id, name", "metrics (run_id, name)")
    out += _dedupe(db, "not_measured", "run_id, name", "not_measured (run_id, name)")
    out.append(Finding(_bad_numeric_meta(db), "meta values that should be numbers and are not "
                                              f"({', '.join(NUMERIC_META)}; left out)"))
    return out


def _bad_numeric_meta(db: sqlite3.Connection) -> int:
    bad = []
    for key, value in db.execute(
            f"SELECT key, CAST(value AS BLOB) FROM meta "
            f"WHERE key IN ({', '.join('?' * len(NUMERIC_META))})", NUMERIC_META):
        try:
            number = float(value.decode("utf-8", "replace"))
        except (TypeError, ValueError):
            number = -1.0
        if not 0 <= number <= MAX_REAL:  # also NaN and inf
            bad.append(key)
    for key in bad:
        db.execute("DELETE FROM meta WHERE key = ?", (key,))
    return len(bad)
