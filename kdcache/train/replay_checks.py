"""Checks that phase 2 replays the crops the teacher saw: the corpus against the cache's manifest, the
augmentation sets against the recorded ones, and (``--verify-inputs N``) the waveform crc of N rows."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from kdcache.cache.reader import TeacherCache
from kdcache.data.augment import AugmentConfig, Augmenter
from kdcache.data.corpus import Corpus
from kdcache.data.datasets import ReplayDataset, waveform_crc
from kdcache.errors import KdcacheError
from kdcache.teacher.recompute import recipe_arrays


def check_corpus_matches(cache: TeacherCache, corpus: Corpus, limit: int = 5) -> None:
    """Refuse a corpus whose utterance ids, order or lengths differ from the cache's manifest."""
    ids, _, lengths = cache.utterances()
    problems: list[str] = []
    corpus_ids = corpus.ids
    if len(ids) != len(corpus_ids):
        problems.append(f"{len(ids)} utterances in the cache, {len(corpus_ids)} in the corpus")
    cached = {u: int(n) for u, n in zip(ids, lengths)}
    for utt_id, num_samples in zip(corpus_ids, corpus.num_samples):
        if utt_id not in cached:
            problems.append(f"{utt_id} is not in the cache")
        elif cached[utt_id] != num_samples:
            problems.append(f"{utt_id} has {num_samples} samples, the cache recorded {cached[utt_id]}")
        if len(problems) >= limit:
            break
    present = set(corpus_ids)
    for u in ids:
        if len(problems) >= limit:
            break
        if u not in present:
            problems.append(f"{u} (in the cache) is missing from the corpus")
    if not problems and list(ids) != corpus_ids:
        problems.append("the utterance order differs from the cache's")
    if problems:
        raise KdcacheError(f"{cache.url}: the corpus does not match the cache: {'; '.join(problems[:limit])}")


def verify_replayed_inputs(cache: TeacherCache, corpus: Corpus, augmenter: Augmenter | None, count: int, seed: int = 0) -> int:
    """Recompute the input crc of ``count`` random rows; refuse on any difference. Returns rows checked."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(cache), size=min(count, len(cache)), replace=False))
    recipes = recipe_arrays(cache, corpus, rows)
    replay = ReplayDataset(corpus, recipes, cache.attributes.features, augmenter)
    for k, row in enumerate(rows):
        if waveform_crc(replay.waveform(k)) != int(recipes["input_crc"][k]):
            path = corpus.path(int(recipes["utterance"][k]))
            raise KdcacheError(
                f"row {int(row)}: the replayed input differs from the teacher's (audio {path} changed since "
                "the cache was built, or the augmentation sets differ)"
            )
    return len(rows)


def augmenter_for(config: AugmentConfig | None, recorded: Any) -> Augmenter | None:
    """The augmenter of the build, checked against the sets recorded in the cache."""
    if not recorded:
        if config is not None:
            raise KdcacheError("the cache was built without augmentation; drop the --augment-* options")
        return None
    if config is None:
        raise KdcacheError(
            "the cache was built with augmentation: pass the same --augment-noise/--augment-reverb folders "
            "so the crops can be replayed"
        )
    augmenter = Augmenter(config)
    if json.dumps(augmenter.manifest(), sort_keys=True) != json.dumps(recorded, sort_keys=True):
        raise KdcacheError("the augmentation folders or probability differ from the ones the cache was built with")
    return augmenter
