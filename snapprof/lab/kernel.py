"""Put another kernel build into a copy of a suite's guest root file system.

`snapprof lab build --distro trixie --kernel 7.3` makes trixie's userspace (the cached
trixie image, byte for byte) boot the 7.3.4 build from trixie-backports: the root file
system is copied out of the suite's disk image, the kernel's image, modules and headers
(bcc compiles the probes against them) are installed with the guest's own apt, the
suite's kernel is purged, and the initramfs is made by the generator the userspace has.
Only the kernel changes; every other package keeps its version, which the image records.

Packages the archive's index no longer lists (older backports builds) are fetched from the
pool by exact name and version into `<lab>/.debs/pool/` and installed from file; the
image's meta lists them under `kernel_packages_from_pool`, since the signed index does not
vouch for them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from snapprof.errors import SnapprofError
from snapprof.lab import archive

Progress = Callable[[str], None]
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
              "HOME": "/root"}
DEBS_IN_GUEST = "var/cache/snapprof-kernel-debs"


def copy_rootfs(disk: Path, rootfs: Path) -> None:
    """Copy the root file system out of a raw ext4 disk image (read-only loop mount)."""
    mnt = Path(tempfile.mkdtemp(prefix="snapprof-base-"))
    try:
        proc = subprocess.run(["mount", "-o", "loop,ro,noload", str(disk), str(mnt)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SnapprofError(f"cannot mount the base image {disk} read-only: "
                                f"{(proc.stderr or proc.stdout).strip() or 'mount failed'}")
        try:
            rootfs.mkdir(parents=True, exist_ok=True)
            cp = subprocess.run(["cp", "-a", f"{mnt}/.", str(rootfs)], capture_output=True, text=True)
            if cp.returncode != 0:
                raise SnapprofError(f"copying the base root file system failed: {cp.stderr.strip()[-200:]}")
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
    finally:
        try:
            mnt.rmdir()
        except OSError:
            pass


@contextmanager
def chroot_mounts(rootfs: Path):
    """/proc, /sys and /dev of the host inside rootfs while apt and the kernel's hooks run."""
    done = []
    try:
        for src, fstype in (("/proc", "proc"), ("/sys", "sysfs"), ("/dev", None)):
            target = rootfs / src.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            cmd = ["mount", "--bind", src, str(target)] if fstype is None else \
                ["mount", "-t", fstype, fstype, str(target)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SnapprofError(f"cannot mount {src} in the build chroot: {proc.stderr.strip()}")
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def chroot(rootfs: Path, argv: list[str], log, what: str) -> str:
    """Run argv in the chroot, its output appended to the build log; one-line error."""
    log.write(f"$ chroot {' '.join(argv)}\n")
    proc = subprocess.run(["chroot", str(rootfs), *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", env=CHROOT_ENV)
    log.write(proc.stdout)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith(("E:", "dpkg:", "Error"))] \
            or proc.stdout.strip().splitlines()[-1:] or ["no output"]
        raise SnapprofError(f"{what} failed in the guest root file system (exit {proc.returncode}): "
                            f"{lines[-1][:300]}; full log: {log.name}")
    return proc.stdout


def _download(url: str, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_size > 0:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=archive.TIMEOUT_S) as resp, open(tmp, "wb") as f:
            shutil.copyfileobj(resp, f)
        tmp.replace(dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SnapprofError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None


def installed_kernels(rootfs: Path) -> list[str]:
    """Releases with a linux-image package installed in the root file system."""
    mods = rootfs / "lib" / "modules"
    names = sorted(p.name for p in mods.iterdir()) if mods.is_dir() else []
    have = dpkg_versions(rootfs)
    return [r for r in names if f"linux-image-{r}" in have or f"linux-image-{r}-unsigned" in have]


def install(rootfs: Path, build: archive.KernelBuild, debs_cache: Path, log_path: Path,
            progress: Progress) -> dict:
    """Install `build` into rootfs (a copy of its suite's image) and purge every other
    kernel. Returns facts for the image's meta."""
    pool = {name: url for name, url in build.packages.items() if url != "index"}
    by_name = sorted(name for name, where in build.packages.items() if where == "index")
    in_guest = rootfs / DEBS_IN_GUEST
    in_guest.mkdir(parents=True, exist_ok=True)
    files = []
    for name, url in sorted(pool.items()):
        local = debs_cache / url.rsplit("/", 1)[-1]
        progress(f"fetching {name} {build.version} from the pool (not in the signed index)")
        _download(url, local)
        shutil.copyfile(local, in_guest / local.name)
        files.append(f"/{DEBS_IN_GUEST}/{local.name}")
    # The suite's index and its backports', as the guest's apt sees them.
    sources = rootfs / "etc" / "apt" / "sources.list.d" / "snapprof-kernels.list"
    sources.parent.mkdir(parents=True, exist_ok=True)
    sources.write_text("".join(f"deb {archive.mirror()} {d} main\n" for d in archive.dists_for(build.suite)
                               if d != build.suite))
    resolv = rootfs / "etc" / "resolv.conf"
    if os.path.islink(resolv) or not resolv.exists():
        resolv.unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", resolv)
    old = [r for r in installed_kernels(rootfs) if r != build.release]
    before = dpkg_versions(rootfs)
    with open(log_path, "a", buffering=1) as log, chroot_mounts(rootfs):
        progress(f"apt-get update in the guest ({', '.join(archive.dists_for(build.suite))})")
        chroot(rootfs, ["apt-get", "update", "-q"], log, "apt-get update")
        progress(f"installing kernel {build.release} ({build.version}) and its headers")
        # From backports the Debian way (-t): what the kernel needs newer (linux-base) comes
        # from there too; every such change to the userspace is recorded below.
        target = ["-t", build.dist] if build.dist != build.suite else []
        chroot(rootfs, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *target,
                        *(f"{n}={build.version}" for n in by_name), *files], log, "installing the kernel")
        if old:
            progress(f"removing the suite's kernel {', '.join(old)}")
            purge = ["linux-image-amd64", "linux-headers-amd64"]
            for r in old:
                purge += [f"linux-image-{r}", f"linux-headers-{r}"]
            present = [p for p in purge if _installed(rootfs, p)]
            chroot(rootfs, ["apt-get", "purge", "-y", "-q", *present], log, "removing the old kernel")
            chroot(rootfs, ["apt-get", "autoremove", "--purge", "-y", "-q"], log, "apt-get autoremove")
        chroot(rootfs, ["apt-get", "clean"], log, "apt-get clean")
    shutil.rmtree(in_guest, ignore_errors=True)
    shutil.rmtree(rootfs / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    (rootfs / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    left = installed_kernels(rootfs)
    if left != [build.release]:
        raise SnapprofError(f"after installing {build.release} the guest has kernels {left or 'none'}; "
                            f"see {log_path}")
    after = dpkg_versions(rootfs)
    changed = {p: f"{before[p]} -> {after[p]}" for p in sorted(before) if p in after and before[p] != after[p]}
    added = sorted(p for p in after if p not in before and not archive.FAMILY.match(p))
    return {
        "kernel_package_version": build.version,
        "userspace_upgraded": changed,  # packages of the suite that the kernel pulled newer
        "userspace_added": added,  # packages the kernel needs that the suite's image lacked
        "kernel_dist": build.dist,
        "kernel_packages_from_pool": sorted(pool),
        "replaced_kernels": old,
    }


def dpkg_versions(rootfs: Path) -> dict[str, str]:
    from snapprof.lab.build import dpkg_versions as parse  # build imports this module lazily

    return parse(rootfs)


def _installed(rootfs: Path, package: str) -> bool:
    return package in dpkg_versions(rootfs)
