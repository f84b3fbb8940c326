"""Check a cache against a re-run of its teacher on replayed crops (``kdcache cache verify --teacher``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from kdcache.cache.reader import TeacherCache
from kdcache.data.augment import Augmenter
from kdcache.data.corpus import Corpus
from kdcache.data.datasets import ReplayDataset
from kdcache.errors import KdcacheError
from kdcache.models.checkpoint import load_model_dir


@dataclass
class RecomputeReport:
    rows_checked: int
    max_logit_diff: float
    max_embedding_rel_diff: float
    crc_mismatches: list[int] = field(default_factory=list)
    worst_row: int = -1

    def ok(self, logit_tol: float = 0.05, embedding_tol: float = 2e-3) -> bool:
        """float16 storage: logits up to s = 32 round by <= 0.016; embeddings by 2^-11 relative."""
        return (
            not self.crc_mismatches
            and self.max_logit_diff <= logit_tol
            and self.max_embedding_rel_diff <= embedding_tol
        )


def recipe_arrays(cache: TeacherCache, corpus: Corpus, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The replay recipes of ``rows`` with utterance ids resolved to corpus indices."""
    rec = cache.recipes(rows)
    missing = [u for u in rec["utterance_id"] if u not in corpus]
    if missing:
        raise KdcacheError(f"{len(missing)} cached utterance(s) are missing from the corpus (e.g. {missing[0]})")
    return {
        "utterance": np.array([corpus.index(u) for u in rec["utterance_id"]], dtype=np.int64),
        "start": rec["start"],
        "num_samples": rec["num_samples"],
        "aug_seed": rec["aug_seed"],
        "input_crc": rec["input_crc"],
    }


@torch.inference_mode()
def recompute_rows(
    cache: TeacherCache,
    corpus: Corpus,
    teacher_dir: str,
    sample: int = 256,
    seed: int = 0,
    augmenter: Augmenter | None = None,
    batch_size: int = 32,
) -> RecomputeReport:
    """Re-run the teacher on ``sample`` random rows and compare with the cached logits and embeddings."""
    model, config = load_model_dir(teacher_dir)
    weights = config.extra.get("weights_sha256")
    cached = (cache.settings.get("teacher") or {}).get("weights_sha256")
    if weights and cached and weights != cached:
        raise KdcacheError(f"{teacher_dir}: not the teacher this cache was built with (weights sha256 differs)")
    features = cache.attributes.features
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(cache), size=min(sample, len(cache)), replace=False))
    recipes = recipe_arrays(cache, corpus, rows)
    replay = ReplayDataset(corpus, recipes, features, augmenter)
    report = RecomputeReport(rows_checked=len(rows), max_logit_diff=0.0, max_embedding_rel_diff=0.0)
    for begin in range(0, len(rows), batch_size):
        batch = range(begin, min(begin + batch_size, len(rows)))
        items = [replay[i] for i in batch]
        feats = torch.stack([it[1] for it in items])
        for i, (_, _, crc) in zip(batch, items):
            if crc != int(recipes["input_crc"][i]):
                report.crc_mismatches.append(int(rows[i]))
        emb = model(feats).float()
        logits = model.projection.cosine_logits(emb).numpy()
        emb = emb.numpy()
        sel = rows[batch.start:batch.stop]
        cached_logits = cache.logits(sel)
        cached_emb = cache.embeddings(sel)
        logit_diff = np.abs(logits - cached_logits).max(axis=1)
        emb_diff = np.abs(emb - cached_emb).max(axis=1) / np.maximum(np.abs(emb).max(axis=1), 1e-12)
        if logit_diff.max() > report.max_logit_diff:
            report.max_logit_diff = float(logit_diff.max())
            report.worst_row = int(sel[int(logit_diff.argmax())])
        report.max_embedding_rel_diff = max(report.max_embedding_rel_diff, float(emb_diff.max()))
    return report
