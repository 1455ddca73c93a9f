"""snapprof export --format kcidb: KCIDB v5.3 test records, validated against the published schema."""

from __future__ import annotations

import hashlib
import json
import os

import jsonschema
import pytest
from kcidb_io.schema import V5_3

from snapprof import cli
from snapprof.report.model import HEADLINE

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.mark.parametrize("name", ["bookworm-6.1-snapshot.snap", "trixie-6.12-trigger-pm-test-freezer.snap"])
def test_kcidb_records_validate_and_say_what_was_measured(tmp_path, capsys, name):
    src = os.path.join(DATA, name)
    out = tmp_path / "k.json"
    assert cli.main(["export", src, "--format", "kcidb", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    # the published schema itself (kcidb-io's JSON schema), not only the exporter's own check
    jsonschema.validate(doc, V5_3.json)
    assert doc["version"] == {"major": 5, "minor": 3}
    with open(src, "rb") as fh:
        cid = hashlib.sha256(fh.read()).hexdigest()
    from snapprof.analysis.frames import load_capture
    frames = load_capture(src)
    tests = doc["tests"]
    assert len(tests) == len(frames.runs) * len(HEADLINE)
    assert len({t["id"] for t in tests}) == len(tests)
    for t in tests:
        assert t["misc"]["capture_id"] == cid
        rid, fig = t["misc"]["run_id"], t["path"].rsplit(".", 1)[1]
        hit = frames.metrics[(frames.metrics["run_id"] == rid) & (frames.metrics["name"] == fig)]
        if len(hit):
            assert t["status"] == "PASS"
            assert t["number"] == {"value": float(hit["value"].iloc[0]), "unit": hit["unit"].iloc[0]}
        else:  # not measured: no number, never 0, and the reason
            assert t["status"] == "SKIP" and "number" not in t and t["misc"]["not_measured"]
    if "pm-test" in name:
        assert any(t["status"] == "SKIP" for t in tests)
    else:
        assert all(t["status"] == "PASS" and t["duration"] > 0 for t in tests)


def test_kcidb_rejects_a_bad_document():
    """The validator used is strict: a record without its origin fails."""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": {"major": 5, "minor": 3},
                             "tests": [{"id": "snapprof:x", "build_id": "snapprof:y"}]}, V5_3.json)
