"""Which Debian kernel builds a lab guest of a given suite can install.

A suite's kernels come from the suite itself and from its backports (trixie-backports
carries 6.16 ... 7.3 built for trixie's userspace; bookworm-backports carries 6.12 for
bookworm's). The archive's package indices (`dists/<dist>/main/binary-amd64/Packages.xz`)
list them; they are fetched once a day into the lab cache (`<lab>/.archive/`).

A kernel build is named by its release, as `uname -r` prints it (`7.3.4+deb13-amd64`);
only the generic `amd64` flavour is offered (not cloud, rt or dbg). Its packages are the
signed image (`linux-image-<release>`), its headers (`linux-headers-<release>`, which bcc
needs to compile the probes) and the packages of the same kernel build they name with an
exact version (`linux-modules-`, `linux-binary-`, `linux-base-`, `linux-headers-…-common`,
`linux-kbuild-`). The archive drops older builds' packages from its index while keeping
the files in its pool: such a package is fetched from the pool by its exact name and
version, and the image says so ("pool: not in the signed index"). A build whose packages
are in neither is listed as not installable, with the package that is missing.

    builds = list_kernels("trixie")                 # oldest first
    b = resolve("trixie", "7.3")                    # the newest 7.3.x build
    b.release, b.version, b.dist, b.packages        # what lab build installs
"""

from __future__ import annotations

import json
import lzma
import os
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from snapprof.errors import SnapprofError
from snapprof.lab import host

MIRROR = "http://deb.debian.org/debian"
FLAVOUR = "amd64"
INDEX_MAX_AGE_S = 24 * 3600
TIMEOUT_S = 60
# Packages of one kernel build that its image or headers name with an exact version.
FAMILY = re.compile(r"^linux-(image|headers|modules|binary|base|kbuild|support)-")
RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?([^-]*)-(.+)$")


def mirror() -> str:
    return os.environ.get("SNAPPROF_LAB_MIRROR", MIRROR).rstrip("/")


def dists_for(suite: str) -> list[str]:
    """The archive sections a suite's guest can take a kernel from: the suite, then its
    backports (none for sid and experimental, which have no backports)."""
    if suite in ("sid", "unstable", "experimental"):
        return [suite]
    return [suite, f"{suite}-backports"]


def release_key(release: str) -> tuple:
    """Sort key of a kernel release: (major, minor, patch, the rest) — 6.12.117 < 6.16.3."""
    m = RELEASE.match(release)
    if not m:
        return (0, 0, 0, release)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), m.group(4), m.group(5))


def upstream(release: str) -> str:
    """"7.3.4+deb13-amd64" -> "7.3.4"."""
    m = RELEASE.match(release)
    return ".".join(g for g in m.group(1, 2, 3) if g) if m else release


@dataclass
class KernelBuild:
    """One kernel build of the archive, as a guest of `suite` would install it."""

    suite: str
    release: str  # uname -r
    version: str  # the Debian version of its packages
    dist: str  # where its image is indexed: trixie, trixie-backports, ...
    packages: dict[str, str] = field(default_factory=dict)  # package -> "index" | pool URL
    missing: list[str] = field(default_factory=list)  # packages found nowhere
    initramfs: str = "initramfs-tools"  # the generator its image names first

    @property
    def installable(self) -> bool:
        return not self.missing

    @property
    def from_pool(self) -> list[str]:
        return sorted(p for p, where in self.packages.items() if where != "index")

    @property
    def upstream(self) -> str:
        return upstream(self.release)

    def describe(self) -> str:
        if self.missing:
            return f"not installable: {', '.join(self.missing)} in neither the index nor the pool"
        if self.from_pool:
            return f"{len(self.from_pool)} package(s) from the pool, not in the signed index"
        return "all packages in the signed index"


# ---------------------------------------------------------------- the package indices

def parse_packages(text: str) -> dict[str, dict[str, str]]:
    """A Packages file -> {package: {field: value}} (the last stanza of a name wins)."""
    out: dict[str, dict[str, str]] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
                continue
            k, sep, v = line.partition(":")
            if sep:
                key = k.strip()
                fields[key] = v.strip()
        if "Package" in fields:
            out[fields["Package"]] = fields
    return out


def depends(fields: dict[str, str], which: str = "Depends") -> list[list[tuple[str, str | None]]]:
    """A Depends field as a list of alternatives, each [(package, exact version or None)]."""
    out = []
    for clause in filter(None, (c.strip() for c in fields.get(which, "").split(","))):
        alts = []
        for alt in clause.split("|"):
            m = re.match(r"\s*([a-z0-9][a-z0-9+.\-]*)(?::\w+)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?", alt)
            if m:
                alts.append((m.group(1), m.group(3) if m.group(2) == "=" else None))
        if alts:
            out.append(alts)
    return out


def _cache_dir(lab: Path | None) -> Path:
    return (lab or host.lab_dir()) / ".archive"


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        raise SnapprofError(f"the Debian archive answered {exc.code} for {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SnapprofError(f"cannot reach the Debian archive ({url}): {reason}") from None


def load_index(dist: str, lab: Path | None = None, *, refresh: bool = False,
               fetch=_fetch) -> dict[str, dict[str, str]]:
    """The amd64 main Packages index of `dist`, from the cache when it is less than a day
    old. A section the archive does not have raises SnapprofError naming it."""
    cache = _cache_dir(lab) / f"{dist}.Packages"
    fresh = cache.is_file() and time.time() - cache.stat().st_mtime < INDEX_MAX_AGE_S
    if not fresh or refresh:
        url = f"{mirror()}/dists/{dist}/main/binary-{FLAVOUR}/Packages.xz"
        try:
            text = lzma.decompress(fetch(url)).decode("utf-8", errors="replace")
        except lzma.LZMAError:
            raise SnapprofError(f"{url} is not an xz-compressed package index") from None
        except SnapprofError as exc:
            if cache.is_file():  # offline: an old index is better than none, and says so
                text = cache.read_text(errors="replace")
                age_h = (time.time() - cache.stat().st_mtime) / 3600
                print(f"snapprof lab: {exc}; using the cached index of {dist} ({age_h:.0f} h old)",
                      file=sys.stderr, flush=True)
                return parse_packages(text)
            raise
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(cache)
    return parse_packages(cache.read_text(errors="replace"))


def load_indices(suite: str, lab: Path | None = None, fetch=_fetch) -> dict[str, dict]:
    """{dist: index} for the suite and its backports; a backports section the archive
    lacks is left out, the suite itself must exist."""
    out = {}
    for dist in dists_for(suite):
        try:
            out[dist] = load_index(dist, lab, fetch=fetch)
        except SnapprofError:
            if dist == suite:
                raise SnapprofError(f"the Debian archive has no suite {suite!r} "
                                    f"(no {mirror()}/dists/{suite}/); give a suite such as "
                                    "bookworm, trixie, forky or sid") from None
    return out


# ---------------------------------------------------------------- pool look-ups

def _pool_url(package: str, version: str, arch: str, source: str = "linux") -> str:
    prefix = source[:4] if source.startswith("lib") else source[0]
    ver = version.split(":", 1)[-1]
    return f"{mirror()}/pool/main/{prefix}/{source}/{package}_{ver}_{arch}.deb"


def _exists(url: str) -> bool:
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class PoolCache:
    """Which pool files exist (pool files never change, so answers are kept)."""

    def __init__(self, lab: Path | None = None, exists=_exists):
        self.path = _cache_dir(lab) / "pool.json"
        self.exists = exists
        try:
            self.known: dict[str, bool] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}

    def find(self, package: str, version: str) -> str | None:
        """The pool URL of package=version (amd64, then all), or None."""
        for arch in (FLAVOUR, "all"):
            url = _pool_url(package, version, arch)
            if url not in self.known:
                self.known[url] = bool(self.exists(url))
            if self.known[url]:
                return url
        return None

    def save(self) -> None:
        if self.known:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"pool.json.{os.getpid()}")
            tmp.write_text(json.dumps({k: v for k, v in self.known.items() if v}, indent=0))
            tmp.replace(self.path)


# ---------------------------------------------------------------- kernel builds

def _image_release(name: str) -> str | None:
    m = re.fullmatch(r"linux-image-(\d+\.\d+\S*-" + FLAVOUR + ")", name)
    if not m or re.search(r"-(cloud|rt)-" + FLAVOUR + "$", m.group(1)):
        return None
    return m.group(1)


def _family(name: str, version: str, indices: dict[str, dict], pool: PoolCache,
            packages: dict[str, str], missing: list[str], depth: int = 0) -> None:
    """Find `name` at exactly `version` in an index or the pool, and follow its exact-version
    dependencies of the same kernel build (those that only the pool has are followed through
    the ones the index has; a pool package's own dependencies are left to apt)."""
    if name in packages or name in missing or depth > 4:
        return
    for idx in indices.values():
        f = idx.get(name)
        if f and f.get("Version") == version:
            packages[name] = "index"
            for alts in depends(f) + depends(f, "Pre-Depends"):
                for dep, exact in alts[:1]:
                    if exact and FAMILY.match(dep):
                        _family(dep, exact, indices, pool, packages, missing, depth + 1)
            return
    url = pool.find(name, version)
    if url:
        packages[name] = url
    else:
        missing.append(name)


def _pool_only_family(release: str, version: str, pool: PoolCache, packages, missing) -> None:
    """Packages of a build whose names the index no longer shows but that its image or
    headers need: the headers' common part and kbuild (named by the headers package)."""
    abi = release[: -len(FLAVOUR) - 1]
    if packages.get(f"linux-headers-{release}", "index") == "index":
        return
    for name in (f"linux-headers-{abi}-common", f"linux-kbuild-{abi}"):
        if name not in packages and name not in missing:
            url = pool.find(name, version)
            if url:
                packages[name] = url


def _initramfs(fields: dict[str, str]) -> str:
    for alts in depends(fields):
        names = [n for n, _ in alts]
        if any(n in ("dracut", "initramfs-tools", "linux-initramfs-tool") for n in names):
            return names[0] if names[0] in ("dracut", "initramfs-tools") else "initramfs-tools"
    return "initramfs-tools"


def list_kernels(suite: str, lab: Path | None = None, *, fetch=_fetch, exists=_exists) -> list[KernelBuild]:
    """Every amd64 kernel build a `suite` guest can take from the suite or its backports,
    oldest first, each with where its packages come from (or what is missing)."""
    indices = load_indices(suite, lab, fetch=fetch)
    pool = PoolCache(lab, exists)
    seen: dict[str, tuple[str, dict]] = {}
    for dist, idx in indices.items():
        for name, f in idx.items():
            rel = _image_release(name)
            if rel and rel not in seen:
                seen[rel] = (dist, f)
    names = sorted(seen, key=release_key)

    def one(rel: str) -> KernelBuild:
        dist, f = seen[rel]
        version = f.get("Version", "")
        packages: dict[str, str] = {}
        missing: list[str] = []
        _family(f"linux-image-{rel}", version, indices, pool, packages, missing)
        _family(f"linux-headers-{rel}", version, indices, pool, packages, missing)
        _pool_only_family(rel, version, pool, packages, missing)
        return KernelBuild(suite, rel, version, dist, packages, missing, _initramfs(f))

    with ThreadPoolExecutor(max_workers=8) as ex:
        builds = list(ex.map(one, names))
    pool.save()
    return builds


def default_release(suite: str, lab: Path | None = None, *, fetch=_fetch) -> str | None:
    """The release the suite's own `linux-image-amd64` installs (what a plain build has)."""
    idx = load_index(suite, lab, fetch=fetch)
    meta = idx.get(f"linux-image-{FLAVOUR}")
    if not meta:
        return None
    for alts in depends(meta):
        for name, _ in alts:
            rel = _image_release(name)
            if rel:
                return rel
    return None


def suite_initramfs(suite: str, lab: Path | None = None, *, fetch=_fetch) -> str:
    """The initramfs generator the suite's own kernel asks for first (dracut from forky on,
    initramfs-tools before)."""
    rel = default_release(suite, lab, fetch=fetch)
    idx = load_index(suite, lab, fetch=fetch)
    f = idx.get(f"linux-image-{rel}") if rel else None
    return _initramfs(f) if f else "initramfs-tools"


def match(builds: list[KernelBuild], spec: str) -> list[KernelBuild]:
    """The builds a --kernel SPEC names: an exact release (7.3.4+deb13-amd64), an upstream
    version (7.3.4), or a series (7.3: every 7.3.x)."""
    spec = spec.strip()
    exact = [b for b in builds if b.release == spec]
    if exact:
        return exact
    if re.fullmatch(r"\d+\.\d+\.\d+", spec):
        return [b for b in builds if b.upstream == spec]
    if re.fullmatch(r"\d+\.\d+", spec):
        return [b for b in builds if b.upstream == spec or b.upstream.startswith(spec + ".")]
    return []


def resolve(suite: str, spec: str, builds: list[KernelBuild] | None = None,
            lab: Path | None = None) -> KernelBuild:
    """The installable build a --kernel SPEC names (the newest, for a series or a version
    the archive has several builds of). One-line errors name what exists."""
    if not re.fullmatch(r"[0-9][0-9A-Za-z.+~\-]{0,60}", spec or ""):
        raise SnapprofError(f"bad --kernel {spec!r}: give a release such as 7.3.4+deb13-amd64, "
                            "a version such as 7.3.4 or a series such as 7.3")
    builds = list_kernels(suite, lab) if builds is None else builds
    found = match(builds, spec)
    if not found:
        series = sorted({".".join(b.upstream.split(".")[:2]) for b in builds},
                        key=lambda s: tuple(int(x) for x in s.split(".")))
        raise SnapprofError(f"the archive has no kernel {spec!r} for {suite} (in {', '.join(dists_for(suite))}); "
                            f"it has: {', '.join(series) or 'none'} (snapprof lab kernels --distro {suite})")
    ok = [b for b in found if b.installable]
    if not ok:
        b = found[-1]
        raise SnapprofError(f"kernel {b.release} for {suite} cannot be installed: {b.describe()}")
    return ok[-1]
