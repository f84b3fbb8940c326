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
    wave = read_crop(corpus.path(utterance), int(start), int(num_samples))
    if augmenter is not None:
        wave = augmenter.apply(wave, int(aug_seed))
    return wave


def crop_features(corpus: Corpus, utterance: int, start: int, num_samples: int, aug_seed: int,
                  augmenter: Augmenter | None, features: FeatureConfig) -> tuple[torch.Tensor, np.ndarray]:
    """The one crop -> augment -> fbank path of every dataset (teacher training, cache building, phase 2):
    ``(fbank [T, F] float32, waveform [num_samples] float32)`` of a crop recipe (``replay_waveform``)."""
    wave = replay_waveform(corpus, utterance, start, num_samples, aug_seed, augmenter)
    return compute_fbank(wave, features), wave


def loader_settings(num_workers: int, device: torch.device) -> dict:
    """DataLoader keyword arguments every kdcache loader shares: workers with one torch thread each
    (``worker_init``), 4 batches prefetched per worker, pinned memory for CUDA, no persistent workers
    (each epoch's loader is new)."""
    return dict(
        num_workers=num_workers,
        worker_init_fn=worker_init if num_workers > 0 else None,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )


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
        length = int(self.corpus.num_samples[u])
        start = int(rng.integers(0, max(length - self.crop_samples, 0) + 1))
        aug_seed = int(rng.integers(0, 2**63 - 1))
        fbank, _ = crop_features(self.corpus, u, start, self.crop_samples, aug_seed, self.augmenter, self.features)
        return fbank, int(self.labels[u])


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
        r = self.recipes
        fbank, wave = crop_features(
            self.corpus, int(r["utterance"][i]), int(r["start"][i]), int(r["num_samples"][i]),
            int(r["aug_seed"][i]), self.augmenter, self.features,
        )
        return i, fbank, waveform_crc(wave)


def waveform_crc(wave: np.ndarray) -> int:
    """crc32 of the float32 waveform bytes: proves phase 2 replays the teacher's exact input."""
    return zlib.crc32(np.ascontiguousarray(wave, dtype=np.float32).tobytes())

