"""Shared test fixtures. Lab tests (marker `lab`) boot Debian guests under QEMU.

A lab test is skipped with the reason when the lab is unavailable here (not root,
QEMU or debootstrap missing) — except in CI (CI=true), where it fails instead, so a
broken lab can never pass as "all skipped".

    @pytest.fixture(scope="module", params=LAB_DISTROS)
    def job(request, lab_guest, tmp_path_factory):
        run = lab_guest(request.param)                      # builds the image if needed
        res = run(["python3", "-m", "snapprof", "--version"], timeout=300)
        res.check()                                         # GuestResult, see snapprof.lab.qemu
"""

from __future__ import annotations

import os
import sys

import pytest

# The lab images CI runs every lab test on: bookworm (6.1), trixie (6.12), and trixie's
# userspace with the newest kernel build trixie-backports has (bump NEWEST when a newer one
# lands: `snapprof lab kernels --distro trixie`). An image key is "SUITE[:RELEASE]".
NEWEST = "trixie:7.3.4+deb13-amd64"
LAB_DISTROS = ("bookworm", "trixie", NEWEST)
KERNEL_VERSIONS = {"bookworm": (6, 1), "trixie": (6, 12), NEWEST: (7, 3)}
# trixie with systemd (257) as init: `systemctl hibernate` and the snapprof service
# (tests/lab/test_systemd_lab.py; snapprof.lab.systemd).
SYSTEMD_GUEST = "trixie+systemd"


def lab_id(key: str) -> str:
    """A short pytest id for an image key: bookworm, trixie, trixie-7.3."""
    suite, _, rel = key.partition(":")
    return suite if not rel else f"{suite}-{'.'.join(rel.split('.')[:2])}"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def lab_unavailable_reason() -> str | None:
    """Why lab tests cannot run on this machine, or None if they can."""
    from snapprof.errors import SnapprofError
    from snapprof.lab import build, host

    try:
        host.require_tools(host.RUN_TOOLS)
    except SnapprofError as exc:
        return str(exc)
    if all(build.image_status(d) == "ready" for d in LAB_DISTROS):
        return None  # prebuilt images run without root
    try:
        host.require_root("building lab images")
        host.require_tools(host.BUILD_TOOLS)
    except SnapprofError as exc:
        return str(exc)
    return None


def _lab_gate() -> None:
    reason = lab_unavailable_reason()
    if reason:
        if in_ci():
            pytest.fail(f"lab unavailable in CI: {reason}", pytrace=False)
        pytest.skip(f"lab unavailable: {reason}")


def pytest_runtest_setup(item):
    if item.get_closest_marker("lab") is not None:
        _lab_gate()


@pytest.fixture(scope="session")
def lab_guest(tmp_path_factory):
    """lab_guest(distro) -> run(argv, output_dir=None, **run_guest_kwargs) -> GuestResult.

    Builds the distro's image if needed (progress on stderr), then each call boots a
    fresh guest (throw-away overlay). output_dir defaults to a new pytest temp folder;
    stream defaults to None (output collected in GuestResult.output)."""
    _lab_gate()
    from snapprof.lab.build import ensure_image
    from snapprof.lab.qemu import run_guest

    images = {}

    def for_distro(distro: str):
        if distro not in images:
            images[distro] = ensure_image(distro, progress=lambda m: print(f"lab: {m}", file=sys.stderr))
        img = images[distro]

        def run(argv, output_dir=None, **kw):
            kw.setdefault("stream", None)
            out = output_dir or tmp_path_factory.mktemp(f"lab-{distro}")
            return run_guest(img, argv, out, **kw)

        run.image = img
        return run

    return for_distro
