"""torch Datasets over a corpus: fresh random crops (teacher training) and replayed crops (cache rows)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from kdcache.data.audio import read_crop
from kdcache.data.augment import Augmenter
from kdcache.data.corpus import Corpus
from kdcache.data.features import FeatureConfig, compute_fbank


def worker_init(_: int) -> None:
    """DataLoader workers compute one fbank at a time: one intra-op thread each (see README)."""
    torch.set_num_threads(1)


def replay_waveform(
    corpus: Corpus,
    utterance: int,
    start: int,
    num_samples: int,
    aug_seed: int,
    augmenter: Augmenter | None,
) -> np.ndarray:
    """The exact waveform of a crop recipe: the crop (tiled if short), then the seeded augmentation."""
    utt = corpus.utterances[utterance]
    wave = read_crop(utt.path, int(start), int(num_samples))
    if augmenter is not None:
        wave = augmenter.apply(wave, int(aug_seed))
    return wave


class RandomCropDataset(Dataset):
    """One fresh random crop per (utterance, repeat) and epoch; deterministic given (seed, epoch).

    Items are ``(fbank [T, F] float32, label int)``. Set ``epoch`` before building the epoch's
    DataLoader (workers copy the dataset when they start).
    """

    def __init__(
        self,
        corpus: Corpus,
        labels: Sequence[int],
        crop_samples: int,
        features: FeatureConfig,
        seed: int = 0,
        augmenter: Augmenter | None = None,
        repeats: int = 1,
    ) -> None:
        self.corpus = corpus
        self.labels = np.asarray(labels, dtype=np.int64)
        self.crop_samples = int(crop_samples)
        self.features = features
        self.seed = int(seed)
        self.augmenter = augmenter
        self.repeats = int(repeats)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.corpus) * self.repeats

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        u = index % len(self.corpus)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        length = self.corpus.utterances[u].num_samples
        start = int(rng.integers(0, max(length - self.crop_samples, 0) + 1))
        aug_seed = int(rng.integers(0, 2**63 - 1))
        wave = replay_waveform(self.corpus, u, start, self.crop_samples, aug_seed, self.augmenter)
        return compute_fbank(wave, self.features), int(self.labels[u])


class ReplayDataset(Dataset):
    """Replays cache rows: item ``i`` of ``rows`` gives the fbank the teacher saw for that row.

    ``recipes`` holds arrays ``utterance`` (corpus index), ``start``, ``num_samples``, ``aug_seed``.
    Items are ``(row index, fbank [T, F], waveform crc32)``.
    """

    def __init__(
        self,
        corpus: Corpus,
        recipes: dict[str, np.ndarray],
        features: FeatureConfig,
        augmenter: Augmenter | None = None,
    ) -> None:
        self.corpus = corpus
        self.recipes = recipes
        self.features = features
        self.augmenter = augmenter

    def __len__(self) -> int:
        return len(self.recipes["start"])

    def waveform(self, i: int) -> np.ndarray:
        r = self.recipes
        return replay_waveform(
            self.corpus, int(r["utterance"][i]), int(r["start"][i]), int(r["num_samples"][i]),
            int(r["aug_seed"][i]), self.augmenter,
        )

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, int]:
        wave = self.waveform(i)
        return i, compute_fbank(wave, self.features), waveform_crc(wave)


def waveform_crc(wave: np.ndarray) -> int:
    """crc32 of the float32 waveform bytes: proves phase 2 replays the teacher's exact input."""
    return zlib.crc32(np.ascontiguousarray(wave, dtype=np.float32).tobytes())

