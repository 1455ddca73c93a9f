"""The pooled comparison on Dask (a local cluster of 2 workers) equals the in-memory one."""

from __future__ import annotations

import glob
import os

from snapprof.analysis.compare import compare, group_captures, load_captures
from snapprof.fleet.dask_engine import DaskEngine
from snapprof.fleet.pooled import compare_pooled
from snapprof.fleet.writer import pool
from tests.test_fleet_parity import assert_same

DATA = os.path.join(os.path.dirname(__file__), "data")
CAPTURES = sorted(glob.glob(os.path.join(DATA, "*.snap")))


def test_dask_local_cluster_equals_in_memory(tmp_path):
    root = str(tmp_path / "ds")
    pool(CAPTURES, root, jobs=1)
    ref = compare(group_captures(load_captures(CAPTURES, for_compare=True)))
    # through fsspec, as for object storage (s3://...): a file:// URL
    eng = DaskEngine("file://" + root, workers=2, processes=False)
    try:
        assert len(eng.client.scheduler_info()["workers"]) == 2
        got = compare_pooled(eng)
    finally:
        eng.close()
    assert_same(ref, got)
