"""A dataset's comparison through the engine chosen on the command line."""

from __future__ import annotations

from snapprof.analysis.compare import LEVEL


def open_engine(root: str, engine: str = "duckdb", scheduler: str | None = None,
                workers: int = 2, processes: bool = True):
    if engine == "dask":
        from snapprof.fleet.dask_engine import DaskEngine
        return DaskEngine(root, scheduler=scheduler, workers=workers, processes=processes)
    from snapprof.fleet.duck import DuckEngine
    return DuckEngine(root)


def compare_dataset(root: str, by: str = "kernel", only=None, level: float = LEVEL,
                    engine: str = "duckdb", scheduler: str | None = None, workers: int = 2,
                    wide: bool = False):
    """``pooled.compare_pooled`` of the dataset at ``root``."""
    from snapprof.fleet.pooled import compare_pooled

    eng = open_engine(root, engine, scheduler, workers)
    try:
        return compare_pooled(eng, by=by, only=only, level=level, wide=wide)
    finally:
        eng.close()
