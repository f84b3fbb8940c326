"""How each teacher output is stored and read back (``OutputSpec.codec`` in schema.py).

- ``logits``: ``--logits dense`` float16; ``uint8`` per-row affine (q * scale + offset, error <= scale/2);
  ``factorized`` nothing at all: ``s * normalize(embedding) @ head^T`` from the stored embedding;
- ``unit_norm``: a float16 unit vector plus its float32 norm (raw embeddings overflow float16);
- ``float16``: float16.

``encode`` turns one shard's float values into the stored arrays; ``decode`` turns stored arrays back
into float values. Writer and reader call only these two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from kdcache.errors import KdcacheError

from .schema import EMBEDDING, LOGITS_OFFSET, LOGITS_SCALE, OUTPUTS, CacheLayout, OutputSpec

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


def quantize_uint8(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row affine uint8: [n, S] float -> (q uint8 [n, S], scale [n] f32, offset [n] f32).

    x ~= q * scale + offset with offset = row min, scale = (row max - row min) / 255; error <= scale / 2.
    """
    x = np.asarray(logits, dtype=np.float32)
    lo = x.min(axis=1)
    hi = x.max(axis=1)
    scale = ((hi - lo) / 255.0).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    q = np.rint((x - lo[:, None]) / safe[:, None])
    return np.clip(q, 0, 255).astype(np.uint8), scale, lo.astype(np.float32)


def encode(spec: OutputSpec, value: np.ndarray, layout: CacheLayout, where: str) -> dict[str, np.ndarray]:
    """Stored arrays (name -> values) of ``value [n, ...]`` (float); ``where`` starts the error line."""
    if spec.codec == "logits" and layout.logits_mode == "factorized":
        return {}
    if not np.all(np.isfinite(value)):
        raise KdcacheError(f"{where} has non-finite values")
    if spec.codec == "logits" and layout.logits_mode == "uint8":
        q, scale, offset = quantize_uint8(value)
        return {spec.array: q, LOGITS_SCALE: scale, LOGITS_OFFSET: offset}
    out: dict[str, np.ndarray] = {}
    if spec.codec == "unit_norm":
        norm = np.linalg.norm(value.astype(np.float64), axis=1)
        out[spec.array + "_norm"] = norm.astype(np.float32)
        value = value / np.maximum(norm, 1e-30)[:, None]
    half = value.astype(np.float16)
    if not np.all(np.isfinite(half)):
        raise KdcacheError(f"{where} overflows float16")
    return {spec.array: half, **out}


def stored_inputs(spec: OutputSpec, layout: CacheLayout) -> list[str]:
    """The stored arrays ``decode`` needs for ``spec`` (factorized logits read the embedding)."""
    if spec.codec == "logits" and layout.logits_mode == "factorized":
        return [name for name, *_ in _EMBEDDING.arrays(layout)]
    return [name for name, *_ in spec.arrays(layout)]


def decode(spec: OutputSpec, stored: Mapping[str, np.ndarray], layout: CacheLayout, dtype: Any,
           factorized: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Float values of ``spec`` from its stored arrays (``stored_inputs``). ``factorized(embedding)``
    gives the logits of a ``--logits factorized`` cache (it knows the head and the scale)."""
    if spec.codec == "logits" and layout.logits_mode == "uint8":
        out = stored[spec.array] * stored[LOGITS_SCALE][:, None] + stored[LOGITS_OFFSET][:, None]  # float32
        return out.astype(dtype, copy=False)
    if spec.codec == "logits" and layout.logits_mode == "factorized":
        if factorized is None:
            raise ValueError("factorized logits need the head")
        return factorized(decode(_EMBEDDING, stored, layout, np.float32)).astype(dtype, copy=False)
    if spec.codec == "unit_norm":
        unit = as_dtype(stored[spec.array], np.float32)
        return (unit * stored[spec.array + "_norm"][:, None]).astype(dtype, copy=False)
    return as_dtype(stored[spec.array], dtype)


_EMBEDDING = next(o for o in OUTPUTS if o.array == EMBEDDING)
