"""The dataset on Dask (``dask.dataframe`` on ``dask.distributed``): past one machine.

The same reduction as ``duck.SQL`` — complete runs joined to their label, negative
durations refused, samples grouped to distinct values with counts — written with Dask's
dataframe operations, so it runs on the cluster's workers over files wherever fsspec
reaches them (a shared folder, ``s3://``, ``gs://``). Only the reduced frames come back;
the order statistics then run as for DuckDB (``orderstats``), so both engines give the
same figures.

A cluster: ``DaskEngine(root, scheduler="tcp://host:8786")`` (the workers need snapprof's
dependencies and access to ``root``); without one, a local cluster of ``workers``.
"""

from __future__ import annotations

import pandas as pd

from snapprof.analysis.phases import CLOCK_BACK, CLOCK_JUMP
from snapprof.errors import SnapprofError
from snapprof.fleet import layout
from snapprof.fleet.engine import Engine, Reduced

#: Seconds to wait for a scheduler before giving up with one line.
CONNECT_TIMEOUT = 10


class DaskEngine(Engine):
    name = "dask"

    def __init__(self, root: str, scheduler: str | None = None, workers: int = 2,
                 processes: bool = True, storage_options: dict | None = None):
        import logging

        from distributed import Client, LocalCluster

        self.root = root
        self.manifest = layout.read_manifest(root)
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
            raise SnapprofError(f"cannot reach the Dask scheduler {scheduler}: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    def _table(self, table: str, columns: list[str]):
        import dask.dataframe as dd

        files = [layout.join(self.root, f) for f in layout.files_of(self.manifest, table)]
        if not files:
            schema = layout.SCHEMAS[table]
            empty = schema.empty_table().to_pandas()[columns]
            return dd.from_pandas(empty, npartitions=1)
        return dd.read_parquet(files, columns=columns, storage_options=self.storage_options,
                               dataset={"partitioning": None})

    def _compute(self, *frames):
        try:
            return self.client.compute(list(frames), sync=True)
        except OSError as exc:
            raise SnapprofError(f"{self.root}: cannot read the dataset: {exc}") from None

    def captures(self) -> pd.DataFrame:
        cols = [f.name for f in layout.SCHEMAS["captures"]]
        (caps,) = self._compute(self._table("captures", cols))
        return caps.sort_values("seq", kind="stable").reset_index(drop=True)

    def run_counts(self) -> pd.DataFrame:
        runs = self._table("runs", ["capture_id", "status", "failure_kind"])
        (out,) = self._compute(runs.groupby(["capture_id", "status", "failure_kind"], dropna=False)
                               .size().rename("cnt").reset_index())
        return out

    def reduce(self, labels: pd.DataFrame) -> Reduced:
        lab = labels[["capture_id", "label", "cap"]]
        runs = self._table("runs", ["capture_id", "run_id", "status"])
        # the labelled runs are small (one row per run): computed once and broadcast to every
        # partition of the big tables, so no join shuffles them across the cluster
        (allruns,) = self._compute(runs.merge(lab, on="capture_id"))
        cr = allruns[allruns["status"] == "complete"][["capture_id", "run_id", "label", "cap"]]

        m = self._table("metrics", ["capture_id", "run_id", "seq", "name", "value", "unit", "method"])
        m = m.merge(cr, on=["capture_id", "run_id"])
        m = m.assign(refused=(m["unit"] == "ms") & (m["value"] < 0))
        mk = m[~m["refused"]]
        p = self._table("phases", ["capture_id", "run_id", "phase", "duration_ms", "method", "counted"])
        p = p.merge(cr, on=["capture_id", "run_id"])
        p = p.assign(refused=(p["duration_ms"] < 0).fillna(False))
        pk = p[~p["refused"]]
        d = self._table("devices", ["capture_id", "run_id", "device", "duration_ns"])
        d = d.merge(cr, on=["capture_id", "run_id"])
        d = d.assign(ms=d["duration_ns"] / 1e6)
        t = self._table("tasks", ["capture_id", "run_id", "stage", "comm", "freeze_latency_ns"])
        t = t.merge(cr, on=["capture_id", "run_id"])
        t = t.assign(stage=t["stage"].fillna("?"), comm=t["comm"].fillna("?"),
                     ms=t["freeze_latency_ns"] / 1e6)
        tmax = t.groupby(["capture_id", "run_id", "stage", "comm", "label"])["ms"].max().reset_index()

        def counts(df, keys):
            return df.groupby(keys, dropna=False).size().rename("cnt").reset_index()

        measured = pk[pk["counted"] & pk["duration_ms"].notnull()]
        nm = self._table("not_measured", ["capture_id", "run_id", "seq", "name", "reason"])
        nm = nm.merge(allruns[["capture_id", "run_id", "status"]], on=["capture_id", "run_id"], how="left")
        nm = nm.merge(lab, on="capture_id")
        nm = nm.assign(in_complete=(nm["status"] == "complete").where(nm["status"].notnull(), None))
        nm = (nm.groupby(["label", "cap", "name", "reason", "in_complete"], dropna=False)["seq"]
              .min().reset_index())  # each reason once per capture and figure, as duck.SQL
        ph = self._table("phases", ["capture_id", "phase", "method"])
        ph = ph[ph["method"].str.endswith(CLOCK_JUMP) | ph["method"].str.endswith(CLOCK_BACK)]
        ph = ph.merge(lab, on="capture_id")
        ph = ph.assign(jump=ph["method"].str.endswith(CLOCK_JUMP), back=ph["method"].str.endswith(CLOCK_BACK))
        out = self._compute(
            counts(mk, ["name", "label", "value"]),
            counts(measured, ["phase", "label", "duration_ms"]),
            counts(d, ["device", "label", "ms"]),
            counts(tmax, ["stage", "comm", "label", "ms"]),
            mk[["name", "label"]].drop_duplicates(), pk[["phase", "label"]].drop_duplicates(),
            counts(m[m["refused"]], ["name", "label"]), counts(p[p["refused"]], ["phase", "label"]),
            mk.assign(key=mk["cap"] * 4294967296 + mk["seq"]).groupby(["name", "label", "unit"])["key"].min().reset_index(),
            mk[["name", "label", "method"]].dropna().drop_duplicates(),
            pk[pk["duration_ms"].notnull()][["phase", "label", "method"]].dropna().drop_duplicates(),
            nm, ph.groupby(["label", "cap", "phase"])[["jump", "back"]].max().reset_index())
        (vm, vp, vd, vt, nmet, nph, rm, rp, units, mm, mp, nmr, clocks) = out
        vals = pd.concat([
            vm.rename(columns={"name": "k1"}).assign(kind="metric", k2=None),
            vp.rename(columns={"phase": "k1", "duration_ms": "value"}).assign(kind="phase", k2=None),
            vd.rename(columns={"device": "k1", "ms": "value"}).assign(kind="device", k2=None),
            vt.rename(columns={"stage": "k1", "comm": "k2", "ms": "value"}).assign(kind="task"),
        ], ignore_index=True)[["kind", "k1", "k2", "label", "value", "cnt"]]
        vals["k2"] = vals["k2"].astype(object).where(vals["k2"].notna(), None)
        units = (units.sort_values("key", kind="stable").drop_duplicates(["name", "label"])
                 [["name", "label", "unit"]])
        nmr = nmr.sort_values(["label", "cap", "seq"], kind="stable")
        return Reduced(
            vals=vals,
            names=pd.concat([nmet.assign(kind="metric"),
                             nph.rename(columns={"phase": "name"}).assign(kind="phase")],
                            ignore_index=True)[["kind", "name", "label"]],
            refused=pd.concat([rm.assign(kind="metric"), rp.rename(columns={"phase": "name"}).assign(kind="phase")],
                              ignore_index=True)[["kind", "name", "label", "cnt"]],
            units=units,
            methods=pd.concat([mm.assign(kind="metric"), mp.rename(columns={"phase": "name"}).assign(kind="phase")],
                              ignore_index=True)[["kind", "name", "label", "method"]],
            not_measured=nmr[["label", "cap", "name", "reason", "in_complete"]].reset_index(drop=True),
            clocks=clocks)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
