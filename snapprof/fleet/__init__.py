"""Fleet scale: many captures pooled into one Parquet dataset, queried with DuckDB or Dask.

Small modules, one job each (docs/fleet.md describes the dataset and the choices):

- ``layout``   the dataset on disk: its manifest (format version, committed files), tables
               and their Arrow schemas, the lock and the commit by rename;
- ``tables``   one capture's frames (``snapprof.analysis``) as rows of those tables;
- ``writer``   ``pool``: captures in, a new committed batch of Parquet files out
               (incremental, idempotent, skips counted);
- ``engine``   what a query engine gives the pooled comparison (captures, runs, and the
               complete-run samples reduced to distinct values with counts);
- ``duck``     that engine on DuckDB (one machine);
- ``dask_engine`` the same on Dask (a cluster, object storage through fsspec);
- ``orderstats`` the per-label statistics (median and interval, shift and interval,
               Mann-Whitney) from the reduced samples, in DuckDB SQL;
- ``pooled``   a ``snapprof.analysis.compare.Comparison`` from an engine: the objects the
               compare reporters already take.

Analysis side only: nothing here is imported by the recorder (snapprof/record/).
"""
