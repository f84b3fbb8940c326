"""Speaker-verification evaluation of a model directory on a trial list: EER and minDCF."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcache.data.corpus import Corpus, load_corpus
from kdcache.data.features import FeatureConfig
from kdcache.data.trials import Trial, read_trials
from kdcache.errors import KdcacheError
from kdcache.evaluate.embed import extract_embeddings, speaker_means
from kdcache.evaluate.metrics import compute_eer, compute_min_dcf
from kdcache.evaluate.scoring import EmbeddingTable, score_trials
from kdcache.models.checkpoint import load_model_dir

SCORE_NORMS = ("none", "asnorm")



def scores_name(metrics_path: str | Path) -> str:
    """File name of the per-trial scores beside a metrics file: ``scores.txt`` beside ``metrics.json``,
    ``NAME.scores.txt`` beside any other ``NAME.json``."""
    stem = Path(metrics_path).stem
    return "scores.txt" if stem == "metrics" else f"{stem}.scores.txt"


@dataclass
class EvalConfig:
    model: str
    data: str
    trials: str
    score_norm: str = "none"  # none | asnorm
    cohort: str | None = None
    top_n: int = 300
    device: str = "cpu"
    show_progress: bool = True


def evaluate_model(cfg: EvalConfig) -> dict[str, Any]:
    """Embed the trial utterances, score by cosine (cohort mean subtracted when a cohort is given),
    optionally AS-norm, and return ``{"eer", "min_dcf", ...}`` (EER as a fraction)."""
    if cfg.score_norm not in SCORE_NORMS:
        raise KdcacheError(f"--score-norm {cfg.score_norm}: choose {' or '.join(SCORE_NORMS)}")
    if cfg.score_norm == "asnorm" and not cfg.cohort:
        raise KdcacheError("--score-norm asnorm needs --cohort DIR (a corpus, e.g. the training set)")
    device = torch.device(cfg.device)
    if Path(cfg.model).suffix.lower() == ".onnx":  # an exported model, scored as it ships
        from kdcache.models.onnx_model import load_onnx_model

        model, config = load_onnx_model(cfg.model, device)
    else:
        model, config = load_model_dir(cfg.model, map_location=device)
    features = FeatureConfig.from_dict(config.features)
    corpus = load_corpus(cfg.data)
    trials = check_trials(cfg.trials, corpus, cfg.data)
    needed = sorted({t.enroll for t in trials} | {t.test for t in trials})
    ids, emb = extract_embeddings(model, corpus, features, device, ids=needed, show_progress=cfg.show_progress)
    mean = None
    cohort_emb = None
    if cfg.cohort:
        cohort_corpus = load_corpus(cfg.cohort)
        c_ids, c_emb = extract_embeddings(model, cohort_corpus, features, device, show_progress=cfg.show_progress)
        mean = c_emb.mean(0)
        cohort_emb = speaker_means(c_ids, c_emb - mean, cohort_corpus)
    # Centred once here: the cosine of centred embeddings is cosine_scores(..., mean), and the cohort
    # (speaker means of centred embeddings) is compared with centred embeddings.
    table = EmbeddingTable(ids, emb - mean if mean is not None else emb)
    scores = score_trials(
        table, [t.enroll for t in trials], [t.test for t in trials],
        cohort_emb=cohort_emb if cfg.score_norm == "asnorm" else None, top_n=cfg.top_n,
    )
    labels = np.array([t.target for t in trials], dtype=bool)
    scores_np = scores.double().numpy()
    metrics = TrialMetrics({
        "eer": float(compute_eer(scores_np, labels)),
        "min_dcf": float(compute_min_dcf(scores_np, labels, p_target=0.01)),
        "p_target": 0.01,
        "num_trials": len(trials),
        "num_target": int(labels.sum()),
        "score_norm": cfg.score_norm,
        "model": str(cfg.model),
        "trials": str(cfg.trials),
        "arch": config.arch,
        "cache_fingerprint": config.extra.get("cache_fingerprint"),
    })
    metrics.trial_scores = [(t.enroll, t.test, float(s), t.target) for t, s in zip(trials, scores_np)]
    return metrics


class TrialMetrics(dict):
    """The metrics dict of :func:`evaluate_model`, carrying ``trial_scores``: ``(enroll, test, score,
    is_target)`` per trial, which :func:`write_metrics` saves next to the JSON."""

    trial_scores: list[tuple[str, str, float, bool]] | None = None


def check_trials(trials_path: str | Path, corpus: Corpus | str | Path, data_name: str | None = None) -> list[Trial]:
    """The trials of ``trials_path``, checked against the corpus that holds their utterances: every
    utterance present, target and non-target trials both present (EER needs both). Cheap (audio headers
    only), so train-student runs it before training."""
    if not isinstance(corpus, Corpus):
        data_name = data_name or str(corpus)
        corpus = load_corpus(corpus)
    trials = read_trials(trials_path)
    for line, trial in enumerate(trials, start=1):
        for utt in (trial.enroll, trial.test):
            if utt not in corpus:
                raise KdcacheError(f"{trials_path}:{line}: utterance {utt!r} is not in the corpus {data_name}")
    targets = sum(t.target for t in trials)
    if targets in (0, len(trials)):
        missing = "target" if targets == 0 else "non-target"
        raise KdcacheError(f"{trials_path}: no {missing} trials among {len(trials)}; EER and minDCF need both")
    return trials


def write_metrics(metrics: dict[str, Any], path: str | Path) -> None:
    """Write ``metrics`` as JSON to ``path``; per-trial scores, when ``metrics`` carries them, go to
    ``scores.txt`` beside it (:func:`scores_name`) in WeSpeaker's format (``enroll test score target|nontarget`` per line)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    trial_scores = getattr(metrics, "trial_scores", None)
    if trial_scores is not None:
        name = scores_name(path)
        metrics = {**metrics, "scores": name}
        lines = (f"{e} {t} {s:.7f} {'target' if y else 'nontarget'}\n" for e, t, s, y in trial_scores)
        Path(path).with_name(name).write_text("".join(lines), encoding="utf-8")
    Path(path).write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
