"""Where phase 2's batches come from. A batch source gives the trainer, per epoch, an iterable of batches
(dicts: ``feats``, ``label`` and the teacher fields a method reads; see ``kdcache.cache.batches``) and
says which teacher fields it can fill, what the teacher was (scale, margin, embedding size, provenance)
and its speakers. :class:`CacheSource` reads a teacher cache; a source that runs the teacher on each
batch's crops would offer the same attributes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from kdcache.cache import schema as sc
from kdcache.cache.batches import CacheBatches
from kdcache.cache.fingerprint import cache_fingerprint
from kdcache.cache.info import cache_info
from kdcache.cache.reader import TeacherCache
from kdcache.cache.sampler import BlockSampler, RestrictedSampler
from kdcache.data.augment import AugmentConfig
from kdcache.data.corpus import load_corpus
from kdcache.data.datasets import loader_settings
from kdcache.distill import methods
from kdcache.errors import KdcacheError
from kdcache.train.preflight import student_batch_size, warn_if_integrated_targets_mislead
from kdcache.train.replay_checks import augmenter_for, check_corpus_matches, verify_replayed_inputs


class CacheSource:
    """Batches of whole cache blocks, crops replayed from the corpus in DataLoader workers, the teacher
    fields read from the cache in the same workers (only those ``fields`` names)."""

    def __init__(self, cache: str, data: str, *, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 augment: AugmentConfig | None = None, allow_incomplete: bool = False, verify_inputs: int = 0) -> None:
        self.url = cache
        self.cache = TeacherCache.open(cache)
        if not self.cache.is_complete and not allow_incomplete:
            missing = self.cache.missing_shards()
            raise KdcacheError(
                f"{cache}: cache is incomplete ({len(missing)} shard(s) not written, e.g. {missing[:3]}); "
                "finish the build (rerun build-teacher-cache) or pass --allow-incomplete"
            )
        self.settings = self.cache.settings
        self.fields = frozenset(o.field for o in self.cache.outputs())
        self.hints = sc.BATCH_FIELD_HINT
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.augment = augment
        self.verify_inputs = verify_inputs

    def prepare(self, method: type[methods.Method]) -> None:
        """Refuse a method that reads a field this cache lacks; check the corpus and the augmentation
        sets against the cache (and replay ``verify_inputs`` rows); set up the epoch's batches."""
        method.check_fields(self.fields, self.url, self.hints)
        warn_if_integrated_targets_mislead(self.cache, method.reads)
        self.corpus = load_corpus(self.data)
        check_corpus_matches(self.cache, self.corpus)
        self.features = self.cache.attributes.features
        self.augmenter = augmenter_for(self.augment, self.settings.get("augment"))
        if self.verify_inputs:
            verify_replayed_inputs(self.cache, self.corpus, self.augmenter, self.verify_inputs, seed=self.seed)
        usable = None if self.cache.is_complete else self.cache.done_rows()
        self.batch_size = student_batch_size(self.batch_size, self.cache,
                                             len(self.cache) if usable is None else len(usable), self.world_size)
        sampler: Any = BlockSampler(
            len(self.cache) if usable is None else len(usable), self.batch_size,
            block_rows=self.cache.layout.chunk_rows, seed=self.seed, rank=self.rank, world_size=self.world_size,
            drop_last=True, shuffle=True,
        )
        self.sampler = sampler if usable is None else RestrictedSampler(sampler, usable)
        if len(self.sampler) < 1:
            raise KdcacheError(f"--batch-size {self.batch_size} is larger than the cache's rows per process; lower it")
        self.dataset = CacheBatches(self.cache, self.corpus, self.features, self.augmenter, teacher=method.reads)

    @property
    def teacher(self) -> dict[str, Any]:
        """The teacher's provenance: ``scale``, ``margin``, ``embed_dim``, ``arch``, ..."""
        teacher = dict(self.settings.get("teacher") or {})
        teacher["embed_dim"] = teacher.get("embed_dim") or self.cache.layout.embed_dim
        return teacher

    @property
    def speakers(self) -> list[str]:
        return self.cache.speakers

    @property
    def fingerprint(self) -> str:
        return cache_fingerprint(self.settings)

    @property
    def provenance(self) -> dict[str, Any]:
        """What the student's config records about where its teacher targets came from."""
        return {"cache": str(self.url)}

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return len(self.sampler)

    def batches(self, epoch: int, num_workers: int, device: torch.device) -> DataLoader:
        self.sampler.set_epoch(epoch)
        return DataLoader(self.dataset, sampler=self.sampler, batch_size=None, **loader_settings(num_workers, device))


def cache_methods(cache: TeacherCache) -> dict[str, str]:
    """Each method and why it cannot train from ``cache`` ("" when it can)."""
    fields = frozenset(o.field for o in cache.outputs())
    out = {}
    for name, cls in methods.methods().items():
        missing = [f for f in cls.reads if f not in fields]
        out[name] = "" if not missing else f"needs {missing[0]} ({sc.BATCH_FIELD_HINT.get(missing[0], 'not in the cache')})"
    return out


def cache_info_with_methods(path_or_url: str) -> dict[str, Any]:
    """``cache info``: kdcache.cache.info.cache_info plus the methods that can train from the cache."""
    cache = TeacherCache.open(path_or_url)
    return cache_info(cache) | {"methods": cache_methods(cache)}
