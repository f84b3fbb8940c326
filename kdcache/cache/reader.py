"""Read-only access to a teacher cache, local or remote (file://, http(s)://, s3://).

A batch of a few whole 64-row blocks is read as one slice per contiguous run, all runs of all requested
arrays concurrently through zarr's async API (one event-loop round trip): tens of thousands of rows/s,
against about a thousand for fully random rows (each row decodes its whole inner chunk).

The zarr handle is opened lazily, once per process: pickling keeps only the URL, so DataLoader workers
(fork or spawn) each open their own store (an HTTP session from the parent does not survive a fork).
A forked child must also keep its hands off the parent's event loops; see _detach_inherited_event_loops.
"""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import warnings
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlparse

import fsspec.asyn
import numpy as np
import zarr
import zarr.core.sync
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from kdcache.errors import IntegrityError, KdcacheError

from . import schema as sc
from .attributes import CacheAttributes, check_array_metadata, parse_cache_attributes
from .schema import CacheLayout

Rows = slice | Sequence[int] | np.ndarray

# Use one slice per run when the rows form at most this many runs per row (else orthogonal indexing).
_MAX_RUN_FRACTION = 0.25

# The codecs kdcache writes (schema.py). An array whose metadata names any other codec is refused before
# a byte of it is decoded: a cache from elsewhere must not pick a decoder (zarr's codec registry can hold
# third-party codecs, e.g. ones that unpickle).
ALLOWED_CODECS = frozenset({"bytes", "crc32c", "sharding_indexed", "zstd", "vlen-utf8"})


_PARENT_EVENT_LOOPS: list[Any] = []


def _remember_event_loops() -> None:
    """Before a fork (in the parent): note zarr's and fsspec's I/O event loops, which the child inherits."""
    _PARENT_EVENT_LOOPS[:] = [lp for lp in (zarr.core.sync.loop[0], fsspec.asyn.loop[0]) if lp is not None]


def _detach_inherited_event_loops() -> None:
    """After a fork (in the child): give the inherited loops a selector of the child's own.

    The child shares the parent's epoll instance. When it drops the HTTP sessions it inherited, fsspec's
    finalizer closes their sockets, and each close unregisters the socket from that shared instance: the
    parent's loop then never hears from its pooled connections again and its next remote read hangs until
    aiohttp's 5-minute timeout (seen after a DataLoader worker epoch over HTTP). The child never runs these
    loops (zarr and fsspec start new ones after a fork), so a private empty selector is all they need.
    """
    for lp in _PARENT_EVENT_LOOPS:
        if isinstance(getattr(lp, "_selector", None), selectors.BaseSelector):
            lp._selector = selectors.DefaultSelector()
    _PARENT_EVENT_LOOPS.clear()


def _forget_event_loops() -> None:
    _PARENT_EVENT_LOOPS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_remember_event_loops, after_in_parent=_forget_event_loops,
                        after_in_child=_detach_inherited_event_loops)


def _codec_names(codecs: Any) -> list[str]:
    """Names of a codec pipeline (metadata dicts or codec objects), sharding's inner pipelines included."""
    names: list[str] = []
    for codec in codecs or ():
        doc = codec if isinstance(codec, dict) else codec.to_dict()
        names.append(str(doc.get("name")))
        config = doc.get("configuration") or {}
        for key in ("codecs", "index_codecs"):
            names.extend(_codec_names(config.get(key)))
    return names


def unsafe_utterance_id(utt_id: str) -> str | None:
    """Why a cached utterance id is not a safe path relative to the corpus root (None when it is)."""
    if not utt_id or "\0" in utt_id:
        return "empty or holds a NUL byte"
    if utt_id.startswith("/") or re.match(r"^[A-Za-z]:", utt_id):
        return "absolute (must be relative to the corpus root)"
    if "\\" in utt_id:
        return "holds a backslash (ids use '/')"
    if ".." in utt_id.split("/"):
        return "holds '..' (would escape the corpus root)"
    return None


def read_done(done: zarr.Array) -> np.ndarray:
    """progress/done as [num_shards] bool. An entry that does not decode (a full disk can leave its
    one-entry chunk file empty) counts as not done: the build writes that shard again."""
    try:
        return np.asarray(done[:], dtype=bool)
    except (ValueError, RuntimeError, IndexError, TypeError):
        pass
    out = np.zeros(done.shape[0], dtype=bool)
    for s in range(done.shape[0]):
        try:
            out[s] = bool(done[s])
        except (ValueError, RuntimeError, IndexError, TypeError):
            continue
    return out


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _local_path(url: str) -> str:
    if url.startswith("file://"):
        return unquote(urlparse(url).path)
    return url


def _read_bytes(path: Path, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return path.read_bytes()
    with path.open("rb") as f:
        if isinstance(byte_range, RangeByteRequest):
            f.seek(byte_range.start)
            return f.read(byte_range.end - byte_range.start)
        if isinstance(byte_range, OffsetByteRequest):
            f.seek(byte_range.offset)
        elif isinstance(byte_range, SuffixByteRequest):
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - byte_range.suffix))
        else:
            raise TypeError(f"unexpected byte range {byte_range!r}")
        return f.read()


class _InlineLocalStore(LocalStore):
    """A read-only LocalStore that reads files inline on zarr's event loop. LocalStore hands every read to
    a thread; for a page-cached chunk that hop costs more than the read itself (measured ~1.3x more rows/s
    for 64-row blocks on 2 cores). Remote stores keep their truly concurrent async reads."""

    async def get(
        self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        if not self._is_open:
            await self._open()
        try:
            return prototype.buffer.from_bytes(_read_bytes(self.root / key, byte_range))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None


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
        return _is_remote(self.url)

    def _open(self) -> zarr.Group:
        if self._group is not None and self._pid == os.getpid():
            return self._group
        self._reset()
        remote = self.is_remote
        try:
            if remote:
                store: Any = FsspecStore.from_url(self.url, read_only=True, storage_options=self.storage_options)
            else:
                local = Path(_local_path(self.url))
                if not local.exists():
                    raise KdcacheError(f"{self.url}: cache not found")
                if not (local / "zarr.json").is_file():
                    raise KdcacheError(f"{self.url}: not a kdcache cache (no zarr.json)")
                store = _InlineLocalStore(local, read_only=True)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
                group = zarr.open_group(store, mode="r", use_consolidated=True if remote else None)
        except KdcacheError:
            raise
        except ImportError as e:  # e.g. s3:// without s3fs
            raise KdcacheError(f"{self.url}: {e} (pip install 'kdcache[s3]' for s3://)") from None
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as e:
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
                               f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
        except Exception as e:  # noqa: BLE001 - network errors of any fsspec client (aiohttp, botocore, ...)
            if not remote and not isinstance(e, OSError):
                raise
            text = " ".join(str(e).split()) or type(e).__name__
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
            try:
                node = group[name]
            except KeyError:
                raise IntegrityError(f"{self.url}: array {name} is missing") from None
            except (ValueError, TypeError) as bad:  # zarr's parse of a malformed array zarr.json
                raise IntegrityError(f"{self.url}: array {name} has malformed metadata ({type(bad).__name__}: "
                                     f"{' '.join(str(bad).split())[:200]})") from bad
            if not isinstance(node, zarr.Array):
                raise IntegrityError(f"{self.url}: {name} is a group, expected an array")
            foreign = sorted(set(_codec_names(node.metadata.to_dict().get("codecs"))) - ALLOWED_CODECS)
            if foreign:
                raise IntegrityError(
                    f"{self.url}: array {name} declares codec(s) {', '.join(foreign)}, which kdcache never writes; "
                    "refusing to decode it (only " + ", ".join(sorted(ALLOWED_CODECS)) + " are read)"
                )
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
        """[num_shards] bool: progress/done (an unreadable entry counts as not done)."""
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

    def read(self, names: Sequence[str], rows: Rows) -> dict[str, np.ndarray]:
        """The stored values (stored dtype) of row arrays `names` at `rows`, all fetched concurrently."""
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

    def _float(self, name: str, rows: Rows, dtype: Any) -> np.ndarray:
        return as_dtype(self.read([name], rows)[name], dtype)

    def logits(self, rows: Rows, dtype: Any = np.float32) -> np.ndarray:
        """[n, S] margin-free teacher logits s*cos in every logits mode (float32; dtype=np.float16 skips
        the conversion of dense logits, e.g. to convert on the GPU instead)."""
        mode = self.layout.logits_mode
        if mode == "dense":
            return self._float(sc.LOGITS, rows, dtype)
        if mode == "uint8":
            d = self.read([sc.LOGITS, sc.LOGITS_SCALE, sc.LOGITS_OFFSET], rows)
            out = d[sc.LOGITS] * d[sc.LOGITS_SCALE][:, None] + d[sc.LOGITS_OFFSET][:, None]  # float32
            return out.astype(dtype, copy=False)
        scale = (self.settings.get("teacher") or {}).get("scale")
        if not isinstance(scale, (int, float)):
            raise KdcacheError(f"{self.url}: factorized logits need settings['teacher']['scale'], which is missing")
        emb = self.embeddings(rows)
        return factorized_logits(emb, self.head, float(scale)).astype(dtype, copy=False)

    def embeddings(self, rows: Rows, dtype: Any = np.float32) -> np.ndarray:
        """[n, D] teacher embeddings (not normalised)."""
        return self._embedding(sc.EMBEDDING, rows, dtype)

    def saliency(self, rows: Rows, dtype: Any = np.float32) -> np.ndarray:
        """[n, n_dur, frames, bins] integrated-gradient maps."""
        return self._float(sc.SALIENCY, rows, dtype)

    def integrated_logits(self, rows: Rows, dtype: Any = np.float32) -> np.ndarray:
        """[n, S] teacher logits on the integrated inputs (IML-KD)."""
        return self._float(sc.INTEGRATED_LOGITS, rows, dtype)

    def integrated_embeddings(self, rows: Rows, dtype: Any = np.float32) -> np.ndarray:
        """[n, D] teacher embeddings on the integrated inputs (IML-KD)."""
        return self._embedding(sc.INTEGRATED_EMBEDDING, rows, dtype)

    def _embedding(self, name: str, rows: Rows, dtype: Any) -> np.ndarray:
        """Stored unit vector (float16) times stored norm (float32)."""
        d = self.read([name, name + "_norm"], rows)
        return (as_dtype(d[name], np.float32) * d[name + "_norm"][:, None]).astype(dtype, copy=False)

    def recipes(self, rows: Rows) -> dict[str, Any]:
        """The replay recipe of each row: 'utterance_id' (list[str]) and int arrays 'utterance', 'start',
        'num_samples' (samples), 'label', 'aug_seed' (int64), 'input_crc' (uint32), 'bad' (uint8, 1 = audio
        unreadable at build time)."""
        names = [name for name, _ in sc.RECIPE_ARRAYS.values()] + [sc.ROW_INPUT_CRC, sc.ROW_BAD]
        d = self.read(names, rows)
        out: dict[str, Any] = {name.split("/", 1)[1]: d[name] for name in names}
        ids = self.utterances()[0]
        out["utterance_id"] = [ids[i] for i in out["utterance"].tolist()]
        return out


# float16 -> float32 conversions of at least this many values go through torch.
_TORCH_CAST_MIN = 1 << 16


def as_dtype(values: np.ndarray, dtype: Any) -> np.ndarray:
    """``values.astype(dtype, copy=False)``, with float16 -> float32 done by torch when it is installed.

    numpy 2.4 converts float16 without SIMD: 3.6 ms for a 256 x 5994 batch on the benchmark CPU, against
    0.4 ms in torch (F16C/AVX-512), which alone capped float32 logits at ~35k rows/s. The conversion is
    exact either way (every float16 is a float32). torch is imported lazily, so ``kdcache.cache`` stays
    importable without it; in a DataLoader worker it runs on the worker's one thread.
    """
    dtype = np.dtype(dtype)
    if values.dtype == np.float16 and dtype == np.float32 and values.size >= _TORCH_CAST_MIN:
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency of kdcache
            return values.astype(dtype)
        return torch.from_numpy(np.ascontiguousarray(values)).to(torch.float32).numpy()
    return values.astype(dtype, copy=False)


def factorized_logits(embedding: np.ndarray, head: np.ndarray, scale: float) -> np.ndarray:
    """scale * normalize(embedding) @ head^T: [n, D] x [S, D] -> [n, S] float32."""
    e = np.asarray(embedding, dtype=np.float32)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), np.float32(1e-12))
    return (np.float32(scale) * (e @ np.asarray(head, dtype=np.float32).T)).astype(np.float32)
