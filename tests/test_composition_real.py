"""What is in the image, on real lab captures (tests/lab/composition_job.py on 6.1, 6.12 and
7.3, 2 GiB TCG guests, 2026-12-01): base = the guest as it is, loaded = with a process
holding 100 MiB of touched anonymous memory and a 64 MiB tmpfs file, sweep = image_size 0
against the kernel's default. The reconciliation, the top processes, the sweep and the
comparison must say on these what the lab test checked inside the guest."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapprof.analysis import composition as comp
from snapprof.analysis.compare import compare, group_captures
from snapprof.analysis.frames import load_capture

DATA = Path(__file__).parent / "data" / "composition"  # apart: the other tests take every tests/data/*.snap
KERNELS = ("bookworm-6.1", "trixie-6.12", "trixie-7.3")
MIB_KB = 1024


def _load(kernel, step):
    return load_capture(DATA / f"{kernel}-{step}.snap")


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_composition_explains_all_but_a_sliver_of_memory_in_use(kernel):
    for step in ("base", "loaded", "sweep"):
        f = _load(kernel, step)
        r = comp.reconcile(f)
        total = f.metrics.loc[f.metrics["name"] == "mem_total_kb", "value"].iloc[0]
        assert len(r) == 2 and not r["missing_kinds"].any()
        for col in ("unattributed_kb", "unattributed_after_kb"):
            share = r[col] / total
            assert ((share > 0.004) & (share < 0.01)).all(), (step, col, list(share))
        # the identity the report rests on, per run: the kinds + unattributed = in use
        assert (r["attributed_kb"] + r["unattributed_kb"] == r["in_use_kb"]).all()


@pytest.mark.parametrize("kernel", KERNELS)
def test_known_memory_is_where_it_belongs(kernel):
    base, loaded = _load(kernel, "base"), _load(kernel, "loaded")
    top = comp.top_processes(loaded)["rows"][0]
    assert "mmap" in top["cmdline"] and 100 * MIB_KB <= top["anon_kb"] <= 108 * MIB_KB, top
    cmp = compare(group_captures([base, loaded], ["base", "loaded"]))
    d = cmp.diffs.set_index("name")
    assert 100 * MIB_KB <= d.loc["mem_anon_kb", "delta"] <= 112 * MIB_KB, d.loc["mem_anon_kb", "delta"]
    shmem = d.loc["mem_shmem_kb", "delta"]
    assert 64 * MIB_KB <= shmem <= 66 * MIB_KB, shmem
    grew = d.loc["image_bytes", "delta"] / 1024
    assert 0.95 * 164 * MIB_KB <= grew <= 1.1 * 164 * MIB_KB, grew


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_sweep_shows_what_shrinking_costs(kernel):
    s = comp.image_size_sweep(_load(kernel, "sweep"))
    zero, default = s["rows"]
    assert (zero["setting_bytes"], default["setting_pct"]) == (0.0, pytest.approx(40, abs=0.1))
    assert zero["image_pages"] <= default["image_pages"]
    # shrinking to image_size 0 took longer than the default's fast path, on every kernel here
    assert zero["cycle_ms"] > default["cycle_ms"]


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_report_answers_what_is_in_the_image(kernel):
    from snapprof.report.html import render_html
    from snapprof.report.model import build_model

    page = render_html(build_model(_load(kernel, "loaded")))
    section = page[page.index('<div id="composition"'):]
    section = section[:section.index("</section>")]
    assert "<svg" in section  # the one chart
    assert "Unattributed" in section and "Free pages on per-CPU lists" in section
    assert "mmap.mmap" in section  # the hog, named by its command line
