"""Data the benchmarks generate for themselves (nothing is downloaded): a synthetic corpus, a teacher label
space of S = 5994 speakers (VoxCeleb2-dev's size), AAM-like teacher logits and caches written with the
library's own CacheWriter, with the provenance attributes ``kdcache train-student`` checks.

Cached values do not come from running a teacher (that would take hours on a CPU for S = 5994 and
thousands of rows): they are drawn from a model of a trained AAM head (``aam_outputs``), which is what
matters for storage errors; timings of reading and training do not depend on the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdcache.cache.schema import CacheLayout
from kdcache.cache.writer import CacheWriter
from kdcache.data.corpus import Corpus, load_corpus
from kdcache.data.crops import CropPlan, plan_rows
from kdcache.data.features import FeatureConfig
from kdcache.data.synthetic import make_synthetic_corpus
from kdcache.models.checkpoint import ModelConfig
from kdcache.teacher.build import BuildConfig, build_attrs

VOX2_SPEAKERS = 5994
SCALE = 32.0


def make_corpus(root: Path, speakers: int, utterances_per_speaker: int, seconds: float = 3.0, seed: int = 0) -> Path:
    """A synthetic corpus under root; returns its training folder (wav.scp + utt2spk)."""
    root = Path(root)
    if not (root / "train" / "wav.scp").exists():
        make_synthetic_corpus(root, speakers=speakers, utterances_per_speaker=utterances_per_speaker,
                              seconds=seconds, test_speakers=2, seed=seed, num_trials=10)
    return root / "train"


def label_space(corpus: Corpus | list[Corpus], num_classes: int = VOX2_SPEAKERS) -> list[str]:
    """num_classes sorted speaker ids: the corpus's (or corpora's) speakers plus padding speakers (a teacher
    trained on VoxCeleb2 knows 5994 speakers; the corpora here have a few dozen of them)."""
    corpora = corpus if isinstance(corpus, list) else [corpus]
    real = sorted({s for c in corpora for s in c.speakers})
    if len(real) > num_classes:
        raise ValueError(f"{len(real)} corpus speakers > {num_classes} classes")
    pad = [f"zz_pad{i:05d}" for i in range(num_classes - len(real))]
    return sorted(real + pad)


def random_head(num_classes: int, dim: int, seed: int = 0) -> np.ndarray:
    """[S, D] float32 unit rows: random class directions (pairwise cos ~ N(0, 1/D))."""
    w = np.random.default_rng([seed, 1]).standard_normal((num_classes, dim)).astype(np.float32)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def aam_outputs(labels: np.ndarray, head: np.ndarray, seed: int = 0, scale: float = SCALE,
                confusable: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [n, D] float32, margin-free logits s*cos [n, S] float32) like a trained AAM model's.

    Each embedding has cosine U(0.4, 0.85) with its speaker's class direction (a trained model on its
    training data), small components toward ``confusable`` other speakers (similar voices: cosines up
    to ~0.3), and a random remainder; its norm is log-uniform in [5, 50] (raw, unnormalised
    embeddings). The logits are ``scale * e_n @ head^T``, exactly what a cosine head gives.
    """
    rng = np.random.default_rng([seed, 2])
    n, (S, D) = len(labels), head.shape
    labels = np.asarray(labels) % S
    target_cos = rng.uniform(0.4, 0.85, n)
    others = rng.integers(0, S, (n, confusable))
    weights = rng.uniform(0.05, 0.3, (n, confusable))
    noise = rng.standard_normal((n, D)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    side = (weights[:, :, None] * head[others]).sum(axis=1) + noise
    # make the side part orthogonal to the target direction, then mix to the wanted target cosine
    t = head[labels]
    side -= (side * t).sum(axis=1, keepdims=True) * t
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    e = target_cos[:, None] * t + np.sqrt(1.0 - target_cos**2)[:, None] * side
    e = e.astype(np.float32) * np.exp(rng.uniform(np.log(5.0), np.log(50.0), n)).astype(np.float32)[:, None]
    e_n = e / np.linalg.norm(e, axis=1, keepdims=True)
    return e, (np.float32(scale) * (e_n @ head.T)).astype(np.float32)


@dataclass
class CacheSpec:
    num_classes: int = VOX2_SPEAKERS
    embed_dim: int = 256
    crops_per_utt: int = 4
    crop_seconds: float = 2.0
    logits: str = "dense"
    saliency: bool = False
    ig_durations: tuple[float, ...] = (2.0, 1.0)
    shard_rows: int = 4096
    chunk_rows: int = 64
    seed: int = 0
    teacher_arch: str = "xvector"


def write_cache(path: Path, data: Path, spec: CacheSpec, values: Any = None) -> Path:
    """Write a complete cache for the corpus at ``data`` with ``spec``, as build-teacher-cache lays it out
    (same recipe rows, layout and provenance), filled with :func:`aam_outputs` (or by
    ``values(layout, head, labels, shard, seed)``, which returns a shard's outputs). Returns path."""
    path = Path(path)
    if (path / "zarr.json").exists():
        return path
    corpus = load_corpus(data)
    features = FeatureConfig()
    speakers = label_space(corpus, spec.num_classes)
    index = {s: i for i, s in enumerate(speakers)}
    utt_labels = np.array([index[s] for s in corpus.utterance_speakers], dtype=np.int64)
    plan = CropPlan(spec.crop_seconds, spec.crops_per_utt, spec.seed)
    frames = features.frames_for_seconds(spec.crop_seconds)
    rows = plan_rows(corpus.num_samples, plan, features.crop_num_samples(spec.crop_seconds))
    duration_frames = [min(features.frames_for_seconds(d), frames) for d in spec.ig_durations]
    layout = CacheLayout(
        num_rows=len(rows), num_classes=spec.num_classes, embed_dim=spec.embed_dim, logits_mode=spec.logits,
        saliency_shape=(len(duration_frames), frames, features.num_mel_bins) if spec.saliency else None,
        integrated=spec.saliency, shard_rows=spec.shard_rows, chunk_rows=spec.chunk_rows,
    )
    cfg = BuildConfig(data=str(data), teacher="(benchmark: AAM-like values)", out=str(path),
                      crops_per_utt=spec.crops_per_utt, crop_seconds=spec.crop_seconds, seed=spec.seed,
                      logits=spec.logits, saliency=spec.saliency, ig_durations=spec.ig_durations,
                      shard_rows=spec.shard_rows, chunk_rows=spec.chunk_rows)
    tconf = ModelConfig(arch=spec.teacher_arch, model_args={}, embed_dim=spec.embed_dim, speakers=speakers,
                        features=features.to_dict(), head_scale=SCALE, head_margin=0.2,
                        extra={"weights_sha256": "benchmark-synthetic"})
    attrs = build_attrs(cfg, tconf, features, plan, corpus, None, duration_frames)
    head = random_head(spec.num_classes, spec.embed_dim, spec.seed)
    labels = utt_labels[rows.utterance]
    writer = CacheWriter.create(
        path, layout, speakers=speakers, utterance_ids=corpus.ids,
        utterance_speakers=corpus.utterance_speakers, utterance_num_samples=corpus.num_samples,
        rows={"utterance": rows.utterance, "start": rows.start, "num_samples": rows.num_samples,
              "label": labels, "aug_seed": rows.aug_seed},
        head=head, attrs=attrs,
    )
    for s in writer.pending_shards():
        writer.write_shard(s, (values or shard_values)(layout, head, labels, s, spec.seed))
    writer.finalize()
    return path


def shard_values(layout: CacheLayout, head: np.ndarray, labels: np.ndarray, s: int, seed: int = 0) -> dict[str, Any]:
    """The teacher outputs of shard s (AAM-like; random IG maps when the layout has saliency)."""
    sl = layout.shard_slice(s)
    n = sl.stop - sl.start
    emb, logits = aam_outputs(labels[sl], head, seed=seed * 100003 + s)
    out: dict[str, Any] = {"embedding": emb, "input_crc": np.zeros(n, dtype=np.uint32)}
    if layout.logits_mode != "factorized":
        out["logits"] = logits
    if layout.saliency_shape is not None:
        rng = np.random.default_rng([seed, s, 3])
        out["saliency"] = (rng.standard_normal((n, *layout.saliency_shape), dtype=np.float32) * 0.1)
        i_emb, i_logits = aam_outputs(labels[sl], head, seed=seed * 100003 + s + 7)
        out["integrated_embedding"] = i_emb
        out["integrated_logits"] = i_logits
    return out
