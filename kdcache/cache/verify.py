"""Read every chunk of a cache and report what is damaged, missing or inconsistent."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zarr
from zarr.core.sync import sync

from kdcache.errors import IntegrityError, KdcacheError, one_line

from . import schema as sc
from .reader import TeacherCache
from .validation import read_done, unsafe_utterance_id

# What zarr raises when stored bytes fail to decode (checksum mismatch, truncated shard or index).
_DECODE_ERRORS = (ValueError, RuntimeError, IndexError, TypeError)


@dataclass
class VerifyReport:
    """problems: one line each, naming the array, the shard and its rows. damaged: (array, shard) of each
    unreadable or lost shard file (shard None: a whole small array), for tools that re-fetch them.
    bytes_per_row: stored bytes per row of each row array (None where the store cannot tell, e.g. over
    HTTP)."""

    path: str
    problems: list[str] = field(default_factory=list)
    damaged: list[tuple[str, int | None]] = field(default_factory=list)
    bytes_per_row: dict[str, float | None] = field(default_factory=dict)
    shards_checked: int = 0
    shards_done: int = 0
    num_shards: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _stored_size(arr: zarr.Array, key: str) -> int | None:
    """Size in bytes of one stored chunk/shard object, None if it does not exist."""
    try:
        return int(sync(arr.store.getsize(f"{arr.path}/{key}")))
    except (FileNotFoundError, KeyError):
        return None


def _stored_bytes(arr: zarr.Array) -> int | None:
    try:
        return int(arr.nbytes_stored())
    except Exception:  # stores that cannot list (HTTP)
        return None


def verify_cache(
    path_or_url: str | Path | TeacherCache, progress: Callable[[int, int], Any] | None = None
) -> VerifyReport:
    """Read every array shard by shard (checksums), check progress/done and shapes. progress(i, n) is
    called after each shard. Opening errors (not a cache, unknown version) raise KdcacheError."""
    cache = path_or_url if isinstance(path_or_url, TeacherCache) else TeacherCache.open(path_or_url)
    lay = cache.layout
    U = int(cache.settings.get("num_utterances", 0))
    report = VerifyReport(path=cache.url, num_shards=lay.num_shards)
    problems = report.problems
    specs = sc.array_specs(lay, U, with_head=bool(cache.settings.get("has_head")))

    arrays: dict[str, zarr.Array] = {}
    for name, spec in specs.items():
        try:
            arr = cache.array(name)
        except IntegrityError as e:
            problems.append(f"{name}: refused ({e})")
            continue
        except KdcacheError as e:
            problems.append(f"{name}: missing ({e})")
            continue
        if tuple(arr.shape) != spec.shape:
            problems.append(f"{name}: shape {tuple(arr.shape)}, expected {spec.shape}")
            continue
        arrays[name] = arr

    # Small (non-row) arrays: read whole.
    small: dict[str, np.ndarray] = {}
    for name in [n for n, s in specs.items() if not s.row_indexed and n in arrays]:
        try:
            small[name] = np.asarray(arrays[name][:])
        except Exception as e:
            _raise_if_unreachable(cache, name, e)
            if name == sc.DONE:  # name the entries that fail; the others still count
                small[name] = read_done(arrays[name])
                for s in range(lay.num_shards):
                    try:
                        arrays[name][s]
                    except Exception as entry_error:  # noqa: BLE001 - sorted by _raise_if_unreachable
                        _raise_if_unreachable(cache, f"{name} entry {s}", entry_error)
                        problems.append(f"{name}: the entry of shard {s} is unreadable (counts as not done; "
                                        "rerun the build to write that shard again)")
                        report.damaged.append((name, s))
                continue
            problems.append(f"{name}: unreadable ({type(e).__name__}: {e})")
            report.damaged.append((name, None))
    done = small.get(sc.DONE, np.zeros(lay.num_shards, bool)).astype(bool)
    report.shards_done = int(done.sum())
    for utt in small.get(sc.UTT_ID, ()):
        why = unsafe_utterance_id(str(utt))
        if why:
            problems.append(f"{sc.UTT_ID}: utterance id {str(utt)!r} is {why}")
            break
    if sc.HEAD in small:
        norms = np.linalg.norm(small[sc.HEAD], axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            problems.append(f"{sc.HEAD}: rows are not L2-normalised")

    row_names = [n for n, s in specs.items() if s.row_indexed and n in arrays]
    for s in range(lay.num_shards):
        sl = lay.shard_slice(s)
        where = f"shard {s} (rows {sl.start}-{sl.stop - 1})"
        if not done[s]:
            problems.append(f"progress/done: {where} is not done")
        for name in row_names:
            arr = arrays[name]
            key = arr.metadata.encode_chunk_key((s,) + (0,) * (arr.ndim - 1))
            size = _stored_size(arr, key)
            if done[s] and not size:
                problems.append(f"{name}: {where} is marked done but its shard file {key} is missing or empty")
                report.damaged.append((name, s))
                continue
            try:
                data = np.asarray(arr[sl])
            except Exception as e:
                _raise_if_unreachable(cache, f"{name} {where}", e)
                problems.append(f"{name}: {where} is damaged ({type(e).__name__}: {e})")
                report.damaged.append((name, s))
                continue
            if done[s]:
                problems.extend(_content_problems(name, data, where, sl.start, U, lay.num_classes))
        report.shards_checked += 1
        if progress is not None:
            progress(s + 1, lay.num_shards)

    for name in row_names:
        stored = _stored_bytes(arrays[name])
        report.bytes_per_row[name] = None if stored is None else stored / lay.num_rows
    return report


def _raise_if_unreachable(cache: TeacherCache, what: str, err: Exception) -> None:
    """A remote read that failed for a reason other than decoding (server gone, timeout) says nothing
    about the data: stop with that, instead of reporting the shard as damaged. A local error that is
    neither a decode error nor the file system's is a bug: it is raised as it is, with its traceback."""
    if not cache.is_remote and not isinstance(err, (*_DECODE_ERRORS, OSError)):
        raise err
    if cache.is_remote and not isinstance(err, _DECODE_ERRORS):
        text = one_line(err)
        raise KdcacheError(
            f"{cache.url}: reading {what} failed ({type(err).__name__}: {text[:200]}); "
            "the store is unreachable, not known to be damaged: rerun when it answers"
        ) from err


def _content_problems(name: str, data: np.ndarray, where: str, row0: int, U: int, S: int) -> list[str]:
    out = []
    if data.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(data.reshape(len(data), -1)).all(axis=1))
        if bad.size:
            out.append(f"{name}: {where} has {bad.size} unwritten or non-finite rows (first: row {row0 + bad[0]})")
    elif name == sc.ROW_UTTERANCE and data.size and (data.min() < 0 or data.max() >= U):
        out.append(f"{name}: {where} has utterance indices outside [0, {U})")
    elif name == sc.ROW_LABEL and data.size and (data.min() < -1 or data.max() >= S):
        # -1 marks a speaker unknown to the teacher (--allow-unknown-speakers), as the writer allows
        out.append(f"{name}: {where} has labels outside [-1, {S}) (-1: speaker unknown to the teacher)")
    return out


def sample_rows(cache: TeacherCache | str | Path, n: int, seed: int = 0) -> np.ndarray:
    """n sorted random rows from done shards: the hook for re-computing the teacher on a sample (the
    comparison itself needs models and lives with the teacher code)."""
    cache = cache if isinstance(cache, TeacherCache) else TeacherCache.open(cache)
    lay = cache.layout
    shards = np.flatnonzero(cache.done())
    starts = shards * lay.shard_rows
    sizes = np.minimum(starts + lay.shard_rows, lay.num_rows) - starts
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if len(ends) else 0
    k = np.random.default_rng(seed).choice(total, size=min(n, total), replace=False) if total else np.empty(0, int)
    pos = np.searchsorted(ends, k, side="right")
    return np.sort(starts[pos] + k - (ends[pos] - sizes[pos])).astype(np.int64)
