"""Upload a local cache to an object store (``kdcache cache push DIR URL``): resumable, verified remotely.

Order of the uploads, so that a reader never takes a half-pushed cache for a complete one:
1. ``.kdcache-push.json`` (the source's settings digest: a rerun resumes only a push of the same cache);
2. the root ``zarr.json`` with ``complete: false`` and every array's metadata: the URL opens as a cache,
   but no shard is done (the ``progress/done`` objects are absent and read as not done), so training
   refuses it as incomplete;
3. every chunk (shard) object of the finished shards; one already there with the local size is skipped;
4. remote verification: every shard of every array is read back from the store (crc32c of each chunk);
   damaged objects are deleted, so that the next push uploads them again, and the push fails naming them;
5. the ``progress/done`` objects, then the final root ``zarr.json``; the state object is removed.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kdcache.errors import IntegrityError, KdcacheError

from . import schema as sc
from .objectstore import CacheLocation, describe_store_error, store_error_types
from .pull import list_cache_files
from .reader import TeacherCache
from .verify import VerifyReport, verify_cache

STATE_OBJECT = ".kdcache-push.json"


@dataclass
class PushReport:
    source: Path
    url: str
    files_total: int = 0
    files_uploaded: int = 0
    files_skipped: int = 0
    bytes_uploaded: int = 0
    shards_not_done: list[int] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    verify: VerifyReport | None = None


def _digest(settings: dict[str, Any]) -> str:
    stable = {k: v for k, v in settings.items() if k != "complete"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()


def _incomplete_root(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["attributes"][sc.ATTRS_KEY] = {**doc["attributes"][sc.ATTRS_KEY], "complete": False}
    return json.dumps(doc, indent=2).encode()


def push_cache(
    source: str | Path,
    url: str,
    *,
    storage_options: dict[str, Any] | None = None,
    workers: int = 8,
    progress: Callable[[int], Any] | None = None,
    on_total: Callable[[int], Any] | None = None,
) -> PushReport:
    """Upload the local cache folder ``source`` to ``url`` (resuming an interrupted push), verify it there.

    Raises KdcacheError (one line naming the URL) when the store refuses or stops answering: what was
    uploaded is kept and a rerun resumes. Raises IntegrityError when remote verification fails (the
    damaged objects are deleted first, so a rerun uploads them again)."""
    source = Path(source)
    location = CacheLocation(url, storage_options)
    if not location.remote:
        raise KdcacheError(f"{url}: push uploads to an object store (s3://...); for a local copy use `kdcache cache pull`")
    cache = TeacherCache.open(source)
    if cache.is_remote:
        raise KdcacheError(f"{source}: push uploads a local cache folder")
    settings = cache.settings
    digest = _digest(settings)
    location.check_writable()
    fs, root = location.fs, location.root

    def call(doing: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except store_error_types() as err:
            raise KdcacheError(describe_store_error(url, err, doing) + "; rerun the push to resume") from None

    # Refuse a destination holding another cache (or another push in progress).
    existing = location.read_settings()
    state = None
    try:
        state = json.loads(fs.cat_file(f"{root}/{STATE_OBJECT}"))
    except FileNotFoundError:
        pass
    except (ValueError, *store_error_types()) as err:
        if not isinstance(err, ValueError):
            raise KdcacheError(describe_store_error(url, err, "reading the push state")) from None
    if state is not None and state.get("settings_sha256") != digest:
        raise KdcacheError(f"{url}: holds an interrupted push of another cache ({state.get('source', '?')}); "
                           "delete that prefix or push to another URL")
    if state is None and existing is not None and _digest(existing) != digest:
        raise KdcacheError(f"{url}: holds another cache (its settings differ from {source}'s); "
                           "delete that prefix or push to another URL")
    if state is None and existing is None and not location.is_empty():
        raise KdcacheError(f"{url}: is not empty and holds no kdcache cache; push to an empty prefix")

    files, not_done = list_cache_files(cache)
    report = PushReport(source=source, url=url, files_total=len(files), shards_not_done=not_done)
    call("writing the push state", fs.pipe_file, f"{root}/{STATE_OBJECT}",
         json.dumps({"source": str(source), "settings_sha256": digest}).encode())
    root_meta = (source / "zarr.json").read_bytes()
    call("writing zarr.json", fs.pipe_file, f"{root}/zarr.json", _incomplete_root(root_meta))

    done_prefix = f"{sc.DONE}/c/"
    metadata = [f for f in files if f.key.endswith("zarr.json") and f.key != "zarr.json"]
    flags = [f for f in files if f.key.startswith(done_prefix)]
    chunks = [f for f in files if f not in metadata and f not in flags and f.key != "zarr.json"]

    def remote_size(key: str) -> int | None:
        try:
            return int(fs.size(f"{root}/{key}"))
        except FileNotFoundError:
            return None
        except store_error_types() as err:
            raise KdcacheError(describe_store_error(url, err, f"checking {key}") + "; rerun the push to resume") from None

    def upload(key: str) -> int:
        data = (source / key).read_bytes()
        call(f"uploading {key}", fs.pipe_file, f"{root}/{key}", data)
        if progress is not None:
            progress(len(data))
        return len(data)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="kdcache-push") as pool:
        fs.invalidate_cache()
        sizes = list(pool.map(remote_size, [f.key for f in chunks]))
        todo = [f.key for f in metadata]
        for f, size in zip(chunks, sizes):
            if size is not None and size == (source / f.key).stat().st_size:
                report.files_skipped += 1
            else:
                todo.append(f.key)
        if on_total is not None:
            on_total(sum((source / k).stat().st_size for k in todo))
        for n in pool.map(upload, todo):
            report.bytes_uploaded += n
            report.files_uploaded += 1

    # Read everything back from the store: checksums of every chunk, shapes, contents.
    report.verify = verify_cache(TeacherCache.open(url, storage_options))
    problems = [p for p in report.verify.problems if not (p.startswith(f"{sc.DONE}:") and p.endswith("is not done"))]
    if problems:
        remote = TeacherCache.open(url, storage_options)
        for name, shard in report.verify.damaged:
            arr = remote.group[name]
            keys = ([arr.metadata.encode_chunk_key((shard,) + (0,) * (arr.ndim - 1))] if shard is not None
                    else [f.key.removeprefix(name + "/") for f in chunks if f.key.startswith(name + "/c")])
            for key in keys:
                try:
                    fs.rm_file(f"{root}/{name}/{key}")
                    report.removed.append(f"{name}/{key}")
                except FileNotFoundError:
                    pass
        raise IntegrityError(f"{url}: the uploaded copy failed verification ({problems[0]}); the damaged objects "
                             "were deleted: rerun the push to upload them again")

    for f in flags:
        report.bytes_uploaded += upload(f.key)
        report.files_uploaded += 1
    call("writing zarr.json", fs.pipe_file, f"{root}/zarr.json", root_meta)
    report.files_uploaded += 1
    call("removing the push state", fs.rm_file, f"{root}/{STATE_OBJECT}")
    return report
