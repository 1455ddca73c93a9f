"""Kernels side by side on one userspace, end to end in the lab: `snapprof lab compare`
(two trixie-backports kernels on trixie's userspace), `snapprof lab trend` over three
kernels in the same folder (it reuses the two captures and records only the new kernel),
and `snapprof lab bisect` over those three builds (it reuses all three: no boot).
One folder, three invocations; the tests below assert on what they left behind."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from snapprof.capture import CaptureReader

pytestmark = pytest.mark.lab

SUITE = "trixie"
KERNELS = ("7.2.11+deb13-amd64", "7.2.12+deb13-amd64", "7.3.4+deb13-amd64")  # consecutive builds
RUNS = 4  # the fewest that give a 95 % interval (and so a verdict) with 4 runs a side


def _snapprof(*argv, timeout=3600):
    return subprocess.run([sys.executable, "-m", "snapprof", *argv], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))


def _key(rel):
    return f"{SUITE}_{rel}"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("labcmp") / "out"


@pytest.fixture(scope="module")
def lab_compare(out):
    proc = _snapprof("lab", "compare", "--distro", SUITE, "--kernel", KERNELS[0], "--kernel", KERNELS[2],
                     "--runs", str(RUNS), "-o", str(out), "--timeout", "2400")
    return proc


@pytest.fixture(scope="module")
def lab_trend(out, lab_compare):
    assert lab_compare.returncode == 0, lab_compare.stderr[-3000:]
    mtimes = {k: (out / _key(k) / f"{_key(k)}.snap").stat().st_mtime for k in (KERNELS[0], KERNELS[2])}
    proc = _snapprof("lab", "trend", "--distro", SUITE, "--kernels", ",".join(KERNELS), "--runs", str(RUNS),
                     "-o", str(out), "--timeout", "2400")
    return proc, mtimes


@pytest.fixture(scope="module")
def lab_bisect(out, lab_trend):
    assert lab_trend[0].returncode == 0, lab_trend[0].stderr[-3000:]
    # A threshold every build past the first crosses (their images differ by a few %, far above
    # -50 %): the bisection must walk to the middle build and call it the first bad one.
    return _snapprof("lab", "bisect", "--distro", SUITE, "--good", KERNELS[0], "--bad", KERNELS[2],
                     "--fail-on", "image_pages>-50%", "--runs", str(RUNS), "-o", str(out))


def _metric_values(path: Path, name: str) -> list[float]:
    with CaptureReader(path) as r:
        complete = {x["run_id"] for x in r.runs() if x["status"] == "complete"}
        return [m["value"] for m in r.table("metrics") if m["name"] == name and m["run_id"] in complete]


def test_compare_is_controlled_one_userspace(lab_compare, out):
    assert lab_compare.returncode == 0, lab_compare.stderr[-3000:]
    assert "the kernel is the only variable" in lab_compare.stdout
    assert "Headline" in lab_compare.stdout
    cmp = json.loads((out / "compare.json").read_text())
    assert cmp["userspace"]["status"] == "same", cmp["userspace"]
    assert cmp["labels"] == [KERNELS[0], KERNELS[2]]
    metas = []
    for rel in (KERNELS[0], KERNELS[2]):
        cap = out / _key(rel) / f"{_key(rel)}.snap"
        with CaptureReader(cap) as r:
            runs, meta = r.runs(), r.meta()
        metas.append(meta)
        assert [x["status"] for x in runs] == ["complete"] * RUNS
        assert meta["kernel_release"] == rel and meta["lab_distro"] == f"{SUITE}:{rel}"
        assert meta["os_codename"] == SUITE and meta["libc_version"].startswith("glibc ")
        assert (out / f"{_key(rel)}.html").read_text().count(rel) > 0
    for key in ("libc_version", "python_version", "bcc_version", "distro"):
        assert metas[0][key] == metas[1][key], key  # the userspace is the same, byte for byte
    summary = {(s["kind"], s["name"], s["label"]): s for s in cmp["summary"]}
    for rel in (KERNELS[0], KERNELS[2]):
        values = _metric_values(out / _key(rel) / f"{_key(rel)}.snap", "image_pages")
        assert summary[("metric", "image_pages", rel)]["median"] == pytest.approx(statistics.median(values))


def test_trend_reuses_captures_and_charts_every_kernel(lab_trend, out):
    proc, mtimes = lab_trend
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rel, before in mtimes.items():  # reused, not recorded again
        assert (out / _key(rel) / f"{_key(rel)}.snap").stat().st_mtime == before
        assert "reusing" in proc.stderr
    doc = json.loads((out / "trend.json").read_text())
    assert doc["labels"] == list(KERNELS)
    assert doc["userspace"]["status"] == "same"
    pts = {(p["name"], p["label"]): p for p in doc["points"]}
    for rel in KERNELS:
        p = pts[("image_pages", rel)]
        values = _metric_values(out / _key(rel) / f"{_key(rel)}.snap", "image_pages")
        assert p["n"] == RUNS and p["median"] == pytest.approx(statistics.median(values))
        # an exact 95 % interval of a median needs 6 runs: with 4 there is none, and no
        # number stands in for it; the chart draws the runs' range instead
        assert p["ci_low"] is None and p["ci_high"] is None
        assert p["min"] == min(values) and p["max"] == max(values)
    steps = [s for s in doc["steps"] if s["name"] == "image_pages"]
    assert [(s["before"], s["after"]) for s in steps] == list(zip(KERNELS, KERNELS[1:]))
    html = (out / "trend.html").read_text()
    assert html.count("<svg") == len(doc["figures"]) and "<script" not in html.lower()
    assert "Real steps between consecutive kernels" in (out / "trend.txt").read_text()


def test_bisect_walks_the_builds_from_the_captures_it_has(lab_bisect, out):
    assert lab_bisect.returncode == 0, lab_bisect.stderr[-3000:] + lab_bisect.stdout[-3000:]
    assert "booting" not in lab_bisect.stderr  # every capture reused: resumable
    log = json.loads((out / "bisect.json").read_text())
    assert log["outcome"] == "found", log
    assert log["first_bad"] == KERNELS[1] and log["last_good"] == KERNELS[0]
    assert [s["release"] for s in log["steps"]] == [KERNELS[2], KERNELS[1]]  # the bad end, then the middle
    assert all(s["decision"] == "bad" and "interval of the change" in s["detail"] for s in log["steps"])
    assert "step 1:" in lab_bisect.stdout and "first bad build 7.2.12" in lab_bisect.stdout
