"""Deterministic small caches for the cache tests (also imported by writer subprocesses)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from kdcache.cache import CacheLayout, CacheWriter

SCALE = 32.0


def small_layout(mode: str = "dense", **kw: Any) -> CacheLayout:
    base = dict(num_rows=300, num_classes=37, embed_dim=16, logits_mode=mode, shard_rows=128, chunk_rows=16)
    base.update(kw)
    return CacheLayout(**base)


def make_inputs(layout: CacheLayout, seed: int = 0, num_utts: int = 23) -> dict[str, Any]:
    """Keyword arguments of CacheWriter.create (minus path/layout)."""
    rng = np.random.default_rng(seed)
    S, N = layout.num_classes, layout.num_rows
    speakers = [f"id{i:05d}" for i in range(S - 1)] + ["spk_ÄÖ-日本"]  # one non-ASCII id
    utt_spk_idx = rng.integers(0, S, num_utts)
    utt = rng.integers(0, num_utts, N)
    return dict(
        speakers=speakers,
        utterance_ids=[f"{speakers[s]}/vid{i}/0000{i % 7}.wav" for i, s in enumerate(utt_spk_idx)],
        utterance_speakers=[speakers[s] for s in utt_spk_idx],
        utterance_num_samples=rng.integers(16000, 80000, num_utts),
        rows=dict(
            utterance=utt,
            start=rng.integers(0, 40000, N),
            num_samples=np.full(N, 32240),
            label=utt_spk_idx[utt],
            aug_seed=rng.integers(0, 2**62, N),
        ),
        head=rng.standard_normal((S, layout.embed_dim)),
        attrs={"tool_version": "test", "teacher": {"arch": "toy", "scale": SCALE}, "crop_plan": {"seconds": 2.0}},
    )


def shard_arrays(layout: CacheLayout, s: int, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 teacher outputs of shard s (deterministic in (seed, s))."""
    rng = np.random.default_rng([seed, s])
    sl = layout.shard_slice(s)
    n = sl.stop - sl.start
    out = {
        "logits": (rng.standard_normal((n, layout.num_classes)) * 8).astype(np.float32),
        "embedding": rng.standard_normal((n, layout.embed_dim)).astype(np.float32),
        "input_crc": rng.integers(0, 2**32, n, dtype=np.uint32),
    }
    if layout.saliency_shape is not None:
        out["saliency"] = rng.standard_normal((n, *layout.saliency_shape)).astype(np.float32)
    if layout.integrated:
        out["integrated_logits"] = (rng.standard_normal((n, layout.num_classes)) * 8).astype(np.float32)
        out["integrated_embedding"] = rng.standard_normal((n, layout.embed_dim)).astype(np.float32)
    return out


def all_arrays(layout: CacheLayout, seed: int = 0) -> dict[str, np.ndarray]:
    """shard_arrays of every shard, concatenated: the [N, ...] float32 ground truth."""
    parts = [shard_arrays(layout, s, seed) for s in range(layout.num_shards)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def build(
    path: Path, layout: CacheLayout, seed: int = 0, shards: list[int] | None = None, finalize: bool = True
) -> CacheWriter:
    writer = CacheWriter.create(path, layout, **make_inputs(layout, seed))
    for s in range(layout.num_shards) if shards is None else shards:
        writer.write_shard(s, shard_arrays(layout, s, seed))
    if finalize:
        writer.finalize()
    return writer


def set_done(path: Path, shards: Any, done: bool) -> None:
    """Set progress/done[shards] of a local cache, and its root's ``complete`` as a build would leave it
    (complete only when every shard is done): a cache killed mid-build, or finished after all."""
    import zarr

    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    group["progress/done"][shards] = done
    complete = bool(np.asarray(group["progress/done"][:], dtype=bool).all())
    group.attrs["kdcache"] = {**group.attrs["kdcache"], "complete": complete}
    zarr.consolidate_metadata(str(path))


if __name__ == "__main__":  # python -m tests.cache.helpers PATH 1,3,...: write these shards
    path, shards = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
    w = CacheWriter.open_for_resume(path)
    for s in shards:
        w.write_shard(s, shard_arrays(w.layout, s))


def rigged_top1_cache(path: Path, shards: list[int]) -> None:
    """Rows 0-9 have no label; the teacher is right on the crops unless row % 4 == 0, and right on the
    integrated inputs only where row % 10 == 0 (set by a logit of +-100 on the label)."""
    lay = small_layout(saliency_shape=(1, 4, 3), integrated=True)
    inputs = make_inputs(lay)
    labels = inputs["rows"]["label"].copy()
    labels[:10] = -1
    inputs["rows"]["label"] = labels
    writer = CacheWriter.create(path, lay, **inputs)
    for s in shards:
        arrays = shard_arrays(lay, s)
        sl = lay.shard_slice(s)
        for k, row in enumerate(range(sl.start, sl.stop)):
            if labels[row] < 0:
                continue
            arrays["logits"][k, labels[row]] = 100.0 if row % 4 else -100.0
            arrays["integrated_logits"][k, labels[row]] = 100.0 if row % 10 == 0 else -100.0
        writer.write_shard(s, arrays)
    if shards == list(range(lay.num_shards)):
        writer.finalize()
