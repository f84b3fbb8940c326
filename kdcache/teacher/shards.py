"""The shard loop of phase 1: batches of replayed crops that never cross a shard, the teacher's outputs
on them gathered per shard, and each full shard written in a background thread."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from kdcache.cache.objectstore import describe_store_error, is_object_url, store_error_types
from kdcache.cache.schema import CacheLayout
from kdcache.cache.writer import CacheWriter
from kdcache.data.datasets import ReplayDataset
from kdcache.errors import KdcacheError


class Runner(Protocol):
    def __call__(self, feats: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]: ...


class ShardBatches(torch.utils.data.Sampler):
    """Batches of row indices that never cross a shard boundary, shard by shard."""

    def __init__(self, shards: list[slice], batch_size: int) -> None:
        self.batches = [
            list(range(start, min(start + batch_size, sl.stop)))
            for sl in shards
            for start in range(sl.start, sl.stop, batch_size)
        ]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class SafeReplay(Dataset):
    """A replay dataset that reports unreadable audio instead of raising inside a worker."""

    def __init__(self, replay: ReplayDataset, frames: int, bins: int) -> None:
        self.replay = replay
        self.frames = frames
        self.bins = bins

    def __len__(self) -> int:
        return len(self.replay)

    def __getitem__(self, i: int):
        try:
            row, feats, crc = self.replay[i]
            return row, feats, crc, ""
        except KdcacheError as err:
            return i, torch.zeros(self.frames, self.bins), 0, str(err)


def collate(items):
    rows = torch.tensor([it[0] for it in items], dtype=torch.int64)
    feats = torch.stack([it[1] for it in items])
    crcs = torch.tensor([it[2] for it in items], dtype=torch.int64)
    errors = [it[3] for it in items]
    return rows, feats, crcs, errors


@dataclass
class ShardLoop:
    """Fills shards from batches of replayed crops (which never cross a shard) and writes each shard as
    soon as it is full, in a background thread, so writing overlaps the next shard's compute.

    labels: [N] the teacher label of every cache row (-1: speaker unknown to the teacher);
    skip_bad_audio: record unreadable rows in ``rows/bad`` and go on, instead of stopping.
    """

    writer: CacheWriter
    runner: Runner  # feats [B, T, F], labels [B] -> outputs by name (build.TeacherRunner)
    labels: torch.Tensor
    skip_bad_audio: bool = False
    shards_written: int = 0
    bad_rows: list[int] = field(default_factory=list)

    def outputs(self, rows: torch.Tensor, feats: torch.Tensor, crcs: torch.Tensor,
                errors: list[str]) -> dict[str, torch.Tensor]:
        """One batch's per-row arrays, keyed as ``CacheWriter.write_shard`` takes them."""
        failed = [k for k, e in enumerate(errors) if e]
        if failed and not self.skip_bad_audio:
            raise KdcacheError(
                f"{errors[failed[0]]} (row {int(rows[failed[0]])}; finished shards are kept; "
                "pass --skip-bad-audio to record such rows and go on)"
            )
        outputs = self.runner(feats, self.labels[rows])
        outputs["input_crc"] = crcs
        outputs["bad"] = torch.zeros(len(rows), dtype=torch.uint8)
        for k in failed:
            self.bad_rows.append(int(rows[k]))
            outputs["bad"][k] = 1
        return outputs

    def run(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]],
            shards: list[int], progress: Callable[[int], Any]) -> None:
        """Write ``shards`` (in order) from ``batches`` of (rows, feats, crcs, errors) covering them."""
        layout = self.writer.layout
        pending = iter(shards)
        shard = next(pending)
        size = _rows_in(layout, shard)
        buffers: dict[str, list[torch.Tensor]] = {}
        filled = 0
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer")
        in_flight: Future | None = None
        try:
            for rows, feats, crcs, errors in batches:
                for name, value in self.outputs(rows, feats, crcs, errors).items():
                    buffers.setdefault(name, []).append(value.detach().cpu())
                filled += len(rows)
                progress(len(rows))
                if filled < size:
                    continue
                arrays = {name: torch.cat(parts).numpy() for name, parts in buffers.items()}
                if in_flight is not None:
                    in_flight.result()
                in_flight = pool.submit(_write_shard, self.writer, shard, arrays)
                self.shards_written += 1
                buffers, filled = {}, 0
                shard = next(pending, None)
                if shard is None:
                    break
                size = _rows_in(layout, shard)
            if in_flight is not None:
                in_flight.result()
        finally:
            pool.shutdown(wait=True)


def stop_workers(batches: Iterable[Any]) -> None:
    """Stop the DataLoader's workers now, in this frame. Left to the iterator's finaliser (the loop
    breaks after the last shard, with workers still prefetching), a Ctrl-C during their shutdown was
    printed as an ignored KeyboardInterrupt traceback and the command exited 0; raised here, it reaches
    the CLI, which says the build was interrupted (exit 130) and a rerun finishes it."""
    stop = getattr(batches, "_shutdown_workers", None)  # torch's multi-process iterator only
    if stop is not None:
        stop()


def _rows_in(layout: CacheLayout, shard: int) -> int:
    rows = layout.shard_slice(shard)
    return rows.stop - rows.start


def _write_shard(writer: CacheWriter, shard: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one shard; a failing disk (full, read-only, gone) becomes one line naming the shard."""
    try:
        writer.write_shard(shard, arrays)
    except store_error_types() as err:
        if is_object_url(writer.path):
            raise KdcacheError(describe_store_error(str(writer.path), err, f"writing shard {shard}")) from err
        if not isinstance(err, OSError):
            raise
        raise KdcacheError(
            f"{writer.path}: writing shard {shard} failed ({err.strerror or err}); finished shards are kept "
            "and verified on resume: fix the disk (e.g. free space) and rerun the same command"
        ) from err
