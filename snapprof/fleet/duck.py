"""The dataset on DuckDB: one machine, embedded, reading the Parquet files in place.

DuckDB scans only the columns a query names, in parallel, spilling to disk past its memory
limit, and hands results to pandas without a copy: a pooled comparison of 200,000 runs
reads a few columns of the Parquet files and returns a few thousand rows
(``engine.REDUCED``). The views name exactly the files the manifest commits.
"""

from __future__ import annotations

import pandas as pd

from snapprof.analysis.phases import CLOCK_BACK, CLOCK_JUMP
from snapprof.errors import SnapprofError, first_line
from snapprof.fleet import layout
from snapprof.fleet.engine import Engine, Reduced

#: The reduction, one statement per frame of engine.REDUCED, over the views and ``lab``
#: (capture_id, label, cap). ``cr``: the complete runs with their label.
_CTE = """
WITH cr AS (SELECT r.capture_id, r.run_id, l.label, l.cap FROM runs r JOIN lab l USING (capture_id)
            WHERE r.status = 'complete'),
m AS (SELECT m.name, m.value, m.unit, m.method, m.seq, cr.label, cr.cap,
             (m.unit = 'ms' AND m.value < 0) AS refused
      FROM metrics m JOIN cr USING (capture_id, run_id)),
p AS (SELECT p.phase, p.duration_ms, p.method, p.counted, cr.label,
             COALESCE(p.duration_ms < 0, FALSE) AS refused
      FROM phases p JOIN cr USING (capture_id, run_id))
"""

SQL = {
    "vals": _CTE + """,
d AS (SELECT d.device, d.duration_ns / 1e6 AS ms, cr.label FROM devices d JOIN cr USING (capture_id, run_id)),
t AS (SELECT COALESCE(t.stage, '?') AS stage, COALESCE(t.comm, '?') AS comm, cr.label,
             MAX(t.freeze_latency_ns / 1e6) AS ms
      FROM tasks t JOIN cr USING (capture_id, run_id)
      GROUP BY t.capture_id, t.run_id, COALESCE(t.stage, '?'), COALESCE(t.comm, '?'), cr.label)
SELECT 'metric' AS kind, name AS k1, NULL::VARCHAR AS k2, label, value, COUNT(*) AS cnt
  FROM m WHERE NOT refused GROUP BY ALL
UNION ALL
SELECT 'phase', phase, NULL, label, duration_ms, COUNT(*) FROM p
  WHERE counted AND duration_ms IS NOT NULL AND NOT refused GROUP BY ALL
UNION ALL
SELECT 'device', device, NULL, label, ms, COUNT(*) FROM d GROUP BY ALL
UNION ALL
SELECT 'task', stage, comm, label, ms, COUNT(*) FROM t GROUP BY ALL
""",
    "names": _CTE + """
SELECT DISTINCT 'metric' AS kind, name, label FROM m WHERE NOT refused
UNION ALL SELECT DISTINCT 'phase', phase, label FROM p WHERE NOT refused
""",
    "refused": _CTE + """
SELECT 'metric' AS kind, name, label, COUNT(*) AS cnt FROM m WHERE refused GROUP BY ALL
UNION ALL SELECT 'phase', phase, label, COUNT(*) FROM p WHERE refused GROUP BY ALL
""",
    "units": _CTE + """
SELECT name, label, arg_min(unit, cap * 4294967296 + seq) AS unit FROM m WHERE NOT refused
GROUP BY name, label
""",
    "methods": _CTE + """
SELECT DISTINCT 'metric' AS kind, name, label, method FROM m WHERE NOT refused AND method IS NOT NULL
UNION ALL SELECT DISTINCT 'phase', phase, label, method FROM p
  WHERE NOT refused AND duration_ms IS NOT NULL AND method IS NOT NULL
""",
    # each reason once per capture and figure (and whether in a complete run), in the order
    # of its first row: what the reasons need, without a row per run
    "not_measured": """
SELECT l.label, l.cap, n.name, n.reason, (r.status = 'complete') AS in_complete, MIN(n.seq) AS first
FROM not_measured n JOIN lab l USING (capture_id)
     LEFT JOIN runs r USING (capture_id, run_id)
GROUP BY ALL
ORDER BY l.label, l.cap, first
""",
    "clocks": """
SELECT l.label, l.cap, p.phase,
       bool_or(ends_with(p.method, $jump)) AS jump, bool_or(ends_with(p.method, $back)) AS back
FROM phases p JOIN lab l USING (capture_id)
WHERE ends_with(p.method, $jump) OR ends_with(p.method, $back)
GROUP BY ALL
""",
}


#: ``units`` for a part of the dataset (dask_engine): the first unit with its key, so that
#: parts combine to the first of all.
PARTIAL_UNITS = _CTE + """
SELECT name, label, arg_min(unit, cap * 4294967296 + seq) AS unit, MIN(cap * 4294967296 + seq) AS key
FROM m WHERE NOT refused GROUP BY name, label
"""


def connect(memory_limit: str | None = None):
    import duckdb

    con = duckdb.connect(":memory:")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    return con


class DuckEngine(Engine):
    name = "duckdb"

    def __init__(self, root: str, memory_limit: str | None = "1GB", threads: int | None = None):
        self.root = root
        self.manifest = layout.read_manifest(root)
        if layout.is_remote(root):
            raise SnapprofError(f"{root}: the DuckDB engine reads a local dataset; for object "
                                "storage use --engine dask (docs/fleet.md)")
        self.con = connect(memory_limit)
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        for table, schema in layout.SCHEMAS.items():
            files = [layout.join(root, f) for f in layout.files_of(self.manifest, table)]
            if files:
                listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                self.con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listed}], "
                                 "hive_partitioning = false)")
            else:  # an empty dataset: the same columns, no rows
                cols = ", ".join(f"NULL::{_duck_type(f.type)} AS {f.name}" for f in schema)
                self.con.execute(f"CREATE VIEW {table} AS SELECT {cols} WHERE FALSE")

    def query(self, sql: str, params=None) -> pd.DataFrame:
        import duckdb

        try:
            return self.con.execute(sql, params or {}).df()
        except duckdb.IOException as exc:
            raise SnapprofError(f"{self.root}: cannot read the dataset: {first_line(exc)}") from None
        except duckdb.InvalidInputException as exc:
            raise SnapprofError(f"{self.root}: a dataset file is damaged: {first_line(exc)}") from None

    def captures(self) -> pd.DataFrame:
        return self.query("SELECT * FROM captures ORDER BY seq")

    def run_counts(self) -> pd.DataFrame:
        return self.query("SELECT capture_id, status, failure_kind, COUNT(*) AS cnt FROM runs GROUP BY ALL")

    def reduce(self, labels: pd.DataFrame) -> Reduced:
        self.con.register("lab", labels[["capture_id", "label", "cap"]])
        try:
            out = {}
            for name, sql in SQL.items():
                params = {"jump": CLOCK_JUMP, "back": CLOCK_BACK} if name == "clocks" else None
                out[name] = self.query(sql, params)
            return Reduced(**out)
        finally:
            self.con.unregister("lab")

    def wide(self, labels: pd.DataFrame):
        return _wide_of(self, labels)

    def close(self) -> None:
        self.con.close()


def _duck_type(t) -> str:
    return {"string": "VARCHAR", "double": "DOUBLE", "int64": "BIGINT", "bool": "BOOLEAN"}[str(t)]


_WIDE = {
    "metric": """
SELECT l.cap, m.run_id, m.name AS col, m.value FROM metrics m
JOIN runs r USING (capture_id, run_id) JOIN lab l USING (capture_id)
WHERE r.status = 'complete' AND NOT (m.unit = 'ms' AND m.value < 0)
ORDER BY l.cap, m.seq""",
    "phase": """
SELECT l.cap, p.run_id, p.phase AS col, p.duration_ms AS value FROM phases p
JOIN runs r USING (capture_id, run_id) JOIN lab l USING (capture_id)
WHERE r.status = 'complete' AND COALESCE(p.duration_ms >= 0, TRUE)
  AND (p.counted OR p.duration_ms IS NULL)
ORDER BY l.cap, p.seq""",
    "runs": """
SELECT l.cap, r.run_id FROM runs r JOIN lab l USING (capture_id)
WHERE r.status = 'complete' ORDER BY l.cap, r.run_id""",
}


def _wide_of(engine: DuckEngine, lab: pd.DataFrame):
    """Group.values and Group.phases of one label: every complete run's figures, one column
    per metric (phase), as analysis.compare._wide makes them (for the HTML page's plots)."""
    from snapprof.analysis.phases import PHASE_ORDER

    engine.con.register("lab", lab[["capture_id", "label", "cap"]])
    try:
        runs = engine.query(_WIDE["runs"])
        index = pd.MultiIndex.from_frame(runs[["cap", "run_id"]].astype("int64"))
        out = []
        for kind in ("metric", "phase"):
            long = engine.query(_WIDE[kind])
            if long.empty:
                out.append(pd.DataFrame(index=index, dtype="float64"))
                continue
            t = long.pivot_table(index=["cap", "run_id"], columns="col", values="value",
                                 aggfunc="first", dropna=False)
            t.columns.name = None
            out.append(t.reindex(index).astype("float64"))
    finally:
        engine.con.unregister("lab")
    values, phases = out
    phases = phases[[p for p in PHASE_ORDER if p in phases.columns]
                    + sorted(p for p in phases.columns if p not in PHASE_ORDER)]
    return values, phases

