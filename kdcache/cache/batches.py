"""Training batches from a cache: each item is a batch of cache rows, their crops replayed from the
corpus and their teacher outputs read from the cache (phase 2's data path).

A batch is a dict: ``feats [B, T, F]`` float32 fbank of the replayed crops (the exact input the teacher
saw), ``label [B]`` int64 (-1: speaker unknown to the teacher) and one float32 entry per requested
teacher output, keyed by its batch field (``schema.OUTPUTS``: ``teacher_logits [B, S]``,
``teacher_embedding [B, D]``, ``saliency [B, n_dur, T, F]``, ``integrated_logits [B, S]``,
``integrated_embedding [B, D]``). A trainer needs nothing else, so any other source of these fields
(say, a teacher run on the batch) can stand in for this one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from kdcache.data.augment import Augmenter
from kdcache.data.corpus import Corpus
from kdcache.data.datasets import crop_features
from kdcache.data.features import FeatureConfig

from . import schema as sc
from .reader import TeacherCache

RECIPE = (sc.ROW_UTTERANCE, sc.ROW_START, sc.ROW_NUM_SAMPLES, sc.ROW_AUG_SEED, sc.ROW_LABEL, sc.ROW_BAD)


class CacheBatches(Dataset):
    """Item = a batch of cache rows (an index array from the sampler): replayed fbank crops plus the
    teacher's cached outputs.

    ``teacher`` names the batch fields to read (a method's ``reads``); by default the logits and
    embeddings, plus the saliency maps and integrated outputs when ``with_saliency``. Rows whose audio
    was unreadable at build time (``rows/bad``) are dropped from the batch. The cache is opened lazily
    in each DataLoader worker (TeacherCache pickles as its URL).
    """

    def __init__(self, cache: TeacherCache, corpus: Corpus, features: FeatureConfig, augmenter: Augmenter | None,
                 with_saliency: bool = False, teacher: tuple[str, ...] | None = None) -> None:
        self.cache = cache
        self.corpus = corpus
        self.features = features
        self.augmenter = augmenter
        fields = [o.field for o in sc.OUTPUTS]
        if teacher is None:
            teacher = tuple(fields) if with_saliency else tuple(fields[:2])
        unknown = set(teacher) - set(fields)
        if unknown:
            raise ValueError(f"unknown teacher outputs {sorted(unknown)}; choose from {fields}")
        self.teacher = tuple(teacher)

    def __len__(self) -> int:  # items are addressed by row arrays from the sampler
        return len(self.cache)

    def __getitem__(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        rows = np.asarray(rows, dtype=np.int64)
        recipe = self.cache.read(list(RECIPE), rows)
        good = recipe[sc.ROW_BAD] == 0
        if not good.all():  # rows whose audio was unreadable at build time (--skip-bad-audio)
            rows = rows[good]
            recipe = {name: value[good] for name, value in recipe.items()}
        feats = torch.stack([
            crop_features(self.corpus, int(recipe[sc.ROW_UTTERANCE][k]), int(recipe[sc.ROW_START][k]),
                          int(recipe[sc.ROW_NUM_SAMPLES][k]), int(recipe[sc.ROW_AUG_SEED][k]), self.augmenter,
                          self.features)[0]
            for k in range(len(rows))
        ])
        batch = {"feats": feats, "label": torch.from_numpy(recipe[sc.ROW_LABEL].astype(np.int64))}
        for field in self.teacher:
            batch[field] = torch.from_numpy(self.cache.read(field, rows))  # float32
        return batch
