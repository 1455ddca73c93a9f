"""Build and cache lab guest images: a Debian suite's root file system with its own
kernel, bcc and Python, as a raw ext4 disk image plus the kernel and initrd beside it.

Layout of the cache (see snapprof.lab.host.lab_dir):

    <lab>/<distro>/disk.img     raw ext4 root file system (read-only; runs use overlays)
    <lab>/<distro>/vmlinuz      the suite's kernel
    <lab>/<distro>/initrd.img   its initramfs (initramfs-tools)
    <lab>/<distro>/image.json   the stamp: recipe, its hash, kernel/bcc/python versions
    <lab>/.debs/<distro>/       downloaded packages, reused by rebuilds
    <lab>/<distro>-build.log    the last build's debootstrap log

An image is complete only when image.json is present and its recipe hash matches the
current recipe. A build happens in <lab>/.build-<distro>-<pid>/ and is renamed into
place after the stamp is written, so an interrupted build never looks complete.

    img = ensure_image("trixie", progress=print)   # builds only if missing or stale
    img.kernel_release, img.disk, img.kernel, img.initrd
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from snapprof.errors import SnapprofError
from snapprof.lab import host

DEFAULT_DISTRO = "bookworm"
TESTED_DISTROS = ("bookworm", "trixie")
MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")

# The recipe: everything that decides what an image contains. Change any of it (or the
# boot stub, or CONFIGURE_VERSION when the configure step below changes) and images rebuild.
PACKAGES = (
    "python3",
    "python3-bpfcc",
    "linux-image-amd64",
    "linux-headers-amd64",
    "kmod",
    "procps",
    "initramfs-tools",
    "util-linux",  # mkswap, swapon, setsid
)
# Suites whose own kernel asks for dracut first (its image Depends: dracut | initramfs-tools):
# debootstrap takes the first alternative and cannot install initramfs-tools beside it.
# `snapprof lab kernels` shows each build's generator (KernelBuild.initramfs).
DRACUT_SUITES = ("forky", "sid", "testing", "unstable", "experimental")
# dracut's counterpart of INITRAMFS_MODULES (a generic initramfs: the build runs in a chroot).
DRACUT_CONF = "etc/dracut.conf.d/50-snapprof.conf"
VARIANT = "minbase"
DISK_SIZE = "4G"
CONFIGURE_VERSION = 2  # 2: lz4 modules in the initramfs (a boot kernel resuming an lz4 image)
KERNEL_VARIANT_VERSION = 1  # the steps that put another kernel build into a suite's image
# Modules the boot kernel's initramfs must load before it reads a hibernation image: the
# image is decompressed by the crypto API, and a kernel with hibernate.compressor=lz4
# (6.9 and later) writes images the initramfs could not read without these.
INITRAMFS_MODULES = ("lz4", "lz4_compress", "lz4_decompress")
BOOT_STUB = Path(__file__).with_name("guest-boot.sh")
GUEST_INIT_PATH = "/sbin/snapprof-boot"  # where the stub lives in the guest (init=)
HOSTNAME = "snapprof-lab"

HEARTBEAT_S = 30
NEED_FREE_BYTES = 5 * host.GiB  # root fs (~1.5 GiB) + disk image (~1.5 GiB) + packages + margin

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Image:
    """A complete, cached guest image."""

    distro: str
    dir: Path
    disk: Path  # raw ext4, never written to: runs boot a qcow2 overlay on top
    kernel: Path
    initrd: Path
    kernel_release: str
    bcc_version: str
    python_version: str
    recipe_hash: str
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def init_path(self) -> str:
        return self.meta.get("init", GUEST_INIT_PATH)


def initramfs_tool(suite: str) -> str:
    """The initramfs generator a suite's guest is built with."""
    return "dracut" if suite in DRACUT_SUITES else "initramfs-tools"


def packages(suite: str) -> tuple[str, ...]:
    tool = initramfs_tool(suite)
    return tuple(tool if p == "initramfs-tools" else p for p in PACKAGES)


def split_key(key: str) -> tuple[str, str | None]:
    """An image key: "trixie" (the suite's own kernel) or "trixie:7.3.4+deb13-amd64"
    (trixie's userspace with that kernel build) -> (suite, release or None)."""
    suite, sep, release = (key or "").partition(":")
    return suite, (release if sep else None)


def image_key(suite: str, release: str | None) -> str:
    return f"{suite}:{release}" if release else suite


def slug(key: str) -> str:
    """A key as a file or folder name: "trixie:7.3.4+deb13-amd64" -> "trixie_7.3.4+deb13-amd64"."""
    return key.replace(":", "_")


def validate_distro(distro: str, scripts_dir: Path = DEBOOTSTRAP_SCRIPTS) -> str:
    """A Debian suite name debootstrap knows (bookworm and trixie are tested), optionally
    with a kernel release after a colon (an image key, see split_key), or a suite with
    systemd as init ("trixie+systemd", see snapprof.lab.systemd)."""
    from snapprof.lab import systemd

    base, init = systemd.split(distro)
    if init is not None:
        if init != systemd.VARIANT:
            raise SnapprofError(f"bad init variant {init!r} in {distro!r}: the lab has "
                                f"SUITE+{systemd.VARIANT} (e.g. trixie+{systemd.VARIANT})")
        if split_key(base)[1] is not None:
            raise SnapprofError(f"{distro!r}: a systemd guest boots its suite's own kernel; "
                                f"give SUITE+{systemd.VARIANT} without a kernel release")
        validate_suite(base, scripts_dir)
        return distro
    suite, release = split_key(distro)
    if release is not None and not re.fullmatch(r"\d+\.\d+[0-9A-Za-z.+~\-]{0,60}", release):
        raise SnapprofError(f"bad kernel release {release!r} in {distro!r}: give one such as 7.3.4+deb13-amd64")
    validate_suite(suite, scripts_dir)
    return distro


def validate_suite(distro: str, scripts_dir: Path = DEBOOTSTRAP_SCRIPTS) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9-]{1,30}", distro or ""):
        raise SnapprofError(f"bad distro name {distro!r}: give a Debian suite such as {', '.join(TESTED_DISTROS)}")
    if scripts_dir.is_dir() and not (scripts_dir / distro).exists() and not _in_archive(distro):
        raise SnapprofError(
            f"unknown distro {distro!r}: neither debootstrap nor the Debian archive knows it; "
            f"use a Debian suite such as {', '.join(TESTED_DISTROS)} (tested), forky or sid"
        )
    return distro


def _in_archive(suite: str) -> bool:
    """Whether the archive has the suite (for a suite newer than the host's debootstrap,
    which then builds it with sid's script: every Debian suite since bookworm uses it)."""
    from snapprof.lab import archive

    try:
        archive.load_index(suite)
    except SnapprofError:
        return False
    return True


def debootstrap_script(suite: str, scripts_dir: Path = DEBOOTSTRAP_SCRIPTS) -> list[str]:
    """The script argument for debootstrap: none when it knows the suite, else sid's."""
    if not scripts_dir.is_dir() or (scripts_dir / suite).exists():
        return []
    return [str(scripts_dir / "sid")]


def recipe(distro: str) -> dict:
    """What an image for `distro` (an image key) is made of; its hash decides whether to
    rebuild. A kernel variant's recipe is its suite's plus the kernel release; a systemd
    variant's (SUITE+systemd) its suite's plus what snapprof.lab.systemd adds."""
    from snapprof.lab import systemd

    base, init = systemd.split(distro)
    if init is not None:
        return {**recipe(base), **systemd.recipe_part()}
    suite, release = split_key(distro)
    if release:
        return {**recipe(suite), "kernel": release, "kernel_variant_version": KERNEL_VARIANT_VERSION}
    return {
        "distro": distro,
        "variant": VARIANT,
        "packages": sorted(packages(distro)),
        "disk_size": DISK_SIZE,
        "configure_version": CONFIGURE_VERSION,
        "init": GUEST_INIT_PATH,
        "boot_stub_sha256": hashlib.sha256(BOOT_STUB.read_bytes()).hexdigest(),
    }


def recipe_hash(rec: dict) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]


def image_dir(distro: str, lab: Path | None = None) -> Path:
    return (lab or host.lab_dir()) / slug(distro)


def load_image(distro: str, lab: Path | None = None, expect_hash: str | None = None) -> Image | None:
    """The cached image for `distro` if it is complete and (when expect_hash is given)
    built from that recipe; otherwise None."""
    d = image_dir(distro, lab)
    try:
        meta = json.loads((d / "image.json").read_text())
    except (OSError, ValueError):
        return None
    if expect_hash is not None and meta.get("recipe_hash") != expect_hash:
        return None
    files = {k: d / k for k in ("disk.img", "vmlinuz", "initrd.img")}
    if not all(p.is_file() for p in files.values()):
        return None
    return Image(
        distro=distro,
        dir=d,
        disk=files["disk.img"],
        kernel=files["vmlinuz"],
        initrd=files["initrd.img"],
        kernel_release=meta.get("kernel_release", ""),
        bcc_version=meta.get("bcc_version", ""),
        python_version=meta.get("python_version", ""),
        recipe_hash=meta.get("recipe_hash", ""),
        meta=meta,
    )


def image_status(distro: str, lab: Path | None = None) -> str:
    """'ready', 'stale' (built from another recipe) or 'missing'."""
    want = recipe_hash(recipe(distro))
    if load_image(distro, lab, want):
        return "ready"
    return "stale" if load_image(distro, lab) else "missing"


def ensure_image(
    distro: str = DEFAULT_DISTRO,
    progress: Progress | None = None,
    *,
    lab: Path | None = None,
    force: bool = False,
) -> Image:
    """Return the cached image for `distro`, building it first if it is missing, was
    built from a different recipe, or `force` is set. Building needs root, debootstrap
    and mkfs.ext4, 5 GiB free and Debian's archive; it takes a few minutes.
    `progress` receives one-line messages. Raises SnapprofError on any failure, leaving
    no image that looks complete."""
    validate_distro(distro)
    lab = lab or host.lab_dir()
    rec = recipe(distro)
    want = recipe_hash(rec)
    if not force:
        img = load_image(distro, lab, want)
        if img:
            return img
    host.require_root(f"building the {distro} lab image")
    tools = host.require_tools(host.BUILD_TOOLS)
    lab.mkdir(parents=True, exist_ok=True)
    progress = progress or (lambda _m: None)
    with _lock(lab / f".{slug(distro)}.lock", progress):
        if not force:
            img = load_image(distro, lab, want)  # another process may have built it
            if img:
                return img
        host.require_free_space(lab, NEED_FREE_BYTES, f"building the {distro} lab image")
        return _build(distro, rec, want, lab, tools, progress)


class _lock:
    def __init__(self, path: Path, progress: Progress):
        self.path, self.progress = path, progress

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.progress(f"another process is building this image (lock {self.path}); waiting for it")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _build(distro: str, rec: dict, want: str, lab: Path, tools: dict, progress: Progress) -> Image:
    t0 = time.monotonic()
    name = slug(distro)
    for stale in lab.glob(f".build-{name}-*"):
        remove_tree(stale)
    for stale in lab.glob(f".old-{name}-*"):
        remove_tree(stale)
    tmp = lab / f".build-{name}-{os.getpid()}"
    tmp.mkdir()
    rootfs = tmp / "rootfs"
    log_path = lab / f"{name}-build.log"
    from snapprof.lab import systemd

    base, init = systemd.split(distro)
    suite, release = split_key(base)
    try:
        extra: dict = {}
        if init:
            extra = systemd.populate(base, rootfs, lab, log_path, progress, t0)
        elif release:
            extra = _populate_variant(suite, release, rootfs, lab, log_path, tools, progress, t0)
        else:
            pk = packages(suite)
            progress(f"debootstrap {VARIANT} {suite} (packages: {', '.join(pk)}); log: {log_path}")
            _debootstrap(suite, rootfs, lab / ".debs" / suite, log_path, tools["debootstrap"], progress, t0, pk)
        progress(f"configuring the root file system ({time.monotonic() - t0:.0f} s)")
        facts = _configure(rootfs)
        if release and facts["kernel_release"] != release:
            raise SnapprofError(f"the guest boots {facts['kernel_release']}, not {release}; see {log_path}")
        shutil.copyfile(rootfs / "boot" / f"vmlinuz-{facts['kernel_release']}", tmp / "vmlinuz")
        shutil.copyfile(rootfs / "boot" / f"initrd.img-{facts['kernel_release']}", tmp / "initrd.img")
        progress(f"writing the {DISK_SIZE} ext4 disk image ({time.monotonic() - t0:.0f} s)")
        disk = tmp / "disk.img"
        _run([tools["mkfs.ext4"], "-q", "-F", "-L", "snapprof-root", "-d", str(rootfs), str(disk), DISK_SIZE],
             "mkfs.ext4")
        remove_tree(rootfs)
        os.chmod(disk, 0o444)
        meta = {
            "distro": distro,
            "suite": suite,
            "recipe_hash": want,
            "recipe": rec,
            **facts,
            **extra,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - t0, 1),
            "disk_bytes_used": disk.stat().st_blocks * 512,
        }
        (tmp / "image.json").write_text(json.dumps(meta, indent=2) + "\n")  # the stamp, last
        final = image_dir(distro, lab)
        if final.exists():
            old = lab / f".old-{name}-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            remove_tree(old)
        else:
            tmp.rename(final)
    except BaseException:
        remove_tree(tmp)
        raise
    img = load_image(distro, lab, want)
    assert img is not None
    progress(
        f"{distro} image ready in {meta['build_seconds']:.0f} s: kernel {img.kernel_release}, "
        f"bcc {img.bcc_version}, python {img.python_version}, "
        f"{meta['disk_bytes_used'] / host.GiB:.2f} GiB on disk ({final})"
    )
    return img


def _populate_variant(suite, release, rootfs, lab, log_path, tools, progress, t0) -> dict:
    """The suite's root file system with kernel `release` in place of its own."""
    from snapprof.lab import archive, kernel

    progress(f"looking up kernel {release} for {suite} in the archive")
    builds = archive.list_kernels(suite, lab)
    build = archive.resolve(suite, release, builds, lab)
    base = ensure_image(suite, progress, lab=lab)
    log_path.write_text(f"# {suite} userspace with kernel {release}\n")
    progress(f"copying the {suite} root file system out of {base.disk} ({time.monotonic() - t0:.0f} s)")
    kernel.copy_rootfs(base.disk, rootfs)
    facts = kernel.install(rootfs, build, lab / ".debs" / "pool", log_path, progress)
    return {"base_image": str(base.dir), "base_kernel_release": base.kernel_release,
            "base_recipe_hash": base.recipe_hash, **facts}


class DebootstrapProgress:
    """Turns debootstrap's chatty output into a few progress lines: one per stage
    (Retrieving, Extracting, Unpacking, Configuring...) and at most one per `every` s."""

    def __init__(self, progress: Progress, t0: float, every: float = 10.0, clock=time.monotonic):
        self.progress, self.t0, self.every, self.clock = progress, t0, every, clock
        self.stage = None
        self.count = 0
        self.last = -1e9
        self.last_error = ""

    def heartbeat(self) -> None:
        """Called when debootstrap has been quiet for a while."""
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.progress(f"  [{now - self.t0:5.0f} s] still working ({self.stage or 'starting'})")

    def feed(self, line: str) -> None:
        line = line.rstrip()
        if line.startswith(("E:", "W: Failure")):
            self.last_error = line[2:].strip()
        m = re.match(r"I: (\w+)", line)
        if not m:
            return
        stage = m.group(1)
        now = self.clock()
        if stage != self.stage:
            self.stage, self.count = stage, 0
        self.count += 1
        if self.count == 1 or now - self.last >= self.every:
            self.last = now
            self.progress(f"  [{now - self.t0:5.0f} s] {line[3:]}")


def _debootstrap(distro, rootfs, debs, log_path, exe, progress, t0, pkgs=PACKAGES) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    cmd = [
        exe, f"--variant={VARIANT}", f"--include={','.join(pkgs)}",
        f"--cache-dir={debs}", distro, str(rootfs), os.environ.get("SNAPPROF_LAB_MIRROR", MIRROR),
        *debootstrap_script(distro),
    ]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C.UTF-8",
               PATH="/usr/sbin:/usr/bin:/sbin:/bin:" + os.environ.get("PATH", ""))
    feeder = DebootstrapProgress(progress, t0)
    with open(log_path, "w", buffering=1) as log:
        log.write("$ " + " ".join(cmd) + "\n")
        # Its own process group, so that an interruption stops dpkg & co. too.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=env, start_new_session=True)

        def reader():
            for line in proc.stdout:
                log.write(line)
                feeder.feed(line)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            while True:  # debootstrap is silent while dpkg installs: say we are alive
                try:
                    rc = proc.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    feeder.heartbeat()
            thread.join()
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            raise
        finally:
            _unmount_under(rootfs)
    if rc != 0:
        why = feeder.last_error or "see the log"
        raise SnapprofError(f"debootstrap {distro} failed (exit {rc}): {why}; full log: {log_path}")


def _configure(rootfs: Path) -> dict:
    """Make the root file system bootable as a lab guest; return facts about it."""
    (rootfs / "etc" / "hostname").write_text(HOSTNAME + "\n")
    (rootfs / "etc" / "fstab").write_text("# snapprof lab: the guest init mounts everything\n")
    for d in ("project", "output", "run/snapprof-job"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    stub = rootfs / GUEST_INIT_PATH.lstrip("/")
    shutil.copyfile(BOOT_STUB, stub)
    os.chmod(stub, 0o755)
    apt_archives = rootfs / "var" / "cache" / "apt" / "archives"
    for deb in apt_archives.glob("*.deb"):
        deb.unlink()
    # A purged kernel can leave an empty /lib/modules/<release>: count those with a /boot image.
    releases = sorted(p.name for p in (rootfs / "lib" / "modules").iterdir()
                      if p.is_dir() and (rootfs / "boot" / f"vmlinuz-{p.name}").is_file()) \
        if (rootfs / "lib" / "modules").is_dir() else []
    if len(releases) != 1:
        raise SnapprofError(f"expected one kernel in the guest, found {releases or 'none'}; rebuild with --force")
    rel = releases[0]
    _initramfs_modules(rootfs, rel)
    for name in (f"vmlinuz-{rel}", f"initrd.img-{rel}"):
        if not (rootfs / "boot" / name).is_file():
            raise SnapprofError(f"the guest has no /boot/{name} (initramfs-tools failed?); rebuild with --force")
    return {
        "kernel_release": rel,
        "bcc_version": dpkg_version(rootfs, "python3-bpfcc"),
        "python_version": dpkg_version(rootfs, "python3"),
        "init": GUEST_INIT_PATH,
    }


def _initramfs_modules(rootfs: Path, rel: str) -> None:
    """Add INITRAMFS_MODULES (those this kernel has) to the initramfs and regenerate it,
    with whichever generator the guest has (initramfs-tools or dracut)."""
    mod_dir = rootfs / "lib" / "modules" / rel
    have = {p.name.split(".ko")[0] for p in mod_dir.rglob("*.ko*")}
    wanted = [m for m in INITRAMFS_MODULES if m in have]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
    if dpkg_version(rootfs, "dracut") and not dpkg_version(rootfs, "initramfs-tools"):
        conf = rootfs / DRACUT_CONF
        conf.parent.mkdir(parents=True, exist_ok=True)
        # A generic initramfs (not host-only: the build runs in a chroot, not on the guest),
        # with the lz4 modules a boot kernel needs to read an lz4 hibernation image.
        conf.write_text('hostonly="no"\n' + (f'add_drivers+=" {" ".join(wanted)} "\n' if wanted else ""))
        argv = ["dracut", "--force", f"/boot/initrd.img-{rel}", rel]
    else:
        if not wanted:
            return
        conf = rootfs / "etc" / "initramfs-tools" / "modules"
        text = conf.read_text() if conf.exists() else ""
        missing = [m for m in wanted if m not in text.split()]
        if not missing:
            return
        conf.write_text(text + "".join(f"{m}\n" for m in missing))
        argv = ["update-initramfs", "-u", "-k", rel]
    from snapprof.lab.kernel import chroot_mounts

    with chroot_mounts(rootfs):
        proc = subprocess.run(["chroot", str(rootfs), *argv], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SnapprofError(f"{argv[0]} in the guest failed: {tail[0]}")


def dpkg_versions(rootfs: Path) -> dict[str, str]:
    """{package: version} of everything installed in a root file system."""
    try:
        text = (rootfs / "var" / "lib" / "dpkg" / "status").read_text(errors="replace")
    except OSError:
        return {}
    out = {}
    for para in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", para, re.M))
        if "Package" in fields and "installed" in fields.get("Status", ""):
            out[fields["Package"]] = fields.get("Version", "")
    return out


def dpkg_version(rootfs: Path, package: str) -> str:
    """The installed version of `package` in a root file system ('' if not installed)."""
    return dpkg_versions(rootfs).get(package, "")


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    if proc.returncode != 0:
        last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise SnapprofError(f"{what} failed (exit {proc.returncode}): {last}")


def _mounts_under(path: Path) -> list[str]:
    root = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mnt = line.split()[4].encode().decode("unicode_escape")
                if mnt == root or mnt.startswith(root + "/"):
                    found.append(mnt)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


def _unmount_under(path: Path) -> None:
    for mnt in _mounts_under(path):
        subprocess.run(["umount", "-l", mnt], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def remove_tree(path: Path) -> None:
    """Remove a build folder, first unmounting anything an interrupted debootstrap left
    mounted inside it (proc, sys) so nothing outside it is touched."""
    if not os.path.lexists(path):
        return
    _unmount_under(path)
    if _mounts_under(path):
        raise SnapprofError(f"cannot unmount file systems under {path}; unmount them and retry")
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def resolve_key(suite: str, spec: str | None, lab: Path | None = None, builds=None) -> str:
    """The image key for `--distro SUITE [--kernel SPEC]`: the plain suite when SPEC is
    absent or names the suite's own kernel (the one its image has, else the one its
    index installs), else "SUITE:RELEASE" of the newest installable build SPEC names."""
    validate_suite(suite)
    if not spec:
        return suite
    from snapprof.lab import archive

    build = archive.resolve(suite, spec, builds, lab)
    base = load_image(suite, lab)
    own = base.kernel_release if base else archive.default_release(suite, lab)
    return suite if build.release == own else image_key(suite, build.release)
