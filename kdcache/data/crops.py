"""Crop plans: which samples of which utterance each cache row holds, replayable from a seed.

Every (utterance u, crop k) pair gets its start and augmentation seed from
``np.random.SeedSequence([seed, u, k]).generate_state(2, np.uint64)`` (word 0 -> start, word 1 ->
augmentation seed). That depends only on (seed, u, k), not on the corpus size or the row order, and
is the same on every machine. It is computed here with a vectorised copy of SeedSequence's hash
(checked against numpy in the tests): 11 us per pair through numpy objects would take minutes for
VoxCeleb2 x 10 crops. The pairs are then placed in one seeded permutation, so any contiguous run of
rows is a random sample of the corpus.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdcache.errors import KdcacheError

_PERMUTATION_TAG = 0x726F7773  # "rows": keeps the permutation stream apart from the per-pair ones


@dataclass(frozen=True)
class CropPlan:
    """``per_utt`` crops of ``seconds`` from every utterance, drawn from ``seed``."""

    seconds: float = 2.0
    per_utt: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.seconds > 0 or self.per_utt < 1 or self.seed < 0:
            raise KdcacheError(f"crop plan: need seconds > 0, per_utt >= 1, seed >= 0; got "
                               f"{self.to_dict()}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CropPlan:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise KdcacheError(f"crop plan: unknown setting(s) {unknown}")
        return cls(**d)


@dataclass
class RowPlan:
    """One entry per cache row, all [N] int64 except ``aug_seed`` ([N] uint64, < 2**63)."""

    utterance: np.ndarray
    start: np.ndarray
    num_samples: np.ndarray
    aug_seed: np.ndarray

    def __len__(self) -> int:
        return len(self.utterance)


def plan_rows(utterance_lengths: Sequence[int] | np.ndarray, plan: CropPlan,
              crop_samples: int) -> RowPlan:
    """Rows for ``plan`` over utterances of the given lengths (samples); ``crop_samples`` per crop.

    Starts are uniform in ``[0, length - crop_samples]``; an utterance shorter than the crop starts
    at 0 (it is tiled when read).
    """
    lengths = np.asarray(utterance_lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths <= 0).any():
        raise KdcacheError("crop plan: utterance lengths must be a list of positive sample counts")
    if crop_samples <= 0:
        raise KdcacheError(f"crop plan: crop_samples must be positive, got {crop_samples}")
    if len(lengths) >= 2**32 or plan.per_utt >= 2**32:
        raise KdcacheError("crop plan: too many utterances or crops per utterance")
    k_per = plan.per_utt
    n = len(lengths) * k_per
    order = np.random.default_rng(np.random.SeedSequence([plan.seed, _PERMUTATION_TAG])).permutation(n)
    utt = order // k_per
    k = order % k_per
    words = seed_sequence_state([plan.seed], utt, k, n_words=2)
    span = np.maximum(lengths[utt] - crop_samples, 0).astype(np.uint64) + np.uint64(1)
    start = (words[0] % span).astype(np.int64)
    return RowPlan(utterance=utt.astype(np.int64), start=start,
                   num_samples=np.full(n, crop_samples, dtype=np.int64),
                   aug_seed=words[1] >> np.uint64(1))


# SeedSequence constants (numpy/random/bit_generator.pyx, after M. E. O'Neill's seed_seq).
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_M32 = 0xFFFFFFFF
_POOL = 4


def _int_words(x: int) -> list[int]:
    if x < 0:
        raise KdcacheError(f"seed must be non-negative, got {x}")
    words = [x & _M32]
    x >>= 32
    while x:
        words.append(x & _M32)
        x >>= 32
    return words


def seed_sequence_state(prefix: Sequence[int], *columns: np.ndarray, n_words: int) -> np.ndarray:
    """``SeedSequence([*prefix, c0[i], c1[i], ...]).generate_state(n_words, np.uint64)`` for every i.

    ``columns`` are equal-length integer arrays with values < 2**32. Returns [n_words, N] uint64.
    """
    cols = [np.asarray(c).astype(np.uint32) for c in columns]
    size = len(cols[0]) if cols else 1
    entropy = [np.full(size, w, dtype=np.uint32) for p in prefix for w in _int_words(int(p))]
    entropy += cols
    hc = _INIT_A

    def hashmix(v: np.ndarray) -> np.ndarray:
        nonlocal hc
        v = v ^ np.uint32(hc)
        hc = (hc * _MULT_A) & _M32
        v = v * np.uint32(hc)
        return v ^ (v >> np.uint32(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
        return r ^ (r >> np.uint32(16))

    zero = np.zeros(size, dtype=np.uint32)
    pool = [hashmix(entropy[i] if i < len(entropy) else zero) for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(_POOL, len(entropy)):
        for dst in range(_POOL):
            pool[dst] = mix(pool[dst], hashmix(entropy[src]))

    hc = _INIT_B
    out32 = []
    for i in range(2 * n_words):
        v = pool[i % _POOL] ^ np.uint32(hc)
        hc = (hc * _MULT_B) & _M32
        v = v * np.uint32(hc)
        out32.append(v ^ (v >> np.uint32(16)))
    lo = np.stack(out32[0::2]).astype(np.uint64)
    hi = np.stack(out32[1::2]).astype(np.uint64)
    return lo | (hi << np.uint64(32))
