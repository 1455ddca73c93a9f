"""The archive's kernel builds as a lab guest of a suite sees them (no network: the package
indices and the pool are fakes built from real Debian stanzas), image keys, and the
initramfs generator per suite."""

from __future__ import annotations

import lzma

import pytest

from snapprof.errors import SnapprofError
from snapprof.lab import archive, build

TRIXIE = """\
Package: linux-image-amd64
Version: 6.12.117-1
Depends: linux-image-6.12.117+deb13-amd64 (= 6.12.117-1)

Package: linux-image-6.12.117+deb13-amd64
Source: linux-signed-amd64 (6.12.117+1)
Version: 6.12.117-1
Depends: kmod, initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Pre-Depends: linux-base (>= 4.12~)

Package: linux-image-6.12.117+deb13-cloud-amd64
Version: 6.12.117-1
Depends: kmod

Package: linux-headers-6.12.117+deb13-amd64
Version: 6.12.117-1
Depends: linux-headers-6.12.117+deb13-common (= 6.12.117-1), linux-kbuild-6.12.117+deb13 (= 6.12.117-1),
 gcc-14

Package: linux-headers-6.12.117+deb13-common
Version: 6.12.117-1

Package: linux-kbuild-6.12.117+deb13
Version: 6.12.117-1
"""

BACKPORTS = """\
Package: linux-image-6.16.3+deb13-amd64
Version: 6.16.3-1~bpo13+1
Depends: kmod, initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool

Package: linux-image-6.19.6+deb13-amd64
Version: 6.19.6-2~bpo13+1
Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, kmod, linux-base-6.19.6+deb13-amd64 (= 6.19.6-2~bpo13+1), linux-modules-6.19.6+deb13-amd64 (= 6.19.6-2~bpo13+1)

Package: linux-image-7.3.4+deb13-amd64
Version: 7.3.4-1~bpo13+1
Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-modules-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)

Package: linux-modules-7.3.4+deb13-amd64
Version: 7.3.4-1~bpo13+1

Package: linux-headers-7.3.4+deb13-amd64
Version: 7.3.4-1~bpo13+1
Depends: gcc-14-for-host, linux-headers-7.3.4+deb13-common (= 7.3.4-1~bpo13+1)

Package: linux-headers-7.3.4+deb13-common
Version: 7.3.4-1~bpo13+1

Package: linux-image-7.3.1+deb13-amd64
Version: 7.3.1-1~bpo13+1
Depends: linux-modules-7.3.1+deb13-amd64 (= 7.3.1-1~bpo13+1)
"""

# What the pool still has of builds the index dropped (6.19.6's modules and base are gone:
# not installable; 6.16.3's headers are there).
POOL = {
    "linux-headers-6.16.3+deb13-amd64_6.16.3-1~bpo13+1_amd64.deb",
    "linux-headers-6.16.3+deb13-common_6.16.3-1~bpo13+1_all.deb",
    "linux-kbuild-6.16.3+deb13_6.16.3-1~bpo13+1_amd64.deb",
    "linux-headers-6.19.6+deb13-amd64_6.19.6-2~bpo13+1_amd64.deb",
    "linux-base-6.19.6+deb13-amd64_6.19.6-2~bpo13+1_all.deb",
    "linux-headers-7.3.1+deb13-amd64_7.3.1-1~bpo13+1_amd64.deb",
    "linux-modules-7.3.1+deb13-amd64_7.3.1-1~bpo13+1_amd64.deb",
}


def fetch(url: str) -> bytes:
    for dist, text in (("trixie-backports", BACKPORTS), ("trixie", TRIXIE)):
        if f"/dists/{dist}/" in url:
            return lzma.compress(text.encode())
    raise SnapprofError(f"the Debian archive answered 404 for {url}")


def exists(url: str) -> bool:
    return url.rsplit("/", 1)[-1] in POOL


@pytest.fixture
def builds(tmp_path):
    return archive.list_kernels("trixie", tmp_path, fetch=fetch, exists=exists)


def test_builds_oldest_first_generic_flavour_only(builds):
    assert [b.release for b in builds] == ["6.12.117+deb13-amd64", "6.16.3+deb13-amd64", "6.19.6+deb13-amd64",
                                           "7.3.1+deb13-amd64", "7.3.4+deb13-amd64"]
    assert {b.dist for b in builds} == {"trixie", "trixie-backports"}


def test_where_each_package_comes_from(builds):
    by = {b.release: b for b in builds}
    own = by["6.12.117+deb13-amd64"]
    assert own.installable and not own.from_pool and own.initramfs == "initramfs-tools"
    assert set(own.packages) >= {"linux-image-6.12.117+deb13-amd64", "linux-headers-6.12.117+deb13-amd64",
                                 "linux-headers-6.12.117+deb13-common", "linux-kbuild-6.12.117+deb13"}
    old = by["6.16.3+deb13-amd64"]  # headers only in the pool
    assert old.installable
    assert old.from_pool == ["linux-headers-6.16.3+deb13-amd64", "linux-headers-6.16.3+deb13-common",
                             "linux-kbuild-6.16.3+deb13"]
    assert old.packages["linux-kbuild-6.16.3+deb13"].endswith(
        "/pool/main/l/linux/linux-kbuild-6.16.3+deb13_6.16.3-1~bpo13+1_amd64.deb")
    gone = by["6.19.6+deb13-amd64"]  # its modules are in neither
    assert not gone.installable and gone.missing == ["linux-modules-6.19.6+deb13-amd64"]
    assert "not installable" in gone.describe() and gone.initramfs == "dracut"
    new = by["7.3.4+deb13-amd64"]
    assert new.installable and not new.from_pool and new.version == "7.3.4-1~bpo13+1"


def test_resolve_a_series_takes_its_newest_installable_build(builds, tmp_path):
    assert archive.resolve("trixie", "7.3", builds).release == "7.3.4+deb13-amd64"
    assert archive.resolve("trixie", "7.3.1", builds).release == "7.3.1+deb13-amd64"
    assert archive.resolve("trixie", "6.16.3+deb13-amd64", builds).release == "6.16.3+deb13-amd64"
    with pytest.raises(SnapprofError, match=r"no kernel '9\.9' for trixie .* it has: 6\.12, 6\.16, 6\.19, 7\.3"):
        archive.resolve("trixie", "9.9", builds)
    with pytest.raises(SnapprofError, match=r"6\.19\.6\+deb13-amd64 for trixie cannot be installed: "
                                            r"not installable: linux-modules-6\.19\.6"):
        archive.resolve("trixie", "6.19", builds)
    with pytest.raises(SnapprofError, match="bad --kernel"):
        archive.resolve("trixie", "7.3; rm -rf /", builds)


def test_default_release_and_initramfs_of_the_suite(tmp_path):
    assert archive.default_release("trixie", tmp_path, fetch=fetch) == "6.12.117+deb13-amd64"
    assert archive.suite_initramfs("trixie", tmp_path, fetch=fetch) == "initramfs-tools"


def test_a_suite_the_archive_lacks(tmp_path):
    with pytest.raises(SnapprofError, match="the Debian archive has no suite 'nosuch'"):
        archive.list_kernels("nosuch", tmp_path, fetch=fetch, exists=exists)


def test_release_order():
    rels = ["7.0.4+deb13-amd64", "6.12.117+deb13-amd64", "6.16.12+deb13-amd64", "6.16.3+deb13-amd64",
            "6.1.0-50-amd64"]
    assert sorted(rels, key=archive.release_key) == [
        "6.1.0-50-amd64", "6.12.117+deb13-amd64", "6.16.3+deb13-amd64", "6.16.12+deb13-amd64",
        "7.0.4+deb13-amd64"]
    assert archive.upstream("7.3.4+deb13-amd64") == "7.3.4"


def test_depends_parsing():
    f = {"Depends": "dracut | initramfs-tools (>= 0.120), linux-base-7.3 (= 7.3-1), gcc:any"}
    assert archive.depends(f) == [[("dracut", None), ("initramfs-tools", None)],
                                  [("linux-base-7.3", "7.3-1")], [("gcc", None)]]


def test_image_keys():
    assert build.split_key("trixie") == ("trixie", None)
    assert build.split_key("trixie:7.3.4+deb13-amd64") == ("trixie", "7.3.4+deb13-amd64")
    assert build.slug("trixie:7.3.4+deb13-amd64") == "trixie_7.3.4+deb13-amd64"
    assert build.validate_distro("trixie:7.3.4+deb13-amd64") == "trixie:7.3.4+deb13-amd64"
    with pytest.raises(SnapprofError, match="bad kernel release"):
        build.validate_distro("trixie:../../etc")
    variant = build.recipe("trixie:7.3.4+deb13-amd64")
    assert variant["kernel"] == "7.3.4+deb13-amd64" and variant["distro"] == "trixie"
    assert build.recipe_hash(variant) != build.recipe_hash(build.recipe("trixie"))


def test_initramfs_generator_per_suite():
    assert build.initramfs_tool("trixie") == "initramfs-tools"
    assert "initramfs-tools" in build.packages("bookworm")
    for suite in ("sid", "forky"):
        assert build.initramfs_tool(suite) == "dracut"
        assert "dracut" in build.packages(suite) and "initramfs-tools" not in build.packages(suite)


def test_a_suite_newer_than_the_hosts_debootstrap_uses_sids_script(tmp_path, monkeypatch):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name in ("bookworm", "trixie", "sid"):
        (scripts / name).write_text("# debootstrap script\n")
    monkeypatch.setattr(archive, "load_index", lambda suite, *a, **k: {} if suite == "forky" else
                        (_ for _ in ()).throw(SnapprofError("404")))
    assert build.validate_suite("forky", scripts) == "forky"  # the archive has it
    assert build.debootstrap_script("forky", scripts) == [str(scripts / "sid")]
    assert build.debootstrap_script("trixie", scripts) == []
    with pytest.raises(SnapprofError, match="neither debootstrap nor the Debian archive knows it"):
        build.validate_suite("hamm2", scripts)
