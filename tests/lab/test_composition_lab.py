"""What is in the image, checked in the lab with memory of known kinds and sizes
(tests/lab/composition_job.py, one guest boot per kernel CI runs): the composition the
recorder reads adds up to the memory in use, a process holding 100 MiB of anonymous memory
leads the top processes with it, a 64 MiB tmpfs file shows as shmem, and the image grows by
about both; an image_size sweep shrinks the image (and the page cache filled before it) at 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import KERNEL_VERSIONS, LAB_DISTROS, lab_id

pytestmark = pytest.mark.lab

MIB_KB = 1024
#: unattributed memory (MemTotal - MemFree - the kinds) as a share of MemTotal, measured in
#: the lab (2 GiB guests, 2026-12-01: 0.53-0.78 % on 6.1, 6.12 and 7.3); the bound is the stated tolerance
UNATTRIBUTED_MAX = 0.02


@pytest.fixture(scope="module", params=LAB_DISTROS, ids=lab_id)
def job(request, tmp_path_factory):
    from snapprof.lab.qemu import create_disk, run_guest

    sys.path.insert(0, str(Path(__file__).parent))
    from offline import unpack

    distro = request.param
    out = tmp_path_factory.mktemp(f"composition-{distro.replace(':', '_')}")
    disk = create_disk(out / "results.img", "64M")
    res = run_guest(distro, ["python3", "tests/lab/composition_job.py", "--pack", "/dev/vdb",
                             "/tmp/comp"], out, extra_disks=[disk], stream=None, timeout=1800)
    res.check()
    assert res.returncode == 0, res.output[-3000:]
    unpack(str(disk.path), str(out / "comp"))
    doc = json.loads((out / "comp" / "composition_job.json").read_text())
    doc.update(distro=distro, version=KERNEL_VERSIONS[distro], dir=out / "comp")
    return doc


def _frames(job, name):
    from snapprof.analysis.frames import load_capture
    return load_capture(job["dir"] / f"{name}.snap")


def _values(f, name) -> list[float]:
    m = f.metrics[f.metrics["name"] == name]
    return list(m.sort_values("run_id")["value"])


def _ok(job, step):
    st = job["steps"][step]
    assert "error" not in st, st.get("error")
    rec = st[step]
    assert rec["rc"] == 0, rec["stderr"][-2000:]
    return st


def test_the_composition_adds_up_to_the_memory_in_use(job):
    from snapprof.metrics import COMPOSITION_KINDS

    _ok(job, "base")
    _ok(job, "loaded")
    for name in ("base", "loaded"):
        f = _frames(job, name)
        assert list(f.runs["status"]) == ["complete", "complete"]
        total = _values(f, "mem_total_kb")
        for when, free in (("", "mem_free_kb"), ("_after", "mem_free_after_kb")):
            kinds = {k: _values(f, f"mem_{k}{when}_kb") for k, _keys, _l in COMPOSITION_KINDS}
            have = {k: v for k, v in kinds.items() if v}
            # every kind these kernels have is there (hugetlb: Debian's kernels have HugeTLB)
            assert set(have) == {k for k, _keys, _l in COMPOSITION_KINDS}, sorted(set(kinds) - set(have))
            for i in range(2):
                used = total[i] - _values(f, free)[i]
                attributed = sum(v[i] for v in have.values())
                unattributed = used - attributed
                assert 0 <= unattributed <= UNATTRIBUTED_MAX * total[i], \
                    (name, when, i, unattributed / total[i], {k: v[i] for k, v in have.items()})
        scan = _values(f, "composition_scan_ms")
        assert len(scan) == 2 and all(0 < s < 5000 for s in scan)


def test_known_memory_shows_where_it_belongs_and_in_the_image(job):
    st = _ok(job, "loaded")
    _ok(job, "base")
    assert st["hog_ready"]
    base, loaded = _frames(job, "base"), _frames(job, "loaded")
    # the process holding 100 MiB of touched anonymous memory leads the top processes with it
    for run_id, procs in loaded.processes.groupby("run_id"):
        top = procs.sort_values(["anon_kb"], ascending=False).iloc[0]
        assert top["pid"] == st["hog_pid"], procs.to_dict("records")
        assert HOG_KB <= top["anon_kb"] <= HOG_KB + 8 * MIB_KB, top.to_dict()
        assert "python3" in top["cmdline"]
    # the 64 MiB tmpfs file is shmem
    grew = min(_values(loaded, "mem_shmem_kb")) - max(_values(base, "mem_shmem_kb"))
    assert 0.95 * TMPFS_KB <= grew <= TMPFS_KB + 8 * MIB_KB, grew
    # and the image holds both (default image_size: nothing had to be shrunk)
    img = min(_values(loaded, "image_bytes")) / 1024 - max(_values(base, "image_bytes")) / 1024
    assert 0.9 * (HOG_KB + TMPFS_KB) <= img <= 1.3 * (HOG_KB + TMPFS_KB), img


HOG_KB = 100 * MIB_KB
TMPFS_KB = 64 * MIB_KB


def test_an_image_size_sweep_records_each_setting(job):
    _ok(job, "sweep")
    f = _frames(job, "sweep")
    assert list(f.runs["status"]) == ["complete", "complete"]
    assert job["steps"]["sweep"]["cached_mib"] >= 150, job["steps"]["sweep"]  # files read into the cache
    settings = _values(f, "image_size_setting_bytes")
    total_kb = _values(f, "mem_total_kb")[0]
    default = int(total_kb * 1024 // 4096 * 2 // 5) * 4096
    assert settings == [float(default), 0.0]
    assert f.meta["image_size_sweep"] == "default,0"
    large, small = _values(f, "image_bytes")
    # the default kept the cache (fast path), 0 reclaimed it: well over half of what was read
    assert large - small > 75 << 20, (large, small)
    # at image_size 0 the kernel shrank: the file cache after the cycle is smaller than before
    before = _values(f, "mem_file_inactive_kb")[1] + _values(f, "mem_file_active_kb")[1]
    after = _values(f, "mem_file_inactive_after_kb")[1] + _values(f, "mem_file_active_after_kb")[1]
    assert after < before


def test_the_reading_costs_the_image_almost_nothing(job):
    """The composition reading's own cost, in a fresh process: what importing it and five
    readings leave resident (what the recorder carries into the image), and their times."""
    st = job["steps"]["scan_cost"]
    assert "error" not in st, st.get("error")
    grew_kb = st["after_scans"]["VmRSS"] - st["imported"]["VmRSS"]
    imported_kb = st["imported"]["VmRSS"] - st["start"]["VmRSS"]
    print(f"composition reading: import +{imported_kb} kB, five readings +{grew_kb} kB resident, "
          f"{', '.join(f'{t:.0f}' for t in st['scan_ms'])} ms")
    assert grew_kb <= 512, st  # readings keep nothing: at most a few pages of allocator slack
    assert imported_kb <= 4096, st  # snapprof.metrics with it, which the recorder imports anyway
    assert all(0 < t < 5000 for t in st["scan_ms"])
