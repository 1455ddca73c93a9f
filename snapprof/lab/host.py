"""Facts about the host the lab runs on: the cache folder, host tools, root, free disk.

Every check raises SnapprofError with one line that says what to do.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from snapprof.errors import SnapprofError

# Host tool -> the Debian package that carries it.
TOOL_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
}
BUILD_TOOLS = ("debootstrap", "mkfs.ext4")
RUN_TOOLS = ("qemu-system-x86_64", "qemu-img")

GiB = 1024**3


def lab_dir(env: dict[str, str] | None = None) -> Path:
    """The lab cache: $SNAPPROF_LAB_DIR, else $XDG_CACHE_HOME/snapprof/lab,
    else ~/.cache/snapprof/lab. Never inside the repository."""
    env = os.environ if env is None else env
    if env.get("SNAPPROF_LAB_DIR"):
        return Path(env["SNAPPROF_LAB_DIR"]).expanduser().absolute()
    cache = env.get("XDG_CACHE_HOME") or ""
    base = Path(cache).expanduser() if os.path.isabs(os.path.expanduser(cache)) else Path.home() / ".cache"
    return (base / "snapprof" / "lab").absolute()


def find_tool(name: str) -> str | None:
    """Path of a host tool, also looking in the sbin folders a non-login PATH may lack."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        cand = os.path.join(folder, name)
        if os.access(cand, os.X_OK):
            return cand
    return None


def require_tools(names, finder=None) -> dict[str, str]:
    """Paths of the named host tools; a one-line error naming every missing one."""
    finder = finder or find_tool
    paths = {n: finder(n) for n in names}
    missing = [n for n, p in paths.items() if not p]
    if missing:
        pkgs = sorted({TOOL_PACKAGES.get(n, n) for n in missing})
        what = ", ".join(f"{n} (Debian package {TOOL_PACKAGES.get(n, n)})" for n in missing)
        raise SnapprofError(
            f"missing host tools: {what}; run ./scripts/setup, or as root: "
            f"apt-get install --no-install-recommends {' '.join(pkgs)}"
        )
    return paths  # type: ignore[return-value]


def require_root(action: str, euid: int | None = None) -> None:
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise SnapprofError(f"{action} needs root (debootstrap and chroot); run it as root, e.g. sudo -E snapprof lab build")


def require_free_space(path: Path, need_bytes: int, what: str, usage=shutil.disk_usage) -> int:
    """Check that the file system holding `path` (or its nearest existing parent) has room."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = usage(probe).free
    if free < need_bytes:
        raise SnapprofError(
            f"{what} needs {need_bytes / GiB:.1f} GiB free in {probe}, only {free / GiB:.1f} GiB free; "
            f"free some space or point SNAPPROF_LAB_DIR at a larger disk"
        )
    return free
