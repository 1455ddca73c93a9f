"""The pooled comparison read from S3 (s3fs against a local S3 server, moto's): the same
bytes over the S3 protocol as from a cluster's object store, equal to the in-memory
comparison; and an unreadable bucket is one line."""

from __future__ import annotations

import glob
import os

import pytest

from snapprof.analysis.compare import compare, group_captures, load_captures
from snapprof.fleet.dask_engine import DaskEngine
from snapprof.fleet.pooled import compare_pooled
from snapprof.fleet.writer import pool
from tests.test_fleet_dask import compare_error
from tests.test_fleet_parity import assert_same

DATA = os.path.join(os.path.dirname(__file__), "data")
CAPTURES = sorted(glob.glob(os.path.join(DATA, "*.snap")))


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A local S3 endpoint (moto's server on a free port) with the credentials and endpoint
    in the environment, as botocore and s3fs read them."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env["AWS_ENDPOINT_URL"]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def _upload(local: str, url: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = url[len("s3://"):].split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    fs.put(local.rstrip("/") + "/", url.rstrip("/") + "/", recursive=True)


def test_dask_reads_the_dataset_from_s3(s3, tmp_path):
    local = str(tmp_path / "ds")
    pool(CAPTURES, local, jobs=1)
    url = "s3://fleet/ds"
    _upload(local, url)  # as the docs say: pool writes a folder, copy it to the bucket
    ref = compare(group_captures(load_captures(CAPTURES, for_compare=True)))
    eng = DaskEngine(url, workers=2, processes=False)
    try:
        got = compare_pooled(eng)
    finally:
        eng.close()
    assert_same(ref, got)


def test_a_missing_object_is_one_line(s3, tmp_path):
    import s3fs

    local = str(tmp_path / "ds")
    pool(CAPTURES, local, jobs=1)
    url = "s3://fleet2/ds"
    _upload(local, url)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    victim = sorted(fs.find(url + "/metrics"))[0]
    fs.rm(victim)
    msg = compare_error(url)
    assert msg.startswith(f"{url}: cannot read metrics/"), msg
    assert "no such file" in msg
