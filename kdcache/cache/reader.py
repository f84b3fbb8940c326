"""Read-only access to a teacher cache, local or remote (file://, http(s)://, s3://).

A batch of a few whole 64-row blocks is read as one slice per contiguous run, all runs of all requested
arrays concurrently through zarr's async API (one event-loop round trip): tens of thousands of rows/s,
against about a thousand for fully random rows (each row decodes its whole inner chunk).

Where the bytes come from (and fork safety): store.py; what is checked before decoding: validation.py;
how each output is decoded: codecs.py with the output specs of schema.py.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zarr
from zarr.core.sync import sync

from kdcache.errors import IntegrityError, KdcacheError, one_line

from . import schema as sc
from .attributes import CacheAttributes, check_array_metadata, parse_cache_attributes
from .codecs import as_dtype, decode, factorized_logits, stored_inputs
from .objectstore import describe_store_error
from .schema import CacheLayout
from .store import is_remote, open_store
from .validation import ALLOWED_CODECS, checked_array, read_done, unsafe_utterance_id

__all__ = ["ALLOWED_CODECS", "TeacherCache", "as_dtype", "factorized_logits", "read_done", "unsafe_utterance_id"]

Rows = slice | Sequence[int] | np.ndarray

# Use one slice per run when the rows form at most this many runs per row (else orthogonal indexing).
_MAX_RUN_FRACTION = 0.25


def _runs(uniq: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs [start, stop) of sorted unique row indices."""
    breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
    starts = uniq[np.r_[0, breaks]]
    stops = uniq[np.r_[breaks - 1, len(uniq) - 1]] + 1
    return list(zip(starts.tolist(), stops.tolist()))


class TeacherCache:
    """A teacher cache opened read-only. Float row arrays come back float32 unless dtype= says otherwise."""

    def __init__(self, path_or_url: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        self.url = str(path_or_url)
        self.storage_options = storage_options
        self._reset()

    def _reset(self) -> None:
        self._pid: int | None = None
        self._group: zarr.Group | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._memo: dict[str, Any] = {}

    @classmethod
    def open(cls, path_or_url: str | Path, storage_options: dict[str, Any] | None = None) -> TeacherCache:
        """Open (and validate) a cache: a local path, file://, http(s):// or s3:// URL."""
        cache = cls(path_or_url, storage_options)
        cache._open()
        return cache

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.url = state["url"]
        self.storage_options = state["storage_options"]
        self._reset()

    def __repr__(self) -> str:
        return f"TeacherCache({self.url!r})"

    # ----------------------------------------------------------------- opening
    @property
    def is_remote(self) -> bool:
        return is_remote(self.url)

    def _open(self) -> zarr.Group:
        if self._group is not None and self._pid == os.getpid():
            return self._group
        self._reset()
        remote = self.is_remote
        try:
            store = open_store(self.url, self.storage_options)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
                group = zarr.open_group(store, mode="r", use_consolidated=True if remote else None)
        except KdcacheError:
            raise
        except ImportError as e:  # e.g. s3:// without s3fs
            raise KdcacheError(f"{self.url}: {e} (pip install 'kdcache[s3]' for s3://)") from None
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as e:
            if remote and "bucket" in str(e).lower():
                raise KdcacheError(describe_store_error(self.url, e, "opening the cache")) from None
            raise KdcacheError(f"{self.url}: no kdcache cache there ({type(e).__name__}: {e})") from None
        except ValueError as e:
            if "onsolidated" in str(e):
                raise KdcacheError(
                    f"{self.url}: the cache has no consolidated metadata, which reading over "
                    f"{self.url.split('://')[0]} needs (a group cannot be listed there); "
                    "finalize it where it was built (CacheWriter.finalize) and upload zarr.json again"
                ) from None
            raise KdcacheError(f"{self.url}: cannot open the cache: {e}") from None
        except (TypeError, KeyError) as e:  # zarr's parse of malformed (consolidated) array metadata
            raise KdcacheError(f"{self.url}: cannot open the cache: malformed metadata in zarr.json "
                               f"({type(e).__name__}: {one_line(e)[:200]})") from e
        except Exception as e:  # noqa: BLE001 - network errors of any fsspec client (aiohttp, botocore, ...)
            if not remote and not isinstance(e, OSError):
                raise
            if isinstance(e, PermissionError):  # credentials refused, or not allowed to read
                raise KdcacheError(describe_store_error(self.url, e, "opening the cache")) from None
            text = one_line(e)
            raise KdcacheError(f"{self.url}: cannot reach the cache ({type(e).__name__}: {text[:200]})") from e
        attributes = parse_cache_attributes(group.attrs.get(sc.ATTRS_KEY), self.url)
        self._memo.update(settings=attributes.settings, layout=attributes.layout, attributes=attributes)
        self._group, self._pid = group, os.getpid()
        return group

    @property
    def group(self) -> zarr.Group:
        """The read-only zarr group (opened in this process)."""
        return self._open()

    def array(self, name: str) -> zarr.Array:
        """A stored array by name (e.g. 'teacher/logits'); KdcacheError naming the build option if absent."""
        group = self._open()
        arr = self._arrays.get(name)
        if arr is None:
            if not self._has(name):
                option = sc.BUILD_OPTION.get(name)
                hint = f"; rebuild with {option}" if option else ""
                raise KdcacheError(f"{self.url}: the cache has no {name}{hint}")
            node = checked_array(group, name, self.url)
            check_array_metadata(node, self._memo["specs"][name], self.url)
            arr = self._arrays[name] = node
        return arr

    def _has(self, name: str) -> bool:
        if "specs" not in self._memo:
            s = self.settings
            U, head = int(s.get("num_utterances", 0)), bool(s.get("has_head"))
            self._memo["specs"] = sc.array_specs(self.layout, U, with_head=head)
        return name in self._memo["specs"]

    # ----------------------------------------------------------------- metadata
    @property
    def settings(self) -> dict[str, Any]:
        """attrs["kdcache"]: format version, layout, provenance (teacher, features, crop plan, ...)."""
        self._open()
        return self._memo["settings"]

    @property
    def layout(self) -> CacheLayout:
        self._open()
        return self._memo["layout"]

    @property
    def attributes(self) -> CacheAttributes:
        """The checked attributes (typed layout, features, ...)."""
        self._open()
        return self._memo["attributes"]

    def __len__(self) -> int:
        return self.layout.num_rows

    @property
    def speakers(self) -> list[str]:
        """[S] speaker ids in class-index order (the teacher's label space)."""
        if "speakers" not in self._memo:
            self._memo["speakers"] = [str(s) for s in self.array(sc.SPEAKERS)[:]]
        return self._memo["speakers"]

    def utterances(self) -> tuple[list[str], list[str], np.ndarray]:
        """(ids [U], speakers [U], num_samples [U] int64)."""
        if "utterances" not in self._memo:
            ids, spk, lens = self._gather_full([sc.UTT_ID, sc.UTT_SPEAKER, sc.UTT_NUM_SAMPLES])
            ids = [str(u) for u in ids]
            for utt in ids:
                why = unsafe_utterance_id(utt)
                if why:
                    raise IntegrityError(f"{self.url}: utterance id {utt!r} in the cache is {why}; refusing the cache")
            self._memo["utterances"] = (ids, [str(s) for s in spk], np.asarray(lens, np.int64))
        return self._memo["utterances"]

    @property
    def head(self) -> np.ndarray:
        """[S, D] float32 L2-normalised teacher head rows."""
        if "head" not in self._memo:
            self._memo["head"] = np.asarray(self.array(sc.HEAD)[:], dtype=np.float32)
        return self._memo["head"]

    def done(self) -> np.ndarray:
        """[num_shards] bool: progress/done (an unreadable entry counts as not done).

        A cache whose root says ``complete`` (written last by the build's finalize, and by ``push``
        after every done object) has every shard done: the per-shard objects are not read, which would
        cost one request each (2,442 at 10M rows). ``cache verify`` still reads them all."""
        if self.settings.get("complete") is True:
            return np.ones(self.layout.num_shards, dtype=bool)
        try:
            return read_done(self.array(sc.DONE))
        except KdcacheError:
            raise
        except Exception as e:  # noqa: BLE001 - network errors of remote stores
            if not self.is_remote and not isinstance(e, OSError):
                raise  # a bug, not the store: keep its traceback
            raise KdcacheError(f"{self.url}: reading progress/done failed ({type(e).__name__}: {e})") from e

    @property
    def is_complete(self) -> bool:
        return bool(self.done().all())

    def missing_shards(self) -> list[int]:
        return [int(s) for s in np.flatnonzero(~self.done())]

    def done_rows(self) -> np.ndarray:
        """[n] int64: the rows of the finished shards, in order."""
        parts = [np.arange(self.layout.shard_slice(int(s)).start, self.layout.shard_slice(int(s)).stop)
                 for s in np.flatnonzero(self.done())]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    # ----------------------------------------------------------------- reading rows
    def _gather_full(self, names: Sequence[str]) -> list[np.ndarray]:
        arrays = [self.array(n) for n in names]

        async def go() -> list[Any]:
            return await asyncio.gather(*(a.async_array.getitem(slice(None)) for a in arrays))

        return sync(go())

    def _index(self, rows: Rows) -> tuple[list[tuple[int, int]], np.ndarray | None, np.ndarray | None]:
        """(runs to read, sorted unique rows if runs is not worth it, inverse map to the requested order)."""
        n = len(self)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n)
            if step == 1:
                return ([(start, stop)] if stop > start else []), None, None
            rows = np.arange(start, stop, step)
        idx = np.asarray(rows)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"rows must be a slice or a 1-d integer array, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64)
        if idx.size == 0:
            return [], None, None
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"{self.url}: row index out of range [0, {n})")
        idx = np.where(idx < 0, idx + n, idx)
        uniq, inverse = np.unique(idx, return_inverse=True)
        runs = _runs(uniq)
        if len(runs) > max(8, _MAX_RUN_FRACTION * len(uniq)):
            return [], uniq, inverse
        if len(uniq) == len(idx) and np.array_equal(uniq, idx):
            inverse = None
        return runs, None, inverse

    def read(self, names: str | Sequence[str], rows: Rows, dtype: Any = np.float32) -> Any:
        """``read(name, rows)``: the values of one teacher output (``logits``, its batch field
        ``teacher_logits`` or its array ``teacher/logits``; schema.OUTPUTS) decoded to ``dtype``, or of one
        stored row array (``rows/label``) as stored. ``read([names], rows)``: the stored values (stored
        dtype) of row arrays ``names``, all fetched concurrently, as a dict."""
        if isinstance(names, str):
            if not sc.is_output(names):
                return self._read_stored([names], rows)[names]
            spec = sc.output(names)
            if not spec.stored(self.layout):
                self.array(spec.array)  # raises, naming the build option
            stored = self._read_stored(stored_inputs(spec, self.layout), rows)
            return decode(spec, stored, self.layout, dtype, self._factorized)
        return self._read_stored(names, rows)

    def _factorized(self, embedding: np.ndarray) -> np.ndarray:
        scale = (self.settings.get("teacher") or {}).get("scale")
        if not isinstance(scale, (int, float)):
            raise KdcacheError(f"{self.url}: factorized logits need settings['teacher']['scale'], which is missing")
        return factorized_logits(embedding, self.head, float(scale))

    def outputs(self) -> list[sc.OutputSpec]:
        """The teacher outputs this cache holds (its batch fields: ``[o.field for o in outputs()]``)."""
        return [o for o in sc.OUTPUTS if o.stored(self.layout)]

    def _read_stored(self, names: Sequence[str], rows: Rows) -> dict[str, np.ndarray]:
        runs, uniq, inverse = self._index(rows)
        arrays = [self.array(n) for n in names]
        # One (row range, coroutine) per read; one gather for all of them.
        jobs: list[list[tuple[int, int, Any]]] = []
        for a in arrays:
            aa = a.async_array
            if uniq is not None:
                jobs.append([(int(uniq[0]), int(uniq[-1]) + 1, aa.get_orthogonal_selection((uniq,)))])
            else:
                jobs.append([(r0, r1, aa.getitem(slice(r0, r1))) for r0, r1 in runs])

        async def go() -> list[Any]:
            return await asyncio.gather(*(c for job in jobs for _, _, c in job), return_exceptions=True)

        results = iter(sync(go()))
        # Where each sorted row goes in the requested order. For distinct rows (what the samplers
        # give) every part is copied once, straight to its place: concatenating the parts and then
        # reordering them cost two full copies, a quarter of the time of a 256-row logits batch.
        place = None
        if inverse is not None and uniq is None and len(inverse) == sum(r1 - r0 for r0, r1 in runs):
            place = np.empty(len(inverse), dtype=np.int64)
            place[inverse] = np.arange(len(inverse))
        out: dict[str, np.ndarray] = {}
        for name, a, job in zip(names, arrays, jobs):
            parts = []
            for r0, r1, _ in job:
                part = next(results)
                if isinstance(part, BaseException):
                    self._raise_read_error(name, r0, r1, part)
                parts.append(np.asarray(part))
            if not parts:
                data = np.empty((0, *a.shape[1:]), dtype=a.dtype)
            elif place is not None:
                data = np.empty((len(place), *parts[0].shape[1:]), dtype=parts[0].dtype)
                at = 0
                for part in parts:
                    data[place[at:at + len(part)]] = part
                    at += len(part)
            else:
                data = parts[0] if len(parts) == 1 else np.concatenate(parts)
                if inverse is not None:
                    data = data[inverse]
            self._check_written(name, data, rows)
            out[name] = data
        return out

    def _raise_read_error(self, name: str, r0: int, r1: int, err: BaseException) -> None:
        if isinstance(err, KdcacheError):
            raise err
        lay = self.layout
        s0, s1 = lay.shard_of(r0), lay.shard_of(max(r0, r1 - 1))
        first, last = lay.shard_slice(s0).start, lay.shard_slice(s1).stop - 1
        shards = f"shard {s0}" if s0 == s1 else f"shards {s0}-{s1}"
        where = f"{name} {shards} (rows {first}-{last}; reading rows {r0}-{r1 - 1})"
        if isinstance(err, (ValueError, RuntimeError, IndexError, TypeError)):
            raise IntegrityError(
                f"{self.url}: {where} failed to decode (checksum or truncated file): {err}; run `kdcache cache verify`"
            ) from err
        raise KdcacheError(f"{self.url}: reading {where} failed: {type(err).__name__}: {err}") from err

    def _check_written(self, name: str, data: np.ndarray, rows: Rows) -> None:
        """Float rows that read as NaN (the fill value) were never written: not done, or a lost shard file."""
        if data.dtype.kind != "f" or data.size == 0:
            return
        first = data.reshape(len(data), -1)[:, 0]
        bad = np.flatnonzero(np.isnan(first))
        if bad.size:
            if isinstance(rows, slice):
                row = range(*rows.indices(len(self)))[int(bad[0])]
            else:
                row = int(np.asarray(rows)[bad[0]]) % len(self)
            s = self.layout.shard_of(row)
            sl = self.layout.shard_slice(s)
            state = "is not done" if not self.done()[s] else "is marked done but its file is missing or empty"
            raise IntegrityError(
                f"{self.url}: {name} shard {s} (rows {sl.start}-{sl.stop - 1}) {state}: row {row} was never written"
            )

    def logits(self, rows: Rows, dtype: Any = np.float32) -> np.ndarray:
        """[n, S] margin-free teacher logits s*cos in every logits mode (float32; dtype=np.float16 skips
        the conversion of dense logits, e.g. to convert on the GPU instead)."""
        return self.read("logits", rows, dtype)

    def embeddings(self, rows: Rows, dtype: Any = np.float32) -> np.ndarray:
        """[n, D] teacher embeddings (not normalised)."""
        return self.read("embedding", rows, dtype)

    def saliency(self, rows: Rows, dtype: Any = np.float32) -> np.ndarray:
        """[n, n_dur, frames, bins] integrated-gradient maps."""
        return self.read("saliency", rows, dtype)

    def integrated_logits(self, rows: Rows, dtype: Any = np.float32) -> np.ndarray:
        """[n, S] teacher logits on the integrated inputs (IML-KD)."""
        return self.read("integrated_logits", rows, dtype)

    def integrated_embeddings(self, rows: Rows, dtype: Any = np.float32) -> np.ndarray:
        """[n, D] teacher embeddings on the integrated inputs (IML-KD)."""
        return self.read("integrated_embedding", rows, dtype)

    def recipes(self, rows: Rows) -> dict[str, Any]:
        """The replay recipe of each row: 'utterance_id' (list[str]) and int arrays 'utterance', 'start',
        'num_samples' (samples), 'label', 'aug_seed' (int64), 'input_crc' (uint32), 'bad' (uint8, 1 = audio
        unreadable at build time)."""
        names = [name for name, _ in sc.RECIPE_ARRAYS.values()] + [sc.ROW_INPUT_CRC, sc.ROW_BAD]
        d = self._read_stored(names, rows)
        out: dict[str, Any] = {name.split("/", 1)[1]: d[name] for name in names}
        ids = self.utterances()[0]
        out["utterance_id"] = [ids[i] for i in out["utterance"].tolist()]
        return out
