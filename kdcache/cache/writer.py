"""Create, resume and fill a teacher cache, one shard at a time.

A shard (``layout.shard_rows`` rows) is the unit of work: ``write_shard`` writes every per-row array of
the shard with one write per array, then sets ``progress/done[s]``. Rank r of W writes every W-th shard of
those not yet done, starting at the r-th, so concurrent writers never share a chunk or shard file (zarr has
no locks) and a resumed build gives each rank an equal share of what is left. Only one process
should call ``create`` and ``finalize`` (rank 0, with a barrier around them); the others call
``open_for_resume``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import zarr

from kdcache.errors import KdcacheError

from . import schema as sc
from .attributes import parse_cache_attributes
from .codecs import encode, quantize_uint8  # noqa: F401 - quantize_uint8 is public here too
from .lock import build_lock  # noqa: F401 - the builder's import
from .objectstore import CacheLocation
from .schema import CacheLayout
from .store import quiet_hierarchy_walk
from .validation import read_done, unsafe_utterance_id

# Settings that may change between a build and its resume.
VOLATILE_KEYS = frozenset({"created", "complete", "initialized"})
# Keys the writer sets itself; callers' attrs may not use them (they may pass "created").
_RESERVED = frozenset(
    {"format_version", "layout", "num_utterances", "has_head", "head_sha256", "recipe_sha256", "complete", "initialized"}
)


def read_settings(path: str | Path) -> dict[str, Any] | None:
    """attrs["kdcache"] of a local cache, or None when path is not a kdcache cache."""
    meta = Path(path) / "zarr.json"
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("node_type") != "group":
        return None
    settings = doc.get("attributes", {}).get(sc.ATTRS_KEY)
    return settings if isinstance(settings, dict) else None


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


# Settings derived from the user's options: compared last, so a refusal names the option itself
# (crop_plan.per_utt) rather than what follows from it (layout.num_rows).
DERIVED_KEYS = ("format_version", "layout", "num_utterances", "has_head", "recipe_sha256", "head_sha256")


def first_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """The first setting (dotted key) whose value differs, ignoring VOLATILE_KEYS; None if equal.

    User-facing settings are compared before the derived ones (DERIVED_KEYS)."""
    a = {k: v for k, v in _flatten(old).items() if k not in VOLATILE_KEYS}
    b = {k: v for k, v in _flatten(new).items() if k not in VOLATILE_KEYS}
    keys = [*b, *(k for k in a if k not in b)]
    keys.sort(key=lambda k: k.split(".", 1)[0] in DERIVED_KEYS)
    for key in keys:
        if key not in a:
            return f"{key}: not in the cache, requested {b[key]!r}"
        if key not in b:
            return f"{key}: cache has {a[key]!r}, not requested"
        if a[key] != b[key]:
            return f"{key}: cache has {a[key]!r}, requested {b[key]!r}"
    return None


def _json_roundtrip(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable: {e}") from None


def _recipe_sha256(speakers: Sequence[str], utt: Sequence[Sequence[Any]], rows: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for strings in (speakers, utt[0], utt[1]):
        h.update("\0".join(strings).encode("utf-8"))
        h.update(b"\1")
    h.update(np.ascontiguousarray(utt[2], dtype="<i8").tobytes())
    for key, (_, dtype) in sc.RECIPE_ARRAYS.items():
        h.update(np.ascontiguousarray(rows[key], dtype=np.dtype(dtype).newbyteorder("<")).tobytes())
    return h.hexdigest()


def _strings(values: Sequence[str]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


def rank_share(shards: list[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s share of ``shards`` (in order): the rank-th and every world_size-th after it."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return shards[rank::world_size]


class CacheWriter:
    """Writes one kdcache (a local zarr v3 group). Use ``create`` or ``open_for_resume``."""

    def __init__(self, path: Path | str, group: zarr.Group, settings: dict[str, Any]) -> None:
        self.path = path
        self._group = group
        self.settings = settings
        self.layout = CacheLayout.from_dict(settings["layout"])
        self._arrays: dict[str, zarr.Array] = {}

    # ----------------------------------------------------------------- creation / resume
    @classmethod
    def create(
        cls,
        path: str | Path,
        layout: CacheLayout,
        *,
        speakers: Sequence[str],
        utterance_ids: Sequence[str],
        utterance_speakers: Sequence[str],
        utterance_num_samples: Sequence[int] | np.ndarray,
        rows: Mapping[str, np.ndarray],
        head: np.ndarray | None,
        attrs: Mapping[str, Any],
        overwrite: bool = False,
    ) -> CacheWriter:
        """Create the cache at path (or reopen it for resume when it holds the same settings).

        speakers: [S] class index -> speaker id; utterances: [U] ids, speakers, lengths (samples);
        rows: the recipe arrays 'utterance', 'start', 'num_samples', 'label', 'aug_seed', each [N];
        head: [S, D] teacher head weights (rows are L2-normalised here), required for 'factorized';
        attrs: JSON provenance (tool version, teacher incl. 'scale', features, crop plan, ...).
        """
        location = CacheLocation(path)
        path = location.local or location.url
        S, N = layout.num_classes, layout.num_rows
        speakers = [str(s) for s in speakers]
        utt_ids = [str(u) for u in utterance_ids]
        utt_spk = [str(u) for u in utterance_speakers]
        utt_len = np.asarray(utterance_num_samples, dtype=np.int64)
        U = len(utt_ids)
        if len(speakers) != S:
            raise ValueError(f"{len(speakers)} speakers given, layout.num_classes is {S}")
        if len(set(speakers)) != S:
            raise ValueError("speaker ids must be unique")
        for utt in utt_ids:
            why = unsafe_utterance_id(utt)
            if why:
                raise ValueError(f"utterance id {utt!r} is {why}")
        if not (len(utt_spk) == U == len(utt_len)) or U == 0:
            raise ValueError(f"utterance arrays differ in length or are empty: {U}, {len(utt_spk)}, {len(utt_len)}")
        recipe = cls._check_rows(rows, N, U, S)
        attrs = _json_roundtrip(dict(attrs), "attrs")
        clash = _RESERVED & set(attrs)
        if clash:
            raise ValueError(f"attrs may not set reserved keys {sorted(clash)}")
        if head is not None:
            head = np.asarray(head, dtype=np.float64)
            if head.shape != (S, layout.embed_dim):
                raise ValueError(f"head has shape {head.shape}, expected {(S, layout.embed_dim)}")
            norms = np.linalg.norm(head, axis=1, keepdims=True)
            if not np.all(np.isfinite(head)) or np.any(norms == 0):
                raise ValueError("head has non-finite values or zero rows")
            head = (head / norms).astype(np.float32)
        if layout.logits_mode == "factorized":
            if head is None:
                raise KdcacheError(f"{path}: --logits factorized needs the teacher head; this teacher has none")
            scale = attrs.get("teacher", {}).get("scale") if isinstance(attrs.get("teacher"), dict) else None
            if not isinstance(scale, (int, float)):
                raise ValueError("factorized logits need attrs['teacher']['scale'] (the head's s)")

        settings: dict[str, Any] = {
            "format_version": sc.FORMAT_VERSION,
            "layout": layout.to_dict(),
            "num_utterances": U,
            "has_head": head is not None,
            "head_sha256": None if head is None else hashlib.sha256(head.astype("<f4").tobytes()).hexdigest(),
            "recipe_sha256": _recipe_sha256(speakers, (utt_ids, utt_spk, utt_len), recipe),
            **attrs,
        }
        settings.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

        if location.exists():
            existing = location.read_settings()
            if existing is None:
                if not location.is_empty():
                    raise KdcacheError(f"{path}: exists and is not a kdcache cache; choose another output path")
            elif overwrite or not existing.get("initialized", False):
                location.remove()  # our own cache (or one whose creation was interrupted)
            else:
                diff = first_difference(existing, settings)
                if diff is not None:
                    raise KdcacheError(
                        f"{path}: existing cache has different settings ({diff}); "
                        "pass --overwrite to rebuild it or choose another output path"
                    )
                return cls.open_for_resume(path)

        group = zarr.open_group(location.store(), mode="w")
        # Mark ours first, so an interrupted creation is recognised (and redone) on the next run.
        group.attrs[sc.ATTRS_KEY] = {**settings, "initialized": False, "complete": False}
        for spec in sc.array_specs(layout, U, with_head=head is not None).values():
            group.create_array(name=spec.name, **spec.create_kwargs())
        writer = cls(path, group, settings)
        writer._array(sc.SPEAKERS)[:] = _strings(speakers)
        writer._array(sc.UTT_ID)[:] = _strings(utt_ids)
        writer._array(sc.UTT_SPEAKER)[:] = _strings(utt_spk)
        writer._array(sc.UTT_NUM_SAMPLES)[:] = utt_len
        if head is not None:
            writer._array(sc.HEAD)[:] = head
        for key, (name, _) in sc.RECIPE_ARRAYS.items():
            writer._array(name)[:] = recipe[key]
        writer._publish(initialized=True, complete=False)
        return writer

    @staticmethod
    def _check_rows(rows: Mapping[str, np.ndarray], N: int, U: int, S: int) -> dict[str, np.ndarray]:
        missing = set(sc.RECIPE_ARRAYS) - set(rows)
        extra = set(rows) - set(sc.RECIPE_ARRAYS)
        if missing or extra:
            raise ValueError(
                f"rows needs exactly {sorted(sc.RECIPE_ARRAYS)}; missing {sorted(missing)}, extra {sorted(extra)}"
            )
        out = {}
        for key, (_, dtype) in sc.RECIPE_ARRAYS.items():
            a = np.asarray(rows[key])
            if a.shape != (N,):
                raise ValueError(f"rows[{key!r}] has shape {a.shape}, expected ({N},)")
            if not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"rows[{key!r}] must be integers, got {a.dtype}")
            out[key] = a.astype(dtype)
        if out["utterance"].min() < 0 or out["utterance"].max() >= U:
            raise ValueError(f"rows['utterance'] must index [0, {U})")
        if out["label"].min() < -1 or out["label"].max() >= S:
            raise ValueError(f"rows['label'] must index the {S} speakers (or be -1: unknown to the teacher)")
        if out["start"].min() < 0 or out["num_samples"].min() <= 0:
            raise ValueError("rows['start'] must be >= 0 and rows['num_samples'] > 0")
        return out

    @classmethod
    def open_for_resume(cls, path: str | Path) -> CacheWriter:
        """Open an existing cache to write its pending shards."""
        location = CacheLocation(path)
        path = location.local or location.url
        settings = location.read_settings()
        if settings is None:
            raise KdcacheError(f"{path}: not a kdcache cache")
        version = settings.get("format_version")
        if version != sc.FORMAT_VERSION:
            raise KdcacheError(
                f"{path}: cache format version {version}, this kdcache writes version {sc.FORMAT_VERSION}; rebuild it"
            )
        if not settings.get("initialized", False):
            raise KdcacheError(f"{path}: the cache's creation was interrupted; create it again")
        parse_cache_attributes(settings, str(path))  # every field typed before the writer relies on it
        group = zarr.open_group(location.store(), mode="r+", use_consolidated=False)
        return cls(path, group, settings)

    # ----------------------------------------------------------------- progress
    def _array(self, name: str) -> zarr.Array:
        arr = self._arrays.get(name)
        if arr is None:
            node = self._group[name]
            assert isinstance(node, zarr.Array)
            # Write every chunk even when it equals the fill value: a missing shard file then means damage.
            arr = self._arrays[name] = node.with_config({"write_empty_chunks": True})
        return arr

    def done_shards(self) -> set[int]:
        """Shards whose every array is written. An unreadable progress entry (e.g. left empty by a full
        disk) counts as not done: that shard is written again."""
        return {int(s) for s in np.flatnonzero(read_done(self._array(sc.DONE)))}

    def pending_shards(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """This rank's share of the shards not yet done: of those, in order, the rank-th and every
        world_size-th after it. Every rank must read this before any rank writes (a barrier between):
        the shares are disjoint only when all ranks see the same done flags."""
        done = self.done_shards()
        return rank_share([s for s in range(self.layout.num_shards) if s not in done], rank, world_size)

    # ----------------------------------------------------------------- writing
    def write_shard(self, s: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write shard s: arrays maps 'logits' [n, S], 'embedding' [n, D], 'input_crc' [n] (uint32), and,
        when the layout has them, 'saliency' [n, n_dur, F, bins], 'integrated_logits' [n, S],
        'integrated_embedding' [n, D] (full names such as 'teacher/logits' also work); n = rows of shard s.

        Float inputs may be float32: they are stored as float16 (logits per mode: float16, uint8 affine,
        or not at all for 'factorized'). progress/done[s] is set last.
        """
        lay = self.layout
        rows = lay.shard_slice(s)
        n = rows.stop - rows.start
        by_name = {v: k for k, v in sc.SHARD_INPUTS.items()}
        given = {by_name.get(k, k): v for k, v in arrays.items()}
        unknown = set(given) - set(sc.SHARD_INPUTS)
        if unknown:
            raise ValueError(f"write_shard: unknown arrays {sorted(unknown)}; expected {sorted(sc.SHARD_INPUTS)}")
        specs = sc.row_array_specs(lay)
        expected = {k for k, name in sc.SHARD_INPUTS.items() if name in specs}
        given.setdefault("bad", np.zeros(n, dtype=np.uint8))
        missing = expected - set(given)
        if missing:
            raise ValueError(f"write_shard({s}): missing arrays {sorted(missing)}")
        if lay.logits_mode == "factorized":
            given.pop("logits", None)
        extra = set(given) - expected
        if extra:
            raise ValueError(f"write_shard({s}): this layout stores no {sorted(extra)}")

        out: dict[str, np.ndarray] = {}
        for key, value in given.items():
            name = sc.SHARD_INPUTS[key]
            tail = specs[name].shape[1:]
            value = np.asarray(value)
            if value.shape != (n, *tail):
                raise ValueError(f"write_shard({s}): {key} has shape {value.shape}, expected {(n, *tail)}")
            if key == "input_crc":
                out[name] = value.astype(np.uint32)
            elif key == "bad":
                out[name] = value.astype(np.uint8)
            else:
                out |= encode(sc.output(key), value, lay, f"{self.path}: teacher {key} for shard {s}")

        if self.settings.get("complete"):
            self._publish(complete=False)  # readers trust `complete` instead of the flags: withdraw it first
        done = self._array(sc.DONE)
        if done[s]:
            done[s] = False  # a rewrite in progress must not look done if it is interrupted
        for name, value in out.items():
            self._array(name)[rows] = value
        done[s] = True

    # ----------------------------------------------------------------- finishing
    def _set_attrs(self, **updates: Any) -> None:
        self.settings = {**self.settings, **updates}
        self._group.attrs[sc.ATTRS_KEY] = self.settings

    def _consolidate(self) -> None:
        with quiet_hierarchy_walk():
            zarr.consolidate_metadata(self._group.store)

    def finalize(self) -> bool:
        """Record completeness and consolidate metadata (needed to read over HTTP). Returns complete."""
        complete = len(self.done_shards()) == self.layout.num_shards
        self._publish(complete=complete)
        return complete

    def _publish(self, **updates: Any) -> None:
        """Consolidate the members' metadata, then write the settings and the consolidated metadata in one
        write of the root zarr.json: a reader (over s3:// or http:// it needs the consolidated metadata)
        never finds the root without it, nor new settings before the metadata they describe."""
        self.settings = {**self.settings, **updates}
        with quiet_hierarchy_walk():
            consolidated = zarr.consolidate_metadata(self._group.store)
        consolidated.attrs[sc.ATTRS_KEY] = self.settings
