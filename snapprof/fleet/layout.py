"""The pooled dataset on disk: a folder of Parquet files and the manifest that commits them.

    DATASET/snapprof-dataset.json          the manifest (format, version, committed batches)
    DATASET/<table>/kernel=<release>/<batch>-<n>.parquet

Every table is partitioned by kernel release (the folder name is the release, %-quoted);
every file also holds ``kernel_release`` as a column, so a reader needs no partition
discovery and a file read alone says what it is. A batch is what one ``snapprof pool``
added. Its files are written into ``DATASET/.staging-<batch>/``, renamed into place, and
only then named in the manifest, itself replaced by rename: readers take the files the
manifest names and nothing else, so a pool that was killed halfway adds nothing anyone
reads (the next pool removes its leftovers).

Readers accept ``FORMAT`` manifests of the versions in ``READABLE``: a dataset written by
another format version is refused with one line. Version 2 added the culprits and processes
tables (a version-1 dataset reads as having none); a pool into a version-1 dataset writes
version 2, so an older snapprof then says which version it cannot read instead of calling
the new tables damage.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import urllib.parse

import pyarrow as pa

from snapprof.errors import SnapprofError

MANIFEST = "snapprof-dataset.json"
FORMAT = "snapprof-dataset"
VERSION = 2
READABLE = (1, 2)

_S, _D, _I, _B = pa.string(), pa.float64(), pa.int64(), pa.bool_()

#: Columns of every table (name, Arrow type). Every table starts with capture_id and
#: kernel_release (the partition), so any row names its capture.
SCHEMAS: dict[str, pa.Schema] = {
    "captures": pa.schema([
        ("capture_id", _S), ("kernel_release", _S), ("seq", _I), ("batch", _S), ("source", _S),
        ("host", _S), ("host_model", _S), ("machine", _S), ("kernel_version", _S),
        ("userspace", _S), ("distro", _S), ("libc_version", _S), ("python_version", _S),
        ("bcc_version", _S), ("trigger", _S), ("compressor", _S), ("compressor_how", _S),
        ("recorded_at", _S), ("snapprof_version", _S), ("runs_total", _I),
        ("runs_complete", _I), ("composition_absent", _S), ("meta", _S), ("probes", _S),
        ("warnings", _S)]),
    "runs": pa.schema([
        ("capture_id", _S), ("kernel_release", _S), ("run_id", _I), ("trigger", _S),
        ("status", _S), ("error", _S), ("started_ns", _D), ("ended_ns", _D),
        ("started_wall", _S), ("ringbuf_drops", _D), ("failure_kind", _S)]),
    "metrics": pa.schema([
        ("capture_id", _S), ("kernel_release", _S), ("run_id", _I), ("seq", _I), ("name", _S),
        ("value", _D), ("unit", _S), ("method", _S), ("source", _S)]),
    "not_measured": pa.schema([
        ("capture_id", _S), ("kernel_release", _S), ("run_id", _I), ("seq", _I), ("name", _S),
        ("reason", _S)]),
    "phases": pa.schema([
        ("capture_id", _S), ("kernel_release", _S), ("run_id", _I), ("seq", _I), ("phase", _S),
        ("start_ns", _D), ("end_ns", _D), ("duration_ms", _D), ("method", _S),
        ("counted", _B)]),
    "tasks": pa.schema([
        ("capture_id", _S), ("kernel_release", _S), ("run_id", _I), ("seq", _I), ("pid", _I),
        ("tgid", _I), ("comm", _S), ("kthread", _I), ("stage", _S),
        ("freeze_latency_ns", _D), ("frozen", _I)]),
    "devices": pa.schema([
        ("capture_id", _S), ("kernel_release", _S), ("run_id", _I), ("seq", _I),
        ("device", _S), ("driver", _S), ("duration_ns", _D)]),
    # why runs failed (snapprof.analysis.failures): the tasks that refused to freeze, the
    # memory users at an image-allocation failure; none in a capture before schema 2
    "culprits": pa.schema([
        ("capture_id", _S), ("kernel_release", _S), ("run_id", _I), ("seq", _I), ("kind", _S),
        ("stage", _S), ("pid", _I), ("tgid", _I), ("comm", _S), ("cmdline", _S), ("state", _S),
        ("wchan", _S), ("stack", _S), ("stack_source", _S), ("note", _S), ("probe_stack", _S)]),
    # the largest memory users just before each cycle; none before schema 3
    "processes": pa.schema([
        ("capture_id", _S), ("kernel_release", _S), ("run_id", _I), ("seq", _I), ("pid", _I),
        ("tgid", _I), ("comm", _S), ("cmdline", _S), ("rss_kb", _D), ("anon_kb", _D),
        ("shmem_kb", _D), ("file_kb", _D), ("swap_kb", _D), ("source", _S)]),
}
TABLES = tuple(SCHEMAS)


def is_remote(url: str) -> bool:
    """True for an fsspec URL (s3://, gs://, memory://, file://, ...)."""
    return "://" in url


def join(root: str, rel: str) -> str:
    return posixpath.join(root.rstrip("/"), rel) if is_remote(root) else os.path.join(root, rel)


def partition_dir(table: str, release: str) -> str:
    return f"{table}/kernel={urllib.parse.quote(release or 'unknown', safe='')}"


def empty_manifest() -> dict:
    import snapprof
    return {"format": FORMAT, "version": VERSION, "written_by": f"snapprof {snapprof.__version__}",
            "batches": []}


def check_manifest(data, where: str) -> dict:
    """The manifest's content, or SnapprofError (one line) for anything this snapprof cannot read."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapprofError(f"{where}: {MANIFEST} is not a snapprof dataset manifest")
    version = data.get("version")
    if version not in READABLE:
        raise SnapprofError(
            f"{where}: dataset format version {version!r} (written by "
            f"{data.get('written_by', 'an unknown snapprof')!s}); this snapprof reads versions "
            f"{', '.join(map(str, READABLE))}: pool the captures again with this snapprof, or "
            f"use the one that wrote it")
    batches = data.get("batches")
    if not isinstance(batches, list) or not all(
            isinstance(b, dict) and isinstance(b.get("files"), dict) for b in batches):
        raise SnapprofError(f"{where}: {MANIFEST} is damaged (no list of batches)")
    for b in batches:
        for table, files in b["files"].items():
            if table not in SCHEMAS or not isinstance(files, list) or not all(
                    isinstance(f, str) and not f.startswith(("/", "..")) and ".." not in f.split("/")
                    for f in files):
                raise SnapprofError(f"{where}: {MANIFEST} is damaged (bad file list)")
    return data


def read_manifest(root: str) -> dict:
    """The manifest of the dataset at ``root`` (a folder or an fsspec URL)."""
    path = join(root, MANIFEST)
    try:
        if is_remote(root):
            import fsspec
            with fsspec.open(path, "rt", encoding="utf-8") as fh:
                text = fh.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except FileNotFoundError:
        raise SnapprofError(f"{root}: not a snapprof dataset (no {MANIFEST}); make one with "
                            "snapprof pool") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapprofError(f"{root}: cannot read {MANIFEST}: {getattr(exc, 'strerror', None) or exc}") from None
    except ImportError as exc:
        raise SnapprofError(f"{root}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise SnapprofError(f"{root}: {MANIFEST} is not JSON (damaged)") from None
    return check_manifest(data, root)


def is_dataset(path: str) -> bool:
    """True when ``path`` names a dataset (a folder holding a manifest, or a URL)."""
    if is_remote(path):
        return True
    return os.path.isdir(path) and os.path.exists(os.path.join(path, MANIFEST))


def files_of(manifest: dict, table: str) -> list[str]:
    """Relative paths of the committed files of ``table``, batch by batch."""
    return [f for b in manifest["batches"] for f in b["files"].get(table, [])]


def write_manifest(root: str, manifest: dict) -> None:
    """Replace the manifest by rename (the commit point of a batch)."""
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{MANIFEST}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(root, MANIFEST))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
