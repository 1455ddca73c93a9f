"""Broken and hostile variants of the real lab captures in tests/data, for tests/test_fuzz_captures.py.

``cases(workdir)`` builds every variant under ``workdir`` and returns ``Case`` objects: a
class name, the file(s) to read, and what a correct snapprof does with it:

- ``expect="refused"``: every command exits 2 with one line naming the file and ``match``;
- ``expect="loads"``: every command succeeds; ``warning`` (when given) is among the
  reader's counted warnings on stderr.
- ``expect="either"``: the random mutator's cases: a one-line refusal or a correct output.

Classes (the issue's plus ours): schema versions, foreign and non-SQLite files, missing
files, non-regular files, dropped tables and columns, retyped columns, corrupt pages,
truncated files, invalid UTF-8, text where numbers belong, BLOBs, non-finite and huge
numbers, integer overflow in sums, non-numeric meta, duplicated keys, unknown statuses,
orphan rows, negative values, time running backwards, hostile strings (terminal escapes,
HTML, bidi) in every text column and in the file name, a journal that is not a file, WAL
mode, an empty capture, a killed writer's hot journal, symlink loops and bad page sizes,
huge text, and a seeded random mutator (SQL values and raw bytes).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

DATA = Path(__file__).parent / "data"
SEEDS = sorted(DATA.glob("*.snap"))
#: small seeds first: most classes use these (the matrix runs every command on each case)
SMALL = [p for p in SEEDS if "pm-test" in p.name or "image-size-0" in p.name]
HIBERNATE = [p for p in SEEDS if "trigger-hibernate" in p.name]

# terminal attacks: retitle (OSC 0 ... BEL), clear screen, cursor home, CR overwrite, NUL,
# a C1 CSI, a bidi override, a line separator, a newline, HTML
HOSTILE = ["\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "ok\rEVIL", "nul\x00byte", "c1\x9b31m",
           "bidi\u202etxt.exe", "ls\u2028sep", "two\nlines", "<script>alert(1)</script>",
           "tab\there", "del\x7f"]


@dataclass
class Case:
    cls: str
    name: str
    paths: list[Path]
    expect: str  # refused | loads | either
    match: str | tuple = ""  # part of the one-line error (refused); warnings that must show (loads)
    notes: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.cls}/{self.name}"


def _copy(seed: Path, out: Path, name: str) -> Path:
    dst = out / name
    shutil.copyfile(seed, dst)
    return dst


def _sql(path: Path, *statements: str, params=None) -> Path:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA ignore_check_constraints = ON")
    db.execute("PRAGMA synchronous = OFF")
    for stmt in statements:
        db.execute(stmt, params or ())
    db.close()
    return path


def _recreate(path: Path, table: str, keep: list[str] | None = None) -> None:
    """Recreate a table without its constraints (no primary key, no CHECK), keeping
    ``keep`` columns (default all), so duplicates and bad values can be inserted."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
    keep = keep or cols
    db.execute(f"CREATE TABLE fuzz_tmp AS SELECT {', '.join(keep)} FROM {table}")
    db.execute(f"DROP TABLE {table}")
    db.execute(f"ALTER TABLE fuzz_tmp RENAME TO {table}")
    db.close()


def _first_run(path: Path) -> int:
    db = sqlite3.connect(path)
    rid = db.execute("SELECT min(run_id) FROM runs").fetchone()[0]
    db.close()
    return rid


TABLE_COLUMNS = {
    "meta": ["key", "value"],
    "probes": ["name", "area", "target", "attached", "reason"],
    "runs": ["run_id", "trigger", "status", "error", "started_ns", "ended_ns", "started_wall",
             "ringbuf_drops"],
    "events": ["run_id", "ts_ns", "cpu", "pid", "comm", "kind", "name", "value", "detail"],
    "metrics": ["run_id", "name", "value", "unit", "method", "source"],
    "not_measured": ["run_id", "name", "reason"],
    "tasks": ["run_id", "pid", "tgid", "comm", "kthread", "stage", "freeze_latency_ns", "frozen"],
    "devices": ["run_id", "device", "driver", "parent", "event", "stage", "start_ns",
                "duration_ns", "error", "pid"],
    "kmsg": ["run_id", "seq", "ts_us", "level", "text"],
}
TEXT_COLUMNS = [("meta", "value"), ("probes", "reason"), ("runs", "error"), ("events", "comm"),
                ("events", "detail"), ("metrics", "source"), ("not_measured", "reason"),
                ("tasks", "comm"), ("devices", "device"), ("devices", "driver"), ("kmsg", "text")]


def cases(out: Path) -> list[Case]:
    out.mkdir(parents=True, exist_ok=True)
    found: list[Case] = []
    seeds = iter(_cycle(SMALL))
    for maker in (_versions, _foreign, _missing, _non_regular, _dropped_tables,
                  _dropped_columns, _retyped, _corrupt, _truncated, _utf8, _text_numbers,
                  _blobs, _non_finite, _overflow, _numeric_meta, _duplicates, _status, _orphans,
                  _negative, _reversed, _hostile, _sidecar, _wal, _empty, _hot_journal,
                  _odd_paths, _huge_text):
        found += maker(out, seeds)
    found += random_cases(out, n_sql=14, n_bytes=14, seed=12)
    return found


def _cycle(items):
    while True:
        yield from items


def _versions(out, seeds):
    res = []
    for v, word in ((0, "unknown capture schema version 0"), (4, "newer than this snapprof"),
                    (999, "newer than this snapprof"), (-1, "unknown capture schema version")):
        p = _sql(_copy(next(seeds), out, f"version{v}.snap"), f"PRAGMA user_version = {v}")
        res.append(Case("schema version", str(v), [p], "refused", word))
    return res


def _foreign(out, seeds):
    other = out / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.commit()
    appid = _sql(_copy(next(seeds), out, "appid.snap"), "PRAGMA application_id = 42")
    text = out / "notes.snap"
    text.write_text("hello, not a capture\n")
    empty = out / "empty-file.snap"
    empty.write_bytes(b"")
    head = out / "header-only.snap"
    head.write_bytes(next(seeds).read_bytes()[:50])
    noise = out / "noise.snap"
    noise.write_bytes(random.Random(1).randbytes(8192))
    return [Case("foreign file", "other sqlite", [other], "refused", "not a snapprof capture"),
            Case("foreign file", "application_id", [appid], "refused", "application_id 0x2a"),
            Case("foreign file", "text", [text], "refused", "not an SQLite file"),
            Case("foreign file", "empty", [empty], "refused", "not an SQLite file"),
            Case("foreign file", "header only", [head], "refused", "not a snapprof capture"),
            Case("foreign file", "noise", [noise], "refused", "not an SQLite file")]


def _missing(out, seeds):
    folder = out / "a-folder.snap"
    folder.mkdir()
    return [Case("missing or unreadable", "no such file", [out / "missing.snap"], "refused",
                 "no such file"),
            Case("missing or unreadable", "directory", [folder], "refused", "is a directory")]


def _non_regular(out, seeds):
    fifo = out / "fifo.snap"
    os.mkfifo(fifo)
    sock_path = out / "sock.snap"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    sock.close()
    return [Case("non-regular file", "fifo", [fifo], "refused", "is a FIFO"),
            Case("non-regular file", "char device", [Path("/dev/null")], "refused",
                 "is a character device"),
            Case("non-regular file", "socket", [sock_path], "refused", "is a socket")]


def _dropped_tables(out, seeds):
    res = []
    for table in TABLE_COLUMNS:
        p = _sql(_copy(next(seeds), out, f"drop-{table}.snap"), f"DROP TABLE {table}")
        res.append(Case("dropped table", table, [p], "refused", f"table {table} is missing"))
    return res


def _dropped_columns(out, seeds):
    res = []
    for table, col in (("runs", "status"), ("metrics", "value"), ("events", "ts_ns"),
                       ("tasks", "comm"), ("devices", "duration_ns"), ("kmsg", "text"),
                       ("meta", "value"), ("probes", "attached"), ("not_measured", "reason"),
                       ("runs", "run_id")):
        p = _copy(next(seeds), out, f"dropcol-{table}-{col}.snap")
        _recreate(p, table, [c for c in TABLE_COLUMNS[table] if c != col])
        res.append(Case("dropped column", f"{table}.{col}", [p], "refused",
                        f"table {table} has no column {col}"))
    # devices.pid came later: a capture without it still reads
    p = _copy(next(seeds), out, "dropcol-devices-pid.snap")
    _recreate(p, "devices", TABLE_COLUMNS["devices"][:-1])
    res.append(Case("dropped column", "devices.pid (optional)", [p], "loads"))
    return res


def _retyped(out, seeds):
    res = []
    for table, col, decl in (("metrics", "value", "TEXT"), ("events", "ts_ns", "BLOB"),
                             ("kmsg", "text", "INTEGER")):
        p = _copy(next(seeds), out, f"retype-{table}-{col}.snap")
        db = sqlite3.connect(p)
        types = {r[1]: r[2] for r in db.execute(f"PRAGMA table_info({table})")}
        db.close()
        cols = [f"{c} {decl if c == col else types[c]}" for c in TABLE_COLUMNS[table]]
        _sql(p, f"CREATE TABLE fuzz_tmp ({', '.join(cols)})",
             f"INSERT INTO fuzz_tmp SELECT {', '.join(TABLE_COLUMNS[table])} FROM {table}",
             f"DROP TABLE {table}", f"ALTER TABLE fuzz_tmp RENAME TO {table}")
        res.append(Case("retyped column", f"{table}.{col} {decl}", [p], "refused",
                        f"column {table}.{col} is declared"))
    return res


def _corrupt(out, seeds):
    res = []
    rng = random.Random(7)
    for i in range(6):
        seed = next(seeds)
        data = bytearray(seed.read_bytes())
        pages = len(data) // 4096
        page = rng.randrange(1, pages)
        if i % 2:
            data[page * 4096:(page + 1) * 4096] = rng.randbytes(4096)  # a page of noise
        else:
            # a b-tree page header: page type and cell pointers smashed
            for off in range(0, 24):
                data[page * 4096 + off] = rng.randrange(256)
        p = out / f"corrupt-{i}.snap"
        p.write_bytes(bytes(data))
        res.append(Case("corrupt pages", f"page {page} ({'noise' if i % 2 else 'header'})", [p],
                        "either"))
    return res


def _truncated(out, seeds):
    res = []
    for frac in (0.25, 0.5, 0.9):
        seed = next(seeds)
        data = seed.read_bytes()
        p = out / f"truncated-{int(frac * 100)}.snap"
        p.write_bytes(data[:(int(len(data) * frac) // 4096) * 4096 + 100])
        res.append(Case("truncated file", f"{int(frac * 100)} %", [p], "refused",
                        "capture"))
    return res


def _mutated(out: Path, seed: Path, name: str, cls: str, label: str, steps) -> Case:
    """One capture carrying several mutations of a class; ``steps``: (sql, params, warning)
    each; every warning must show (several per capture keeps the suite fast)."""
    p = _copy(seed, out, name)
    for sql, params, _ in steps:
        _sql(p, sql, params=params)
    return Case(cls, label, [p], "loads", tuple(w for _, _, w in steps if w))


def _utf8(out, seeds):
    bad = "CAST(x'41ff42c0afe2809b' AS TEXT) || rowid"
    return [
        _mutated(out, next(seeds), "utf8-text.snap", "invalid UTF-8",
                 "meta.value, tasks.comm, kmsg.text, metrics.name",
                 [(f"UPDATE {t} SET {c} = {bad}", None, "") for t, c in
                  (("meta", "value"), ("tasks", "comm"), ("kmsg", "text"), ("metrics", "name"))]
                 + [("SELECT 1", None, "text values that are not valid UTF-8")]),
        _mutated(out, next(seeds), "utf8-status.snap", "invalid UTF-8", "runs.status",
                 [(f"UPDATE runs SET status = {bad}", None, "status other than")]),
    ]


def _set3(table: str, col: str) -> str:
    return f"UPDATE {table} SET {col} = ? WHERE rowid IN (SELECT rowid FROM {table} LIMIT 3)"


def _text_numbers(out, seeds):
    res = [_mutated(out, next(seeds), "text-numbers.snap", "text where numbers belong",
                    "events.ts_ns, metrics.value, tasks.freeze_latency_ns, runs.started_ns, kmsg.seq", [
        (_set3("events", "ts_ns"), ("soon",), "events rows without an integer in ts_ns"),
        (_set3("metrics", "value"), ("12 ms",), "metrics rows without a finite number in value"),
        (_set3("tasks", "freeze_latency_ns"), ("1e3x",),
         "tasks.freeze_latency_ns values that are not"),
        (_set3("runs", "started_ns"), ("yesterday",), "runs.started_ns values that are not"),
        (_set3("kmsg", "seq"), ("first",), "kmsg.seq values that are not")]),
        _mutated(out, HIBERNATE[1], "text-devices.snap", "text where numbers belong",
                 "devices.duration_ns, devices.start_ns", [
            (_set3("devices", "duration_ns"), ("slow",), "devices.duration_ns values that are not"),
            (_set3("devices", "start_ns"), ("early",), "devices.start_ns values that are not")])]
    p = _copy(next(seeds), out, "text-run_id.snap")
    _recreate(p, "runs")
    _sql(p, "UPDATE runs SET run_id = 'one'")
    res.append(Case("text where numbers belong", "runs.run_id", [p], "loads",
                    ("runs rows without an integer in run_id", "rows of runs that do not exist")))
    return res


def _blobs(out, seeds):
    blob = "x'1b5b324a00ff'"
    return [_mutated(out, next(seeds), "blobs.snap", "BLOBs",
                     "events.comm, metrics.value, meta.value, tasks.pid", [
        (f"UPDATE events SET comm = {blob} WHERE rowid < 3", None,
         "events.comm values that are not text"),
        (f"UPDATE metrics SET value = {blob} WHERE rowid < 3", None,
         "metrics rows without a finite number"),
        (f"UPDATE meta SET value = {blob} WHERE key = 'hostname'", None,
         "meta rows without text in value"),
        (f"UPDATE tasks SET pid = {blob} WHERE rowid < 3", None,
         "tasks rows without an integer in pid")])]


def _non_finite(out, seeds):
    return [
        _mutated(out, next(seeds), "nonfinite.snap", "non-finite and huge numbers",
                 "metrics +inf, -inf, 1e308", [
            ("UPDATE metrics SET value = 9e999 WHERE rowid IN (1, 2)", None, ""),
            ("UPDATE metrics SET value = -9e999 WHERE rowid IN (3, 4)", None, ""),
            ("UPDATE metrics SET value = 1e308 WHERE rowid IN (5, 6)", None,
             "6 metrics rows without a finite number")]),
        _mutated(out, next(seeds), "huge-ts.snap", "non-finite and huge numbers",
                 "int64 max timestamps and drops", [
            ("UPDATE events SET ts_ns = 9223372036854775807 WHERE rowid IN "
             "(SELECT rowid FROM events LIMIT 2)", None, ""),
            ("UPDATE runs SET ringbuf_drops = 9223372036854775807", None, "")]),
    ]


def _overflow(out, seeds):
    seed = HIBERNATE[0]
    p = _copy(seed, out, "overflow-sum.snap")
    rid = _first_run(p)
    _sql(p, "INSERT INTO devices(run_id, device, driver, parent, event, stage, start_ns, "
            "duration_ns, error, pid) SELECT ?, 'dup', 'drv', NULL, 'freeze', 'suspend', 1, "
            "9223372036854775807, 0, 1 FROM events LIMIT 8", params=(rid,))
    q = _copy(seed, out, "overflow-big.snap")
    _sql(q, "UPDATE devices SET duration_ns = 4611686018427387904")
    return [Case("integer overflow in sums", "8 x int64 max, one device", [p], "loads",
                 "devices.duration_ns values over 2**53 ns"),
            Case("integer overflow in sums", "every callback 2**62", [q], "loads",
                 "devices.duration_ns values over 2**53 ns")]


def _numeric_meta(out, seeds):
    res = []
    for (k1, v1), (k2, v2) in ((("mem_total_kb", "lots"), ("swap_total_kb", "-5")),
                               (("image_size", "nan"), ("reserved_size", "inf"))):
        p = _copy(next(seeds), out, f"meta-{k1}.snap")
        _sql(p, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", params=(k1, v1))
        _sql(p, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", params=(k2, v2))
        res.append(Case("non-numeric meta", f"{k1}={v1!r}, {k2}={v2!r}", [p], "loads",
                        "2 meta values that should be numbers"))
    return res


def _duplicates(out, seeds):
    p = _copy(next(seeds), out, "dup-run.snap")
    _recreate(p, "runs")
    _sql(p, "INSERT INTO runs SELECT * FROM runs")
    q = _copy(next(seeds), out, "dup-keys.snap")
    for table in ("metrics", "meta", "probes"):
        _recreate(q, table)
    _sql(q, "INSERT INTO metrics SELECT * FROM metrics")  # exact copies
    _sql(q, "INSERT INTO metrics SELECT run_id, 'freeze_user_ms', 1.0, 'ms', 'probe', NULL "
            "FROM runs")  # a conflicting value
    _sql(q, "INSERT INTO meta VALUES ('kernel_release', 'other-kernel')")
    _sql(q, "INSERT INTO probes SELECT name, area, target, 1 - attached, reason FROM probes")
    return [Case("duplicated keys", "run_id", [p], "loads", "runs sharing a run_id"),
            Case("duplicated keys", "metrics (same and conflicting), meta key, probe name", [q],
                 "loads", ("repeated exactly (one kept)",
                           "metrics (run_id, name) with conflicting duplicates",
                           "meta keys with conflicting duplicates",
                           "probes with conflicting duplicates"))]


def _status(out, seeds):
    p = _sql(_copy(next(seeds), out, "status-done.snap"), "UPDATE runs SET status = 'done'")
    q = _sql(_copy(next(seeds), out, "status-null.snap"))
    _recreate(q, "runs")
    _sql(q, "UPDATE runs SET status = NULL")
    return [Case("unknown run status", "'done'", [p], "loads",
                 ("status other than", "rows of runs that do not exist")),
            Case("unknown run status", "NULL", [q], "loads", "runs rows without text in status")]


def _orphans(out, seeds):
    steps = []
    for table in ("events", "metrics", "not_measured", "tasks", "kmsg"):
        cols = TABLE_COLUMNS[table]
        steps.append((f"INSERT INTO {table}({', '.join(cols)}) SELECT 9999, "
                      f"{', '.join(cols[1:])} FROM {table} LIMIT 5", None,
                      f"5 {table} rows of runs that do not exist"))
    return [_mutated(out, next(seeds), "orphans.snap", "orphan rows",
                     "events, metrics, not_measured, tasks, kmsg", steps)]


def _negative(out, seeds):
    steps = [(f"UPDATE {table} SET {col} = -abs(coalesce({col}, 5)) - 1", None, warn)
             for table, col, warn in (
                 ("devices", "duration_ns", "negative devices.duration_ns"),
                 ("tasks", "freeze_latency_ns", "negative tasks.freeze_latency_ns"),
                 ("runs", "ringbuf_drops", "negative runs.ringbuf_drops"),
                 ("metrics", "value", "negative metrics"))]
    return [_mutated(out, HIBERNATE[0], "negative.snap", "negative values",
                     "devices.duration_ns, tasks.freeze_latency_ns, runs.ringbuf_drops, "
                     "metrics.value", steps)]


def _reversed(out, seeds):
    p = _sql(_copy(next(seeds), out, "reversed-run.snap"),
             "UPDATE runs SET ended_ns = started_ns - 1000")
    q = _copy(HIBERNATE[0], out, "reversed-phase.snap")
    # every end event of a freezer stage moved before its begin
    _sql(q, "UPDATE events SET ts_ns = ts_ns - 10000000000 WHERE kind = 'end'")
    return [Case("time running backwards", "run ends before it starts", [p], "loads",
                 "runs ending before they start"),
            # the phases keep their start and have no end or duration (never a negative one)
            Case("time running backwards", "span ends before it begins", [q], "loads",
                 notes={"no_negative_phase": True})]


def _hostile(out, seeds):
    """Every text column of every row made hostile (a different attack per row), on a
    snapshot, a pm_test and a real-hibernation capture; kernel_release (compare's label and
    every report's header) too; and the file name."""
    res = []
    for k, seed in enumerate((SMALL[0], SMALL[1], HIBERNATE[0])):
        p = _copy(seed, out, f"hostile-{k}-{seed.stem}.snap")
        db = sqlite3.connect(p, isolation_level=None)
        db.execute("PRAGMA synchronous = OFF")
        for i, (table, col) in enumerate(TEXT_COLUMNS):
            rows = [r[0] for r in db.execute(f"SELECT rowid FROM {table}")]
            for j, rowid in enumerate(rows):
                db.execute(f"UPDATE {table} SET {col} = coalesce({col}, '') || ? WHERE rowid = ?",
                           (HOSTILE[(i + j + k) % len(HOSTILE)], rowid))
        db.execute("UPDATE meta SET value = ? WHERE key = 'kernel_release'",
                   (f"6.{k}\x1b]0;owned\x07\x1b[2J<b>x</b>",))
        db.close()
        res.append(Case("hostile strings", f"every text column ({seed.stem})", [p], "loads",
                        notes={"hostile": True}))
    name = out / "name\x1b[2J\x07\u202e.snap"
    shutil.copyfile(next(seeds), name)
    res.append(Case("hostile strings", "file name", [name], "loads", notes={"hostile": True}))
    return res


def _sidecar(out, seeds):
    p = _copy(next(seeds), out, "fifo-journal.snap")
    os.mkfifo(str(p) + "-journal")
    return [Case("journal not a file", "FIFO -journal", [p], "refused", "not a journal")]


def _wal(out, seeds):
    p = _copy(next(seeds), out, "wal.snap")
    db = sqlite3.connect(p, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("INSERT INTO meta VALUES ('fuzz_wal', 'in the WAL only')")
    # keep the WAL: copy the files aside while the connection is open, then put them back
    wal = Path(str(p) + "-wal").read_bytes()
    main = p.read_bytes()
    db.close()
    p.write_bytes(main)
    Path(str(p) + "-wal").write_bytes(wal)
    return [Case("WAL mode", "uncheckpointed WAL", [p], "loads", "WAL mode",
                 notes={"meta": ("fuzz_wal", "in the WAL only")})]


def _empty(out, seeds):
    p = _sql(_copy(next(seeds), out, "no-runs.snap"), *(f"DELETE FROM {t}" for t in
                                                      ("events", "metrics", "not_measured",
                                                       "tasks", "devices", "kmsg", "runs")))
    return [Case("empty capture", "no runs", [p], "either")]


def _hot_journal(out, seeds):
    """What a writer killed mid-transaction leaves: the file with some uncommitted pages
    already in it and its hot journal (copied while the transaction is open, so no process
    holds a lock on the copies)."""
    res = []
    for k in range(2):
        work = _copy(next(seeds), out, f"writer-{k}.snap")
        db = sqlite3.connect(work, isolation_level=None)
        db.execute("PRAGMA cache_size = 2")  # uncommitted pages spill into the file
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO runs(trigger, status) VALUES ('snapshot', 'complete')")
        db.executemany("INSERT INTO kmsg(run_id, seq, ts_us, level, text) "
                       "VALUES ((SELECT max(run_id) FROM runs), ?, 0, 6, ?)",
                       [(i, "in flight " * 30) for i in range(2000)])
        killed = out / f"killed-{k}.snap"
        shutil.copyfile(work, killed)
        shutil.copyfile(str(work) + "-journal", str(killed) + "-journal")
        db.execute("ROLLBACK")
        db.close()
        res.append(Case("killed writer (hot journal)", f"{k}", [killed], "loads",
                        "stopped in the middle of a transaction",
                        notes={"same_runs_as": work}))
    return res


def _odd_paths(out, seeds):
    loop = out / "loop.snap"
    os.symlink(loop, loop)
    page = _copy(next(seeds), out, "bad-page-size.snap")
    data = bytearray(page.read_bytes())
    data[16:18] = b"\x00\x07"  # page size 7: not a power of two
    page.write_bytes(bytes(data))
    return [Case("odd paths and headers", "symlink loop", [loop], "refused", "cannot read"),
            Case("odd paths and headers", "page size 7", [page], "refused", "capture")]


def _huge_text(out, seeds):
    p = _sql(_copy(next(seeds), out, "huge-text.snap"),
             "UPDATE tasks SET comm = printf('%.*c', 200000, 'x') WHERE rowid = 1",
             "UPDATE meta SET value = printf('%.*c', 100000, 'y') WHERE key = 'hostname'")
    return [Case("huge text", "200 kB task name, 100 kB meta value", [p], "loads")]


# --------------------------------------------------------------------------- random mutator

_VALUES = [None, 0, -1, 1, 2 ** 63 - 1, -2 ** 63, 2 ** 53 + 1, 1.5, -0.0, float("inf"),
           float("-inf"), 1e308, -1e-308, "", "x", "123", "1e999", "NaN", "\x1b[31m",
           "\x00", "\u202e", "<img src=x>", b"\x00\xff", b"", "complete", "begin", 9999]


def random_cases(out: Path, n_sql: int, n_bytes: int, seed: int) -> list[Case]:
    """A seeded mutator: ``n_sql`` captures with 1-6 random cell, row or schema changes
    through SQLite, and ``n_bytes`` with random bytes flipped in the file."""
    rng = random.Random(seed)
    res = []
    pool = SMALL + HIBERNATE  # one run each: the three-run captures cost 3x the time
    for i in range(n_sql):
        src = rng.choice(pool)
        p = _copy(src, out, f"random-sql-{i}.snap")
        db = sqlite3.connect(p, isolation_level=None)
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute("PRAGMA synchronous = OFF")
        done = []
        for _ in range(rng.randint(1, 6)):
            table = rng.choice(list(TABLE_COLUMNS))
            col = rng.choice(TABLE_COLUMNS[table])
            op = rng.random()
            try:
                if op < 0.7:
                    value = rng.choice(_VALUES)
                    db.execute(f"UPDATE {table} SET {col} = ? WHERE rowid IN (SELECT rowid FROM "
                               f"{table} ORDER BY random() LIMIT ?)", (value, rng.randint(1, 5)))
                    done.append(f"{table}.{col}={value!r}")
                elif op < 0.85:
                    db.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
                               f"ORDER BY random() LIMIT ?)", (rng.randint(1, 20),))
                    done.append(f"delete {table}")
                else:
                    db.execute(f"INSERT INTO {table} SELECT * FROM {table} ORDER BY random() "
                               "LIMIT 3")
                    done.append(f"duplicate {table}")
            except sqlite3.Error as exc:  # NOT NULL / primary key: the schema said no
                done.append(f"({table}: {exc})")
        db.close()
        res.append(Case("random mutator (SQL)", f"{i} {src.stem}: {'; '.join(done)}", [p], "either"))
    for i in range(n_bytes):
        src = rng.choice(pool)
        data = bytearray(src.read_bytes())
        for _ in range(rng.randint(1, 40)):
            pos = rng.randrange(100, len(data))  # past the header: SQLite's own parsing
            data[pos] = rng.randrange(256)
        p = out / f"random-bytes-{i}.snap"
        p.write_bytes(bytes(data))
        res.append(Case("random mutator (bytes)", f"{i} {src.stem}", [p], "either"))
    return res
