"""The dataset on Dask (``dask.distributed``): past one machine.

Every capture's rows lie in one file per table: the files one ``snapprof pool`` chunk wrote
for one kernel release (``<table>/kernel=<release>/<batch>-<n>.parquet``), a *unit*. So
the reduction of ``duck.SQL`` — complete runs joined to their label, negative durations
refused, samples grouped to distinct values with counts — can run unit by unit wherever
the files are, and the partial results combine exactly: counts add up, distinct sets
unite, the first unit in pooled order is the one with the smallest key, and what is per
capture (a task's slowest latency in a run, the not-measured reasons, the clock marks)
is whole inside its unit.

Each Dask task reads a group of units with pyarrow (through fsspec for URLs: a shared
folder, ``s3://``, ``gs://``), runs the very statements of ``duck.SQL`` on them with an
embedded DuckDB of one thread, and returns the few reduced rows; the client adds the
parts up (``COMBINE``). Only the reduced frames travel; the order statistics then run as
for DuckDB (``orderstats``), so both engines give the same figures. (The first version
did the same reduction with ``dask.dataframe`` joins and group-bys: 233 s for 10,000
captures on the 2-core machine, against 12 s for DuckDB, as pandas joins on string keys
held the GIL; docs/fleet.md.)

A cluster: ``DaskEngine(root, scheduler="tcp://host:8786")`` (the workers need snapprof's
dependencies and access to ``root``); without one, a local cluster of ``workers``.
"""

from __future__ import annotations

import math

import pandas as pd

from snapprof.analysis.phases import CLOCK_BACK, CLOCK_JUMP
from snapprof.errors import SnapprofError, first_line
from snapprof.fleet import layout
from snapprof.fleet.engine import Engine, Reduced

#: Seconds to wait for a scheduler before giving up with one line.
CONNECT_TIMEOUT = 10
#: Tasks per worker thread: enough to even out uneven units, few enough that each task's
#: fixed cost (a DuckDB connection, a few statements) stays small against its reading.
TASKS_PER_THREAD = 4
#: At most this many units a task: a task holds its units' columns in memory at once.
MAX_UNITS_PER_TASK = 8
#: The columns of each table the reduction (duck.SQL) reads: only these are read, and the
#: text ones as Arrow dictionaries (a capture id repeated on every row is one string), as
#: DuckDB itself reads Parquet column by column. Reading whole tables took 4 GiB for
#: 10,000 captures of 20 runs.
REDUCE_COLUMNS = {
    "runs": ["capture_id", "run_id", "status"],
    "metrics": ["capture_id", "run_id", "seq", "name", "value", "unit", "method"],
    "phases": ["capture_id", "run_id", "phase", "duration_ms", "method", "counted"],
    "devices": ["capture_id", "run_id", "device", "duration_ns"],
    "tasks": ["capture_id", "run_id", "stage", "comm", "freeze_latency_ns"],
    "not_measured": ["capture_id", "run_id", "seq", "name", "reason"],
}

#: How the client adds up the parts of each reduced frame (DuckDB over ``parts``).
COMBINE = {
    "vals": "SELECT kind, k1, k2, label, value, SUM(cnt)::BIGINT AS cnt FROM parts GROUP BY ALL",
    "names": "SELECT DISTINCT kind, name, label FROM parts",
    "refused": "SELECT kind, name, label, SUM(cnt)::BIGINT AS cnt FROM parts GROUP BY ALL",
    "units": "SELECT name, label, arg_min(unit, key) AS unit FROM parts GROUP BY name, label",
    "methods": "SELECT DISTINCT kind, name, label, method FROM parts",
    "not_measured": "SELECT * FROM parts ORDER BY label, cap, first",
    "clocks": "SELECT label, cap, phase, bool_or(jump) AS jump, bool_or(back) AS back "
              "FROM parts GROUP BY ALL",
}


def units_of(manifest: dict) -> list[dict[str, str]]:
    """The dataset's units: {table: relative path} of the files one pool chunk wrote for
    one kernel release, in pooled order."""
    units: dict[str, dict[str, str]] = {}
    for b in manifest["batches"]:
        for table, files in b["files"].items():
            for rel in files:
                units.setdefault(rel.split("/", 1)[-1], {})[table] = rel
    return list(units.values())


def _read(root: str, rels: list[str], table: str, columns: list[str] | None, storage_options,
          dictionary: bool = True):
    """One Arrow table of ``columns`` of ``table``'s files among ``rels`` (text columns as
    dictionaries unless ``dictionary`` is False; no rows, the schema's types, when there
    are no files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = layout.SCHEMAS[table]
    if columns:
        schema = pa.schema([schema.field(c) for c in columns])
    text = [f.name for f in schema if pa.types.is_string(f.type)] if dictionary else None
    parts = []
    for rel in rels:
        url = layout.join(root, rel)
        try:
            if layout.is_remote(root):
                import fsspec

                fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
                parts.append(pq.read_table(path, columns=schema.names, filesystem=fs,
                                           read_dictionary=text))
            else:
                parts.append(pq.read_table(url, columns=schema.names, read_dictionary=text))
        except FileNotFoundError:
            raise SnapprofError(f"{root}: cannot read {rel}: no such file (the manifest names "
                                "it)") from None
        except (OSError, pa.ArrowException) as exc:  # pyarrow's "cannot parse" is an OSError too
            raise SnapprofError(f"{root}: cannot read {rel} (damaged?): {first_line(exc)}") from None
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts)


def _reduce_part(root: str, group: list[dict[str, str]], lab: pd.DataFrame, storage_options):
    """Worker: ``duck.SQL`` (and its partial ``units``) over one group of units."""
    import duckdb
    import pyarrow as pa

    from snapprof.fleet import duck

    con = duck.connect(None)
    con.execute("SET threads = 1")
    try:
        for table, columns in REDUCE_COLUMNS.items():
            rels = [u[table] for u in group if table in u]
            con.register(table, _read(root, rels, table, columns, storage_options))
        con.register("lab", lab)
        out = {}
        for name, sql in duck.SQL.items():
            if name == "units":
                sql = duck.PARTIAL_UNITS
            params = {"jump": CLOCK_JUMP, "back": CLOCK_BACK} if name == "clocks" else None
            out[name] = con.execute(sql, params or {}).df()
        return out
    except (duckdb.Error, pa.ArrowException) as exc:  # files of other types than the schema's
        raise SnapprofError(f"{root}: the dataset's files do not hold what snapprof wrote: "
                            f"{first_line(exc)}") from None
    finally:
        con.close()


def _read_part(root: str, group: list[dict[str, str]], table: str, columns, storage_options):
    """Worker: ``table``'s rows of one group of units, as pandas."""
    return _read(root, [u[table] for u in group if table in u], table, columns,
                 storage_options, dictionary=False).to_pandas()


class DaskEngine(Engine):
    name = "dask"

    def __init__(self, root: str, scheduler: str | None = None, workers: int = 2,
                 processes: bool = True, storage_options: dict | None = None):
        import logging

        from distributed import Client, LocalCluster

        self.root = root
        self.manifest = layout.read_manifest(root)
        self.units = units_of(self.manifest)
        self.storage_options = storage_options
        self.cluster = None
        for name in ("distributed", "distributed.core", "distributed.comm"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # one line of ours, not theirs
        try:
            if scheduler:
                self.client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
            else:
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                            processes=processes, dashboard_address=None)
                self.client = Client(self.cluster, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise SnapprofError(f"cannot reach the Dask scheduler {scheduler}: {first_line(exc)}") from None

    def _groups(self) -> list[list[dict[str, str]]]:
        """The units in groups, a few tasks per worker thread, in pooled order."""
        threads = sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values()) or 1
        size = min(MAX_UNITS_PER_TASK, max(1, math.ceil(len(self.units) / (threads * TASKS_PER_THREAD))))
        return [self.units[i:i + size] for i in range(0, len(self.units), size)]

    def _run(self, fn, *args) -> list:
        """fn(root, group, *args, storage_options) on the cluster for every group; the
        results in group order."""
        import pyarrow as pa

        groups = self._groups()
        if not groups:
            return []
        try:
            args = [self.client.scatter(a, broadcast=True) if isinstance(a, pd.DataFrame) else a
                    for a in args]
            futures = [self.client.submit(fn, self.root, g, *args, self.storage_options, pure=False)
                       for g in groups]
            return self.client.gather(futures)
        except (OSError, pa.ArrowException) as exc:  # _read names the file; this is the rest
            raise SnapprofError(f"{self.root}: cannot read the dataset: {first_line(exc)}") from None

    def _table(self, table: str, columns: list[str]) -> pd.DataFrame:
        parts = self._run(_read_part, table, columns)
        if not parts:
            return _read(self.root, [], table, columns, None, dictionary=False).to_pandas()
        return pd.concat(parts, ignore_index=True)

    def captures(self) -> pd.DataFrame:
        caps = self._table("captures", [f.name for f in layout.SCHEMAS["captures"]])
        return caps.sort_values("seq", kind="stable").reset_index(drop=True)

    def run_counts(self) -> pd.DataFrame:
        runs = self._table("runs", ["capture_id", "status", "failure_kind"])
        return (runs.groupby(["capture_id", "status", "failure_kind"], dropna=False)
                .size().rename("cnt").reset_index())

    def reduce(self, labels: pd.DataFrame) -> Reduced:
        from snapprof.fleet import duck

        lab = labels[["capture_id", "label", "cap"]].reset_index(drop=True)
        parts = self._run(_reduce_part, lab)
        if not parts:  # an empty dataset: the reference engine on no files
            parts = [_reduce_part(self.root, [], lab, None)]
        con = duck.connect(None)
        try:
            out = {}
            for name, sql in COMBINE.items():
                con.register("parts", pd.concat([p[name] for p in parts], ignore_index=True))
                out[name] = con.execute(sql).df()
                con.unregister("parts")
        finally:
            con.close()
        nm = out["not_measured"]
        out["not_measured"] = nm.drop(columns=["first"])
        return Reduced(**out)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
