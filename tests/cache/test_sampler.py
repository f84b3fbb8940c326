"""BlockSampler: coverage, disjoint ranks, determinism per epoch, contiguous aligned blocks."""

from __future__ import annotations

import numpy as np
import pytest

from kdcache.cache import BlockSampler, RandomRowSampler


def _runs(batch: np.ndarray) -> list[tuple[int, int]]:
    rows = np.sort(batch)
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(rows, cut)]


def test_batches_are_whole_aligned_blocks_shuffled_within() -> None:
    s = BlockSampler(1000, batch_size=128, block_rows=64, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 7  # 15 full blocks -> 7 batches of 2
    for b in batches:
        assert b.dtype == np.int64 and len(b) == 128 and len(np.unique(b)) == 128
        for r0, r1 in _runs(b):  # runs are whole 64-row blocks (adjacent blocks may merge)
            assert r0 % 64 == 0 and (r1 - r0) % 64 == 0
    assert any(not np.array_equal(b, np.sort(b)) for b in batches)  # rows shuffled within the batch


def test_coverage() -> None:
    rows = np.concatenate(list(BlockSampler(1000, 128, seed=0)))
    assert len(rows) == len(np.unique(rows)) == 7 * 128 and rows.max() < 960
    rows = np.concatenate(list(BlockSampler(1000, 128, seed=0, drop_last=False)))
    assert np.array_equal(np.sort(rows), np.arange(1000))  # tail block (960-999) included


def test_disjoint_equal_ranks() -> None:
    world = 3
    samplers = [BlockSampler(64 * 20, 128, seed=5, rank=r, world_size=world) for r in range(world)]
    sets = [np.concatenate(list(s)) for s in samplers]
    assert len({len(s) for s in samplers}) == 1 and len(samplers[0]) == 3
    assert len({len(x) for x in sets}) == 1
    all_rows = np.concatenate(sets)
    assert len(np.unique(all_rows)) == len(all_rows)
    padded = [
        np.concatenate(list(BlockSampler(64 * 20, 128, rank=r, world_size=world, drop_last=False))) for r in range(world)
    ]
    assert set(np.concatenate(padded).tolist()) == set(range(64 * 20))
    assert len({len(BlockSampler(64 * 20, 128, rank=r, world_size=world, drop_last=False)) for r in range(world)}) == 1


def test_deterministic_per_epoch() -> None:
    a, b = BlockSampler(2000, 256, seed=3), BlockSampler(2000, 256, seed=3)
    e0 = [x.copy() for x in a]
    assert all(np.array_equal(x, y) for x, y in zip(e0, b))
    a.set_epoch(1)
    e1 = list(a)
    assert not all(np.array_equal(x, y) for x, y in zip(e0, e1))
    a.set_epoch(0)
    assert all(np.array_equal(x, y) for x, y in zip(e0, a))
    assert not all(np.array_equal(x, y) for x, y in zip(e0, BlockSampler(2000, 256, seed=4)))


def test_small_batches_are_contiguous_sub_runs() -> None:
    s = BlockSampler(640, batch_size=16, block_rows=64, seed=2)
    batches = list(s)
    assert len(batches) == 40
    for b in batches:
        (r0, r1), = _runs(b)
        assert r1 - r0 == 16 and r0 % 16 == 0 and r0 // 64 == (r1 - 1) // 64


def test_unshuffled_is_in_order() -> None:
    rows = np.concatenate(list(BlockSampler(256, 64, shuffle=False)))
    assert np.array_equal(rows, np.arange(256))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="multiple of block_rows"):
        BlockSampler(1000, 100, block_rows=64)
    with pytest.raises(ValueError, match="divide"):
        BlockSampler(1000, 48, block_rows=64)
    with pytest.raises(ValueError, match="rank"):
        BlockSampler(1000, 64, rank=2, world_size=2)


def test_random_row_sampler() -> None:
    s0, s1 = (RandomRowSampler(1000, 100, seed=1, rank=r, world_size=2) for r in range(2))
    a, b = np.concatenate(list(s0)), np.concatenate(list(s1))
    assert len(s0) == 5 and len(a) == len(b) == 500 and not set(a) & set(b)
    assert len(_runs(next(iter(s0)))) > 50  # fully random rows
