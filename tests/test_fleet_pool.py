"""snapprof pool: incremental, idempotent, skips counted, bad targets refused in one line;
snapprof compare on a dataset gives the in-memory output."""

from __future__ import annotations

import glob
import json
import os
import shutil

import pytest

from snapprof import cli
from snapprof.errors import SnapprofError
from snapprof.fleet import layout
from snapprof.fleet.writer import pool

DATA = os.path.join(os.path.dirname(__file__), "data")
CAPTURES = sorted(glob.glob(os.path.join(DATA, "*.snap")))
SNAPSHOTS = [os.path.join(DATA, n) for n in ("bookworm-6.1-snapshot.snap", "trixie-6.12-snapshot.snap")]


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def manifest_text(root):
    with open(os.path.join(root, layout.MANIFEST), encoding="utf-8") as fh:
        return fh.read()


def test_pool_is_idempotent_and_incremental(tmp_path, capsys):
    root = str(tmp_path / "ds")
    rc, _, err = run(capsys, "pool", "-o", root, "--jobs", "1", SNAPSHOTS[0])
    assert rc == 0 and "1 captures added" in err
    first = manifest_text(root)
    # the same capture again, and a copy of it under another name: nothing changes
    copy = tmp_path / "renamed.snap"
    shutil.copyfile(SNAPSHOTS[0], copy)
    rc, _, err = run(capsys, "pool", "-o", root, "--jobs", "1", SNAPSHOTS[0], str(copy))
    assert rc == 0 and "0 captures added" in err and "2 already pooled" in err
    assert "dataset unchanged" in err and manifest_text(root) == first
    # another capture: a second batch, and both in pool order
    rc, _, err = run(capsys, "pool", "-o", root, "--jobs", "1", SNAPSHOTS[1])
    assert rc == 0 and "1 captures added" in err
    m = layout.read_manifest(root)
    assert len(m["batches"]) == 2
    from snapprof.fleet.duck import DuckEngine
    eng = DuckEngine(root)
    try:
        caps = eng.captures()
    finally:
        eng.close()
    assert list(caps["source"]) == [os.path.basename(p) for p in SNAPSHOTS]
    assert list(caps["seq"]) == [0, 1] and caps["capture_id"].str.len().eq(64).all()
    assert set(caps["kernel_release"]) == {"6.1.0-50-amd64", "6.12.117+deb13-amd64"}
    # partitioned by kernel release
    assert {os.path.basename(os.path.dirname(f)) for f in layout.files_of(m, "metrics")} == {
        "kernel=6.1.0-50-amd64", "kernel=6.12.117%2Bdeb13-amd64"}


def test_folder_with_non_captures_is_pooled_with_counted_skips(tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copyfile(SNAPSHOTS[0], src / "a.snap")
    shutil.copyfile(SNAPSHOTS[1], src / "sub" / "b.snap")
    (src / "notes.txt").write_text("not a capture\n")
    (src / "empty.snap").write_bytes(b"")
    with open(SNAPSHOTS[0], "rb") as fh:
        (src / "cut.snap").write_bytes(fh.read()[:5000])
    root = str(tmp_path / "ds")
    rc, out, err = run(capsys, "pool", "-o", root, "--jobs", "1", str(src))
    assert rc == 0 and out == ""
    lines = err.strip().splitlines()
    assert "2 captures added" in lines[-1] and "3 skipped" in lines[-1]
    skipped = [line for line in lines if line.startswith("snapprof pool: skipped")]
    assert len(skipped) == 3 and all("Traceback" not in line for line in lines)
    assert any("notes.txt" in line and "not an SQLite file" in line for line in skipped)


def test_compare_on_a_dataset_prints_what_compare_on_captures_prints(tmp_path, capsys):
    root = str(tmp_path / "ds")
    pool(CAPTURES, root, jobs=1)
    rc1, want, _ = run(capsys, "compare", *CAPTURES, "--format", "json")
    rc2, got, _ = run(capsys, "compare", root, "--format", "json")
    assert rc1 == rc2 == 0
    assert json.loads(got) == json.loads(want)
    rc, text, _ = run(capsys, "compare", root, "--by", "trigger", "--only", "snapshot",
                      "--only", "hibernate", "--brief")
    assert rc == 0 and "baseline = the first label, snapshot" in text


def test_killed_pool_leaves_nothing_readers_see(tmp_path, capsys):
    root = str(tmp_path / "ds")
    pool(SNAPSHOTS, root, jobs=1)
    before = manifest_text(root)
    # what a pool killed before its commit leaves: a staging folder, a renamed file
    os.makedirs(os.path.join(root, ".staging-x", "metrics"))
    stray = os.path.join(root, "metrics", "kernel=6.1.0-50-amd64", "stray-00000.parquet")
    shutil.copyfile(os.path.join(root, layout.files_of(layout.read_manifest(root), "metrics")[0]), stray)
    rc, want, _ = run(capsys, "compare", *SNAPSHOTS, "--format", "json")
    rc, got, _ = run(capsys, "compare", root, "--format", "json")
    assert json.loads(got) == json.loads(want)  # the stray file's rows are not read twice
    pool(SNAPSHOTS, root, jobs=1)  # nothing new; the leftovers are cleaned
    assert not os.path.exists(stray) and not os.path.exists(os.path.join(root, ".staging-x"))
    assert manifest_text(root) == before


@pytest.mark.parametrize("case", ["version", "damaged", "not-dataset", "under-a-file"])
def test_bad_targets_give_one_line(tmp_path, capsys, case):
    root = str(tmp_path / "ds")
    if case in ("version", "damaged"):
        pool(SNAPSHOTS[:1], root, jobs=1)
        m = json.loads(manifest_text(root))
        if case == "version":
            m["version"] = layout.VERSION + 1
            text = json.dumps(m)
        else:
            text = "{\"format\": \"snapprof-dataset\", \"version\": 1, \"batches\": [{\"files\": {\"metrics\": [\"../../etc/passwd\"]}}]}"
        with open(os.path.join(root, layout.MANIFEST), "w") as fh:
            fh.write(text)
        want = f"format version {layout.VERSION + 1}" if case == "version" else "damaged"
    elif case == "not-dataset":
        os.makedirs(root)
        (tmp_path / "ds" / "other.txt").write_text("x")
        want = "not a snapprof dataset"
    else:
        (tmp_path / "file").write_text("x")
        root = str(tmp_path / "file" / "ds")
        want = "cannot create"
    rc, out, err = run(capsys, "pool", "-o", root, SNAPSHOTS[1])
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and want in err
    if case in ("version", "damaged"):
        rc, out, err = run(capsys, "compare", root)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and want in err


def test_unreachable_cluster_is_one_line(tmp_path, capsys, monkeypatch):
    from snapprof.fleet import dask_engine

    root = str(tmp_path / "ds")
    pool(SNAPSHOTS, root, jobs=1)
    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT", 1)
    rc, out, err = run(capsys, "compare", root, "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "cannot reach the Dask scheduler" in err


def test_dataset_options_refused_for_captures(capsys):
    rc, _, err = run(capsys, "compare", *SNAPSHOTS, "--by", "host")
    assert rc == 2 and "--by" in err and "for a dataset" in err
    with pytest.raises(SnapprofError):
        layout.check_manifest({"format": "x"}, "somewhere")


def test_report_on_a_dataset_gives_each_labels_statistics(tmp_path, capsys):
    from snapprof.analysis.compare import compare, group_captures, load_captures

    root = str(tmp_path / "ds")
    pool(CAPTURES, root, jobs=1)
    rc, out, err = run(capsys, "report", root, "--format", "json")
    assert rc == 0 and err == ""
    model = json.loads(out)
    ref = compare(group_captures(load_captures(CAPTURES, for_compare=True))).summary
    assert model["labels"] == list(dict.fromkeys(ref["label"]))
    assert len(model["summary"]) == len(ref)
    want = {(r["kind"], r["name"], r["label"]): r for r in ref.to_dict("records")}
    for row in model["summary"]:
        w = want[(row["kind"], row["name"], row["label"])]
        for c in ("n", "median", "p95", "min", "max", "ci_low", "ci_high", "unit"):
            assert row[c] == (None if isinstance(w[c], float) and w[c] != w[c] else w[c]), c
    assert sum(g["captures"] for g in model["groups"]) == len(CAPTURES)
    # the same statistics as one self-contained page: every label, every figure row, escaped
    html_path = tmp_path / "x.html"
    rc, out, err = run(capsys, "report", root, "-o", str(html_path))
    assert rc == 0 and out == "" and "(html; " in err
    page = html_path.read_text(encoding="utf-8")
    assert "default-src 'none'" in page and "<script" not in page and "http" not in page.split("<body>")[1]
    for lab in model["labels"]:
        assert f"<td>{lab}</td>" in page
    assert page.count("<tr><td>") == len(model["summary"]) + len(model["groups"])
    assert "Freeze user space (the kernel&#39;s elapsed)" in page
    rc, out, err = run(capsys, "report", root, "--format", "html", "-o", "-")
    assert rc == 2 and "needs -o FILE.html" in err


def test_culprits_and_processes_are_pooled_and_a_version_1_dataset_still_reads(tmp_path, capsys):
    """Why runs failed and who held the memory are queryable across a fleet: the culprits
    and processes tables hold every capture's rows. A dataset pooled before they existed
    (version 1) still reads, as having none, and pooling into it writes version 2."""
    from snapprof.fleet.duck import DuckEngine
    from test_failures import _capture

    failed, short = tmp_path / "failed.snap", tmp_path / "short.snap"
    _capture(failed, failed=True, culprit=True)
    _capture(short, memory=True)
    comp = sorted(glob.glob(os.path.join(DATA, "composition", "*.snap")))[:2]
    root = str(tmp_path / "ds")
    pool([str(failed), str(short), *comp], root, jobs=1)
    eng = DuckEngine(root)
    try:
        cul = eng.query("SELECT kind, comm, cmdline, state FROM culprits ORDER BY kind")
        procs = eng.query("SELECT COUNT(*) AS n, COUNT(DISTINCT capture_id) AS caps FROM processes")
    finally:
        eng.close()
    assert list(cul["comm"]) == ["dd", "python3"] and cul["state"].iloc[0] == "D"
    assert "\x1b" in cul["cmdline"].iloc[0]  # stored as recorded; readers make it visible
    assert procs["caps"].iloc[0] >= 2 and procs["n"].iloc[0] >= 12

    old = str(tmp_path / "v1")
    pool(comp[:1], old, jobs=1)
    m = json.loads(manifest_text(old))
    for b in m["batches"]:
        b["files"] = {t: f for t, f in b["files"].items() if t not in ("culprits", "processes")}
    m["version"] = 1
    with open(os.path.join(old, layout.MANIFEST), "w") as fh:
        json.dump(m, fh)
    eng = DuckEngine(old)
    try:
        assert eng.query("SELECT COUNT(*) AS n FROM processes")["n"].iloc[0] == 0
    finally:
        eng.close()
    rc, out, err = run(capsys, "report", old, "--format", "json")
    assert rc == 0, err
    pool([str(failed)], old, jobs=1)
    assert json.loads(manifest_text(old))["version"] == layout.VERSION == 2
