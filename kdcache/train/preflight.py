"""Checks a training run makes before its first batch: everything it will need, so that a mistake is
found in a second, not after the epochs (and never leaves a half-run that then needs --resume)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kdcache.cache.info import integrated_input_warning, teacher_top1
from kdcache.cache.reader import TeacherCache
from kdcache.cache.sampler import valid_batch_size
from kdcache.errors import KdcacheError


def note(message: str) -> None:
    """One line on stderr that is not an error (a setting kdcache chose for the user)."""
    print(f"kdcache: note: {message}", file=sys.stderr, flush=True)


def warn_if_integrated_targets_mislead(cache: TeacherCache, reads: tuple[str, ...]) -> str | None:
    """For a method that reads ``integrated_logits``: a warning on stderr (returned too) when the teacher
    is mostly wrong on the cache's integrated inputs (kdcache.cache.info.teacher_top1 on 512 rows)."""
    if "integrated_logits" not in reads or not cache.layout.integrated:
        return None
    mode = (cache.settings.get("saliency") or {}).get("integrated_input")
    warning = integrated_input_warning(teacher_top1(cache), mode)
    if warning and int(os.environ.get("RANK", "0")) == 0:
        print(f"kdcache: warning: {cache.url}: {warning}", file=sys.stderr, flush=True)
    return warning


def student_batch_size(requested: int, cache: TeacherCache, usable_rows: int, world_size: int = 1) -> int:
    """The batch size to train with: ``requested`` when the cache's chunks allow it, else the nearest
    smaller size that they allow (said in a note). KdcacheError when the usable rows cannot fill one
    batch per process (an incomplete cache with too few finished shards, or a batch above the rows)."""
    block = cache.layout.chunk_rows
    batch = valid_batch_size(requested, block)
    if batch != requested and int(os.environ.get("RANK", "0")) == 0:  # one note under torchrun
        rule = f"a multiple of its {block}-row chunks" if requested >= block else f"a divisor of its {block}-row chunks"
        note(f"--batch-size {requested}: batches of this cache must be {rule}; training with --batch-size {batch}")
    if usable_rows == 0:
        raise KdcacheError(f"{cache.url}: no shard of the cache is finished, so there are no rows to train on; "
                           "finish the build (rerun build-teacher-cache)")
    if usable_rows // min(batch, block) < world_size or usable_rows // world_size < batch:
        raise KdcacheError(f"--batch-size {batch} is larger than the cache's rows per process "
                           f"({usable_rows // world_size} usable rows); lower it")
    return batch


def check_output_folder(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse an output folder that cannot be created or written (a file on its path, no permission)
    before any work, rather than when the first checkpoint is saved."""
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                raise KdcacheError(f"{path}: {existing} is a file, not a folder; choose another {option}")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise KdcacheError(f"{path}: {existing} is not writable; choose another {option}")
            return
