"""``pool``: captures in, one new committed batch of Parquet files out.

Written with pyarrow (``pyarrow.parquet``): the rows come out of pandas frames, which Arrow
takes without a copy per column, and a writer process needs no database of its own;
DuckDB is the reader (docs/fleet.md says why).

- Each capture's id is the SHA-256 of its bytes. A capture whose id is in the dataset
  already, or given twice, is counted as already pooled and changes nothing.
- A file that is not a capture (or a capture the reader refuses) is skipped with the
  reader's one-line reason and counted; the others are pooled.
- Captures are read in chunks (``CHUNK``) by worker processes; each chunk becomes one
  Parquet file per table and kernel release, written into ``.staging-<batch>/``. When every
  chunk is written, the files are renamed into place and the manifest, replaced by rename,
  names them: the commit. Readers read only what the manifest names, so a pool killed
  before that adds nothing they see; the next pool removes what it left.
- One pool at a time per dataset (an exclusive ``flock`` on ``DATASET/.lock``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field

from snapprof.errors import SnapprofError
from snapprof.fleet import layout

#: Captures per worker task and per Parquet file.
CHUNK = 64
LOCK = ".lock"


@dataclass
class PoolResult:
    dataset: str
    batch: str | None = None                    # None: nothing new, nothing written
    added: list[str] = field(default_factory=list)       # capture ids
    already: list[str] = field(default_factory=list)     # paths already pooled (or given twice)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    runs: int = 0
    files: int = 0
    seconds: float = 0.0


def _expand(inputs: list[str], target: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Regular files named or found (recursively, hidden names left out) under the inputs."""
    out, skipped = [], []
    real_target = os.path.realpath(target)
    for item in inputs:
        try:
            st = os.stat(item)
        except OSError as exc:
            skipped.append((item, exc.strerror or str(exc)))
            continue
        if stat.S_ISDIR(st.st_mode):
            if os.path.realpath(item) == real_target:
                skipped.append((item, "is the dataset itself"))
                continue
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                                 and os.path.realpath(os.path.join(root, d)) != real_target)
                out += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
        else:
            out.append(item)
    return out, skipped


def content_id(path: str) -> str:
    """SHA-256 of the file; SnapprofError when it cannot be read (not a regular file, ...)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise SnapprofError(exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SnapprofError("not a regular file")
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        return h.hexdigest()
    except OSError as exc:
        raise SnapprofError(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def _open_target(target: str) -> dict:
    """The manifest of ``target`` (a new one for a missing or empty folder); SnapprofError
    when it cannot be a dataset this snapprof writes."""
    if layout.is_remote(target):
        raise SnapprofError(f"{target}: pool writes a local folder; copy it to object storage "
                            "afterwards (docs/fleet.md)")
    if os.path.lexists(target) and not os.path.isdir(target):
        raise SnapprofError(f"{target} exists and is not a folder")
    if os.path.isdir(target) and os.path.exists(os.path.join(target, layout.MANIFEST)):
        return layout.read_manifest(target)
    if os.path.isdir(target) and [n for n in os.listdir(target) if n != LOCK]:
        raise SnapprofError(f"{target} is a folder that is not a snapprof dataset (no "
                            f"{layout.MANIFEST}, not empty): name a new or empty folder")
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as exc:
        raise SnapprofError(f"cannot create {target}: {exc.strerror}") from None
    return layout.empty_manifest()


def _lock(target: str) -> int:
    try:
        fd = os.open(os.path.join(target, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise SnapprofError(f"cannot write {target}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SnapprofError(f"{target}: another snapprof pool is writing it; try again "
                                "when it has finished") from None
        raise SnapprofError(f"cannot lock {target}: {exc.strerror}") from None
    return fd


def _clean(target: str, manifest: dict) -> None:
    """Remove what a killed pool left: staging folders, files no manifest names."""
    named = {f for t in layout.TABLES for f in layout.files_of(manifest, t)}
    for name in os.listdir(target):
        path = os.path.join(target, name)
        if name.startswith(".staging-"):
            shutil.rmtree(path, ignore_errors=True)
        elif name in layout.TABLES and os.path.isdir(path):
            for root, _dirs, files in os.walk(path):
                for f in files:
                    rel = os.path.relpath(os.path.join(root, f), target).replace(os.sep, "/")
                    if rel not in named:
                        os.unlink(os.path.join(root, f))


def pooled_ids(target: str, manifest: dict) -> tuple[set[str], int]:
    """Capture ids in the dataset, and the next free ``seq``."""
    import pyarrow.parquet as pq

    ids, top = set(), -1
    for rel in layout.files_of(manifest, "captures"):
        t = pq.read_table(os.path.join(target, rel), columns=["capture_id", "seq"])
        ids.update(t.column("capture_id").to_pylist())
        if t.num_rows:
            top = max(top, max(t.column("seq").to_pylist()))
    return ids, top + 1


def _read_chunk(paths: list[str]):
    """[(path, frames or None, reason)] for a chunk, read together (one phase derivation),
    one by one when one of them is refused (to find which)."""
    from snapprof.analysis.compare import load_captures

    try:
        return [(p, f, None) for p, f in zip(paths, load_captures(paths, jobs=1, for_compare=True))]
    except SnapprofError:
        if len(paths) == 1:
            raise
    except Exception:  # noqa: BLE001 - found below, capture by capture
        if len(paths) == 1:
            raise
    out = []
    for p in paths:
        try:
            out.append(_read_chunk([p])[0])
        except SnapprofError as exc:
            msg = str(exc)
            out.append((p, None, msg[len(p) + 2:] if msg.startswith(f"{p}: ") else msg))
        except Exception as exc:  # noqa: BLE001 - a bug in a reader: counted, never a traceback
            out.append((p, None, f"internal error: {type(exc).__name__}: {exc} (a bug in snapprof)"))
    return out


def _pool_chunk(task) -> tuple[list, list[str], int]:
    """Worker: read a chunk of (path, id, seq), write its Parquet files into the staging
    folder. Returns ([(path, id, reason or None)], written relative paths, runs pooled)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from snapprof.fleet.tables import capture_rows

    staging, batch, number, items = task
    results, parts, runs = [], {}, 0
    for (path, frames, reason), (_, cid, seq) in zip(_read_chunk([i[0] for i in items]), items):
        if frames is None:
            results.append((path, cid, reason))
            continue
        try:
            rows = capture_rows(frames, cid, seq, batch)
        except Exception as exc:  # noqa: BLE001 - counted, never a traceback
            results.append((path, cid, f"internal error: {type(exc).__name__}: {exc} (a bug in snapprof)"))
            continue
        results.append((path, cid, None))
        runs += len(frames.runs)
        release = rows["captures"].column("kernel_release")[0].as_py()
        for table, t in rows.items():
            parts.setdefault((table, release), []).append(t)
    written = []
    for (table, release), tables in parts.items():
        rel = f"{layout.partition_dir(table, release)}/{batch}-{number:05d}.parquet"
        os.makedirs(os.path.dirname(os.path.join(staging, rel)), exist_ok=True)
        pq.write_table(pa.concat_tables(tables), os.path.join(staging, rel), compression="zstd")
        written.append(rel)
    return results, written, runs


def pool(inputs: list[str], target: str, jobs: int | None = None, progress=None) -> PoolResult:
    """Add the captures among ``inputs`` (files and folders) to the dataset ``target``."""
    t0 = time.monotonic()
    manifest = _open_target(target)
    result = PoolResult(dataset=target)
    lock = _lock(target)
    try:
        manifest = (layout.read_manifest(target)
                    if os.path.exists(os.path.join(target, layout.MANIFEST)) else manifest)
        _clean(target, manifest)
        ids, seq = pooled_ids(target, manifest)
        paths, result.skipped = _expand(inputs, target)
        todo = []
        for p in paths:
            try:
                cid = content_id(p)
            except SnapprofError as exc:
                result.skipped.append((p, str(exc)))
                continue
            if cid in ids:
                result.already.append(p)
                continue
            ids.add(cid)
            todo.append((p, cid, seq))
            seq += 1
        if todo:
            _write_batch(target, manifest, todo, result, jobs, progress)
    finally:
        os.close(lock)
    result.seconds = time.monotonic() - t0
    return result


def _write_batch(target, manifest, todo, result, jobs, progress) -> None:
    batch = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    staging = os.path.join(target, f".staging-{batch}")
    try:
        os.makedirs(staging)
    except OSError as exc:
        raise SnapprofError(f"cannot write {target}: {exc.strerror}") from None
    try:
        tasks = [(staging, batch, i // CHUNK, todo[i:i + CHUNK]) for i in range(0, len(todo), CHUNK)]
        jobs = min(jobs or os.cpu_count() or 1, len(tasks))
        written: list[str] = []
        if jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as ex:
                outs = ex.map(_pool_chunk, tasks)
                for out in outs:
                    _account(out, result, written, progress)
        else:
            for task in tasks:
                _account(_pool_chunk(task), result, written, progress)
        if not result.added:
            return
        for rel in written:
            dest = os.path.join(target, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.rename(os.path.join(staging, rel), dest)
        files: dict[str, list[str]] = {}
        for rel in sorted(written):
            files.setdefault(rel.split("/", 1)[0], []).append(rel)
        manifest["batches"].append({"id": batch, "captures": len(result.added), "runs": result.runs,
                                    "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "files": files})
        import snapprof
        manifest["written_by"] = f"snapprof {snapprof.__version__}"
        manifest["version"] = layout.VERSION  # a version-1 dataset now has version-2 tables
        layout.write_manifest(target, manifest)
        result.batch, result.files = batch, len(written)
    except OSError as exc:
        raise SnapprofError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _account(out, result: PoolResult, written: list[str], progress) -> None:
    results, files, runs = out
    written += files
    result.runs += runs
    for path, cid, reason in results:
        if reason is None:
            result.added.append(cid)
        else:
            result.skipped.append((path, reason))
    if progress:
        progress(len(result.added) + len(result.skipped), result)
