"""Copy a cache to local disk (``kdcache cache pull``): file by file, resumable, then verified.

The source is anything :class:`TeacherCache` opens (a local path, ``file://``, ``http(s)://`` with Range
support and consolidated metadata, ``s3://`` with ``pip install 'kdcache[s3]'``). Files are enumerated
from the cache's own metadata, not by listing the source (an HTTP server cannot list a folder):
every node's ``zarr.json`` plus each array's chunk (shard) files.

- Resume: a data file whose local size equals the source's is complete and is skipped; a file is
  fetched into ``<name>.part`` (continued from its current length on a rerun) and renamed when whole.
  Metadata files and ``progress/done`` entries change while a cache is being built (incomplete to
  complete), so they are always fetched again; they are a few bytes each.
- Only finished shards are copied (``progress/done``): a shard being written at the source is skipped,
  not copied half-written. Pulling again later brings the shards finished since.
- The local root ``zarr.json`` is written last: until a pull has finished, the folder does not open as a
  cache. ``.kdcache-pull.json`` records the source's settings, so a resume into a folder that holds
  another cache (or a rebuilt one: its ``created`` differs) is refused.
- Afterwards every chunk is read back (crc32c, :func:`verify_cache`). Damaged local shard files are
  removed, so that the next pull fetches them again, and the pull fails naming them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Callable

import fsspec
import numpy as np
import zarr

from kdcache.errors import IntegrityError, KdcacheError, one_line

from . import schema as sc
from .reader import TeacherCache
from .store import is_remote as _is_remote
from .store import local_path as _local_path
from .store import quiet_hierarchy_walk
from .verify import VerifyReport, verify_cache

STATE_FILE = ".kdcache-pull.json"
PIECE_BYTES = 8 << 20  # bytes per ranged request of a large file
# Settings that change while a cache is built; a pull may resume across them.
_VOLATILE = ("complete",)


@dataclass
class PullReport:
    """What a pull did. files_absent: files the source does not have (arrays never written: fill values)."""

    source: str
    dest: Path
    files_total: int = 0
    files_copied: int = 0
    files_skipped: int = 0
    files_absent: int = 0
    shards_not_done: list[int] = field(default_factory=list)
    bytes_copied: int = 0
    removed: list[str] = field(default_factory=list)
    verify: VerifyReport | None = None

    @property
    def damage(self) -> list[str]:
        """Verification problems other than shards the source itself has not finished."""
        if self.verify is None:
            return []
        return [p for p in self.verify.problems if not (p.startswith(f"{sc.DONE}:") and p.endswith("is not done"))]


@dataclass(frozen=True)
class _File:
    key: str  # path inside the cache, '/'-separated
    always: bool  # fetch again even when the local copy has the source's size


def _settings_digest(settings: dict[str, Any]) -> str:
    stable = {k: v for k, v in settings.items() if k not in _VOLATILE}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()


def _per_shard_arrays(layout: sc.CacheLayout) -> set[str]:
    """Row arrays written shard by shard (the recipe arrays are written whole at creation)."""
    recipe = {name for name, _ in sc.RECIPE_ARRAYS.values()}
    return {name for name in sc.row_array_specs(layout) if name not in recipe}


def list_cache_files(cache: TeacherCache) -> tuple[list[_File], list[int]]:
    """Every file of the cache to copy (metadata and chunk files of finished shards), and the shards not
    done at the source."""
    group = cache.group
    layout = cache.layout
    done = cache.done()
    per_shard = _per_shard_arrays(layout)
    files = [_File("zarr.json", True)]
    with quiet_hierarchy_walk():
        members = list(group.members(max_depth=None))
    for path, node in members:
        files.append(_File(f"{path}/zarr.json", True))
        if not isinstance(node, zarr.Array):
            continue
        meta = node.metadata
        grid = [range(math.ceil(n / c)) for n, c in zip(node.shape, meta.chunk_grid.chunk_shape)]
        for coords in product(*grid):
            if path in per_shard and not done[coords[0]]:
                continue
            files.append(_File(f"{path}/{meta.encode_chunk_key(coords)}", path == sc.DONE))
    return files, [int(s) for s in np.flatnonzero(~done)]


def _check_dest(dest: Path, source: str, settings: dict[str, Any]) -> None:
    """Refuse a destination that holds something other than (a pull of) this cache."""
    digest = _settings_digest(settings)
    if not dest.exists():
        return
    if not dest.is_dir():
        raise KdcacheError(f"{dest}: exists and is not a folder")
    state_path = dest / STATE_FILE
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("settings_sha256") != digest:
            raise KdcacheError(
                f"{dest}: holds an interrupted pull of another cache ({state.get('source', '?')}); "
                "remove the folder or pull into another one"
            )
        return
    root_meta = dest / "zarr.json"
    if root_meta.is_file():
        try:
            local = json.loads(root_meta.read_text()).get("attributes", {}).get(sc.ATTRS_KEY)
        except (OSError, ValueError, AttributeError):
            local = None
        if not isinstance(local, dict):
            raise KdcacheError(f"{dest}: holds a zarr store that is not a kdcache cache; pull into another folder")
        if _settings_digest(local) != digest:
            raise KdcacheError(
                f"{dest}: holds another cache (its settings differ from {source}'s, e.g. it was rebuilt); "
                "remove the folder or pull into another one"
            )
        return
    if any(dest.iterdir()):
        raise KdcacheError(f"{dest}: exists, is not empty and is not a kdcache cache; pull into an empty folder")


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {one_line(err)}"[:300]


def pull_cache(
    url: str | Path,
    dest: str | Path,
    *,
    storage_options: dict[str, Any] | None = None,
    workers: int = 8,
    progress: Callable[[int], Any] | None = None,
    on_total: Callable[[int], Any] | None = None,
) -> PullReport:
    """Copy the cache at ``url`` into the folder ``dest`` (resuming an interrupted copy), then verify it.

    ``on_total(bytes)`` is called once with the bytes still to fetch, ``progress(bytes)`` as they arrive
    (from worker threads). Raises KdcacheError when the source cannot be read (rerun to resume) and
    IntegrityError when the copy fails verification (damaged local files are removed first).
    """
    url = str(url)
    dest = Path(dest)
    cache = TeacherCache.open(url, storage_options)
    if not _is_remote(url) and Path(_local_path(url)).resolve() == dest.resolve():
        raise KdcacheError(f"{dest}: is the source itself; pull into another folder")
    settings = cache.settings
    _check_dest(dest, url, settings)
    try:
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as e:
        raise KdcacheError(f"{url}: {e} (pip install 'kdcache[s3]' for s3://)") from None
    root = root.rstrip("/")
    files, not_done = list_cache_files(cache)
    report = PullReport(source=url, dest=dest, files_total=len(files), shards_not_done=not_done)

    dest.mkdir(parents=True, exist_ok=True)
    (dest / STATE_FILE).write_text(json.dumps({"source": url, "settings_sha256": _settings_digest(settings)}) + "\n")

    def source_size(f: _File) -> int | None:
        try:
            return int(fs.size(f"{root}/{f.key}"))
        except FileNotFoundError:
            return None
        except Exception as err:  # noqa: BLE001 - network and store errors of any client library
            raise KdcacheError(f"{url}: cannot reach {f.key} ({_one_line(err)}); rerun the pull to resume") from err

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="kdcache-pull") as pool:
        sizes = list(pool.map(source_size, files))
        todo: list[tuple[_File, int]] = []
        for f, size in zip(files, sizes):
            if f.key == "zarr.json":  # the root metadata is written last (below)
                continue
            if size is None:
                report.files_absent += 1
                continue
            local = dest / f.key
            if not f.always and local.is_file() and local.stat().st_size == size:
                report.files_skipped += 1
                continue
            todo.append((f, size))
        remaining = 0
        for f, size in todo:
            part = dest / (f.key + ".part")
            have = part.stat().st_size if (not f.always and part.is_file()) else 0
            remaining += size - have if have <= size else size
        if on_total is not None:
            on_total(remaining)

        def fetch(item: tuple[_File, int]) -> int:
            f, size = item
            target = dest / f.key
            part = dest / (f.key + ".part")
            target.parent.mkdir(parents=True, exist_ok=True)
            offset = part.stat().st_size if (not f.always and part.is_file()) else 0
            if offset > size:
                offset = 0
            fetched = 0
            try:
                with open(part, "ab" if offset else "wb") as out:
                    while offset < size:
                        end = min(offset + PIECE_BYTES, size)
                        data = fs.cat_file(f"{root}/{f.key}", start=offset, end=end)
                        if len(data) != end - offset:
                            raise KdcacheError(
                                f"{url}: {f.key}: asked for bytes {offset}-{end - 1}, got {len(data)} bytes "
                                "(a server without HTTP Range support, or the file changed); "
                                "serve the cache with Range requests"
                            )
                        out.write(data)
                        offset = end
                        fetched += len(data)
                        if progress is not None:
                            progress(len(data))
            except KdcacheError:
                raise
            except Exception as err:  # noqa: BLE001 - network and store errors of any client library
                raise KdcacheError(
                    f"{url}: copying {f.key} failed ({_one_line(err)}); the files copied so far are kept: "
                    "rerun the pull to resume"
                ) from err
            os.replace(part, target)
            return fetched

        futures = [pool.submit(fetch, item) for item in todo]
        try:
            for future in futures:
                report.bytes_copied += future.result()
                report.files_copied += 1
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    # Last: the root zarr.json (the local folder opens as a cache only once everything else is there).
    try:
        root_bytes = fs.cat_file(f"{root}/zarr.json")
    except Exception as err:  # noqa: BLE001
        raise KdcacheError(f"{url}: copying zarr.json failed ({_one_line(err)}); rerun the pull to resume") from err
    tmp = dest / "zarr.json.part"
    tmp.write_bytes(root_bytes)
    os.replace(tmp, dest / "zarr.json")
    report.files_copied += 1
    report.bytes_copied += len(root_bytes)
    (dest / STATE_FILE).unlink(missing_ok=True)

    report.verify = verify_cache(dest)
    damaged = [(name, s) for name, s in report.verify.damaged]
    if damaged:
        local = TeacherCache.open(dest)
        for name, s in damaged:
            report.removed.extend(_remove_shard_files(dest, local, name, s))
    return report


def _remove_shard_files(dest: Path, cache: TeacherCache, name: str, shard: int | None) -> list[str]:
    """Delete the local files of one damaged shard (or of a whole small array) so a rerun re-fetches them."""
    arr = cache.group[name]
    assert isinstance(arr, zarr.Array)
    meta = arr.metadata
    if shard is None:
        grid = [range(math.ceil(n / c)) for n, c in zip(arr.shape, meta.chunk_grid.chunk_shape)]
        keys = [meta.encode_chunk_key(coords) for coords in product(*grid)]
    else:
        keys = [meta.encode_chunk_key((shard,) + (0,) * (arr.ndim - 1))]
    removed = []
    for key in keys:
        path = dest / name / key
        if path.is_file():
            path.unlink()
            removed.append(f"{name}/{key}")
    return removed


def check_pull(report: PullReport) -> None:
    """Raise IntegrityError when the copy is damaged (naming the shards and what was removed)."""
    if report.damage:
        shards = ", ".join(
            f"{name} shard {s}" if s is not None else name for name, s in (report.verify.damaged if report.verify else [])
        )
        raise IntegrityError(
            f"{report.dest}: the copy failed verification ({shards or report.damage[0]}); the damaged files were "
            "removed: rerun the pull to fetch them again (if the source is damaged, run `kdcache cache verify` there)"
        )
