"""Batch samplers over cache rows (numpy only). Use as a DataLoader ``batch_sampler`` or iterate directly.

BlockSampler: a batch is a few whole ``block_rows``-row blocks (aligned with the cache's inner chunks), so a
batch reads as a few contiguous slices. Rows are already a seeded random permutation of (utterance, crop)
pairs, so a block is a random sample; shuffling blocks per epoch and rows within the batch does the rest.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")


class BlockSampler:
    """Yields int64 row-index arrays of batch_size rows made of whole blocks.

    batch_size must be a multiple of block_rows, or divide it (then a batch is one aligned contiguous
    sub-run of a block). Blocks are shuffled per epoch with the seed (seed, epoch), identically on every
    rank; rank r takes every world_size-th block, so ranks get disjoint, equal-sized sets. With
    drop_last the short tail block and the blocks that do not fill a batch on every rank are dropped;
    without it the tail block is kept and the block list is padded by wrapping around (as
    torch's DistributedSampler does), so the last batch may be short and padding repeats a few blocks.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        block_rows: int = 64,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        shuffle: bool = True,
    ) -> None:
        _check_rank(rank, world_size)
        if num_rows <= 0 or batch_size <= 0 or block_rows <= 0:
            raise ValueError("num_rows, batch_size and block_rows must be positive")
        if batch_size >= block_rows and batch_size % block_rows:
            raise ValueError(f"batch_size {batch_size} must be a multiple of block_rows {block_rows} (or divide it)")
        if batch_size < block_rows and block_rows % batch_size:
            raise ValueError(f"batch_size {batch_size} must divide block_rows {block_rows} (or be a multiple of it)")
        self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
        self.rank, self.world_size, self.drop_last, self.shuffle = rank, world_size, drop_last, shuffle
        self.unit = min(block_rows, batch_size)  # rows per block as sampled
        self.blocks_per_batch = batch_size // self.unit
        full, tail = divmod(num_rows, self.unit)
        self.num_blocks = full + (1 if tail and not drop_last else 0)
        self.epoch = 0
        if self.num_blocks < world_size and drop_last:
            raise ValueError(f"{num_rows} rows make {self.num_blocks} blocks, fewer than world_size {world_size}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _blocks_per_rank(self) -> int:
        if self.drop_last:
            return self.num_blocks // self.world_size
        return -(-self.num_blocks // self.world_size)

    def rank_blocks(self) -> np.ndarray:
        """Block indices of this rank in this epoch, in order."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_blocks)
        else:
            order = np.arange(self.num_blocks)
        per = self._blocks_per_rank()
        if per * self.world_size > len(order):
            order = np.resize(order, per * self.world_size)  # wrap-around padding
        blocks = order[self.rank : per * self.world_size : self.world_size]
        if self.drop_last:
            blocks = blocks[: len(blocks) // self.blocks_per_batch * self.blocks_per_batch]
        return blocks

    def __len__(self) -> int:
        per = self._blocks_per_rank()
        return per // self.blocks_per_batch if self.drop_last else -(-per // self.blocks_per_batch)

    def __iter__(self) -> Iterator[np.ndarray]:
        blocks = self.rank_blocks()
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        for b in range(0, len(blocks), self.blocks_per_batch):
            starts = blocks[b : b + self.blocks_per_batch] * self.unit
            rows = np.concatenate([np.arange(s, min(s + self.unit, self.num_rows), dtype=np.int64) for s in starts])
            if self.shuffle:
                rng.shuffle(rows)
            yield rows


class RandomRowSampler:
    """Yields int64 arrays of batch_size fully random rows (a baseline for benchmarks: slow reads)."""

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        _check_rank(rank, world_size)
        if num_rows < world_size or batch_size <= 0:
            raise ValueError("need num_rows >= world_size and batch_size > 0")
        self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        per = self.num_rows // self.world_size
        return per // self.batch_size if self.drop_last else -(-per // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_rows).astype(np.int64)
        per = self.num_rows // self.world_size
        mine = perm[self.rank : per * self.world_size : self.world_size]
        for i in range(len(self)):
            yield mine[i * self.batch_size : (i + 1) * self.batch_size]


class RestrictedSampler:
    """A sampler's batches over a subset of the rows, given as ``rows`` (sorted cache rows): batch
    indices ``i`` into the compacted list become ``rows[i]``. Used with the rows of the finished shards
    of an incomplete cache (``--allow-incomplete``): shards hold whole blocks, so blocks of the compacted
    list map back to whole cache blocks."""

    def __init__(self, sampler: BlockSampler, rows: np.ndarray) -> None:
        self.sampler = sampler
        self.rows = rows

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.rows[batch] for batch in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def valid_batch_size(requested: int, block_rows: int) -> int:
    """The largest batch size <= ``requested`` that BlockSampler takes with ``block_rows``-row blocks: a
    multiple of block_rows when requested >= block_rows, else a divisor of block_rows (at least 1)."""
    if requested >= block_rows:
        return requested // block_rows * block_rows
    return max(d for d in range(1, requested + 1) if block_rows % d == 0)
