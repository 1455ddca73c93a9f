"""The pooled comparison on Dask (a local cluster of 2 workers) equals the in-memory one."""

from __future__ import annotations

import glob
import os

import pandas as pd
import pytest

from snapprof.analysis.compare import compare, group_captures, load_captures
from snapprof.errors import SnapprofError
from snapprof.fleet import dask_engine, layout
from snapprof.fleet.dask_engine import DaskEngine
from snapprof.fleet.duck import DuckEngine
from snapprof.fleet.engine import REDUCED
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


def _plain(df):
    return [[None if pd.isna(v) else v for v in row] for row in df.itertuples(index=False)]


def _frames_equal(a, b, name):
    keys = list(a.columns)
    a = a.sort_values(keys, kind="stable", na_position="first").reset_index(drop=True)
    b = b[keys].sort_values(keys, kind="stable", na_position="first").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True, check_dtype=False, obj=name)


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """Every capture pooled by a pool of its own: as many units as captures (each capture's
    rows in a file per table of its own), two kernels and more among them."""
    root = str(tmp_path_factory.mktemp("fleet") / "ds")
    for path in CAPTURES:
        assert len(pool([path], root, jobs=1).added) == 1
    return root


@pytest.mark.parametrize("per_thread", [1, 4, 100])
def test_parts_add_up_to_the_reference_reduction(batches, monkeypatch, per_thread):
    """The reduction run unit group by unit group and added up equals DuckDB's over the
    whole dataset, frame by frame: one group per worker thread, a few units a group, and
    one unit a group (each capture in a task of its own)."""
    monkeypatch.setattr(dask_engine, "TASKS_PER_THREAD", per_thread)
    labels = None
    duck = DuckEngine(batches)
    try:
        caps = duck.captures()
        labels = caps[["capture_id", "kernel_release"]].rename(columns={"kernel_release": "label"})
        labels["cap"] = labels.groupby("label").cumcount()
        ref = duck.reduce(labels)
    finally:
        duck.close()
    eng = DaskEngine(batches, workers=2, processes=False)
    try:
        assert len(eng.units) == len(CAPTURES)
        groups = eng._groups()
        assert sum(len(g) for g in groups) == len(CAPTURES)
        size = -(-len(CAPTURES) // (2 * per_thread))  # units a group: 7, 2, 1
        assert [len(g) for g in groups[:-1]] == [size] * (len(groups) - 1) and len(groups[-1]) <= size
        assert len(groups) > 1
        got = eng.reduce(labels)
        got_caps = eng.captures()
        assert got_caps.columns.tolist() == caps.columns.tolist()
        assert _plain(got_caps) == _plain(caps)  # missing is missing, whichever NA each uses
    finally:
        eng.close()
    for name in REDUCED:
        a = getattr(ref, name)
        if name == "not_measured":  # in pooled order: compared as is
            pd.testing.assert_frame_equal(a[REDUCED[name]].reset_index(drop=True),
                                          getattr(got, name)[REDUCED[name]].reset_index(drop=True),
                                          check_exact=True, check_dtype=False, obj=name)
        else:
            _frames_equal(a[REDUCED[name]], getattr(got, name), name)


def compare_error(root: str) -> str:
    """The SnapprofError a pooled comparison of ``root`` on one Dask worker ends with: one line."""
    eng = DaskEngine(root, workers=1, processes=False)
    try:
        with pytest.raises(SnapprofError) as err:
            compare_pooled(eng)
    finally:
        eng.close()
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_a_damaged_file_is_one_line(batches, tmp_path):
    import shutil

    root = str(tmp_path / "ds")
    shutil.copytree(batches, root)
    manifest = layout.read_manifest(root)
    victim = os.path.join(root, layout.files_of(manifest, "metrics")[0])
    with open(victim, "r+b") as f:
        f.seek(0)
        f.write(b"NOT PARQUET AT ALL")
    msg = compare_error(root)
    assert msg.startswith(f"{root}: cannot read {os.path.relpath(victim, root)} (damaged?): "), msg


def test_a_file_of_other_types_is_one_line(batches, tmp_path):
    """A metrics file whose value column holds text (not what pool writes) is one line."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    root = str(tmp_path / "ds")
    shutil.copytree(batches, root)
    victim = os.path.join(root, layout.files_of(layout.read_manifest(root), "metrics")[0])
    t = pq.read_table(victim)
    i = t.schema.get_field_index("value")
    pq.write_table(t.set_column(i, "value", pa.array(["x"] * t.num_rows)), victim)
    msg = compare_error(root)
    assert msg.startswith(f"{root}: "), msg
