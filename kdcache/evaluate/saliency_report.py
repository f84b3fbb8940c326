"""``kdcache saliency-eval``: deletion / insertion curves of model directories on corpus crops.

Every model sees the same crops: ``utterances`` utterances drawn (seeded) from the corpus among the
speakers all models know, each cut to its centre ``crop_seconds`` (tiled when shorter, as WeSpeaker
pads), fbank with the models' feature settings. The first model is the reference (the teacher): each
other model's mean curves are compared with its curves, and its frame saliency with the reference's
(Pearson correlation per crop, averaged). Writes ``saliency_eval.json`` and ``saliency_eval.png``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcache.data.audio import read_crop
from kdcache.data.corpus import load_corpus
from kdcache.data.features import FeatureConfig, compute_fbank
from kdcache.errors import KdcacheError
from kdcache.evaluate.saliency_eval import FRAME_SCORES, map_correlation, saliency_curves
from kdcache.models.checkpoint import load_model_dir
from kdcache.progress import progress_bar
from kdcache.teacher.saliency import TargetLogit

JSON_FILE = "saliency_eval.json"
PNG_FILE = "saliency_eval.png"


@dataclass
class SaliencyEvalConfig:
    models: list[str]
    data: str
    out: str
    labels: list[str] = field(default_factory=list)  # one per model; default: the folder names
    utterances: int = 32
    crop_seconds: float = 2.0
    seed: int = 0
    ig_steps: int = 50
    points: int = 21
    frame_score: str = "sum"
    batch_size: int = 8
    ig_internal_batch_size: int | None = 64
    device: str = "cpu"
    show_progress: bool = True

    def check(self) -> None:
        if not self.models:
            raise KdcacheError("saliency-eval: give at least one --model")
        if self.labels and len(self.labels) != len(self.models):
            raise KdcacheError(f"--label given {len(self.labels)} times for {len(self.models)} --model")
        if self.frame_score not in FRAME_SCORES:
            raise KdcacheError(f"--frame-score {self.frame_score}: choose one of {', '.join(FRAME_SCORES)}")
        for name in ("utterances", "ig_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise KdcacheError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.crop_seconds > 0:
            raise KdcacheError(f"--crop-seconds must be positive, got {self.crop_seconds}")


def select_utterances(corpus, known: set[str], count: int, seed: int) -> list:
    """``count`` utterances (seeded random order) whose speaker every model knows."""
    usable = [u for u in corpus if u.speaker in known]
    if not usable:
        raise KdcacheError("saliency-eval: no utterance of the corpus belongs to a speaker the models know "
                           "(use the training corpus: the target class is the utterance's speaker)")
    order = np.random.default_rng(seed).permutation(len(usable))[:count]
    return [usable[i] for i in sorted(order)]


def centre_crop_fbank(path: Path, num_samples: int, features: FeatureConfig) -> torch.Tensor:
    """fbank [T, F] of the centre ``num_samples`` of a file (tiled from 0 when the file is shorter)."""
    import soundfile as sf

    total = sf.info(str(path)).frames
    start = max(0, (total - num_samples) // 2)
    return compute_fbank(read_crop(path, start, num_samples), features)


def _model_curves(model_dir: str, utterances: list, cfg: SaliencyEvalConfig) -> dict[str, Any]:
    device = torch.device(cfg.device)
    model, config = load_model_dir(model_dir, map_location=device)
    model.eval()
    features = FeatureConfig.from_dict(config.features)
    num_samples = features.crop_num_samples(cfg.crop_seconds)
    class_of = {s: i for i, s in enumerate(config.speakers)}
    logits_fn = TargetLogit(model)
    parts: list[dict[str, np.ndarray]] = []
    batches = range(0, len(utterances), cfg.batch_size)
    for begin in progress_bar(batches, desc=f"saliency-eval {Path(model_dir).name}", unit="batch",
                      disable=not cfg.show_progress, mininterval=1.0):
        chunk = utterances[begin:begin + cfg.batch_size]
        feats = torch.stack([centre_crop_fbank(u.path, num_samples, features) for u in chunk]).to(device)
        targets = torch.tensor([class_of[u.speaker] for u in chunk], device=device)
        parts.append(saliency_curves(logits_fn, feats, targets, cfg.ig_steps, cfg.points, cfg.frame_score,
                                     cfg.ig_internal_batch_size))
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "fractions"}
    joined["fractions"] = parts[0]["fractions"]
    return joined


def crop_mean_ci(values: np.ndarray) -> dict[str, float]:
    """Mean and the half-width of a normal 95% interval over crops (1.96 standard errors)."""
    v = np.asarray(values, dtype=np.float64)
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
    return {"mean": float(v.mean()), "ci95": float(half)}


def _row_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the Pearson correlation of a [N, T] and b [N, T] (rows with no spread skipped)."""
    r = map_correlation(torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b))).numpy()
    return float(r[np.isfinite(r)].mean()) if np.isfinite(r).any() else float("nan")


def run_saliency_eval(cfg: SaliencyEvalConfig) -> dict[str, Any]:
    """Curves of every model on the same crops; writes JSON and PNG under ``cfg.out``; returns the JSON."""
    cfg.check()
    corpus = load_corpus(cfg.data)
    known: set[str] | None = None
    for model_dir in cfg.models:
        _, config = load_model_dir(model_dir, map_location="cpu")
        known = set(config.speakers) if known is None else known & set(config.speakers)
    utterances = select_utterances(corpus, known or set(), cfg.utterances, cfg.seed)
    labels = cfg.labels or [Path(m).name for m in cfg.models]
    results = [_model_curves(m, utterances, cfg) for m in cfg.models]
    reference = results[0]
    models = []
    for label, model_dir, res in zip(labels, cfg.models, results):
        entry = {
            "label": label, "model": str(model_dir),
            "auc_deletion": crop_mean_ci(res["auc_deletion"]), "auc_insertion": crop_mean_ci(res["auc_insertion"]),
            "mean_deletion": res["deletion"].mean(0).tolist(), "mean_insertion": res["insertion"].mean(0).tolist(),
            "per_utterance": {"auc_deletion": res["auc_deletion"].tolist(),
                              "auc_insertion": res["auc_insertion"].tolist()},
        }
        if res is not reference:
            entry["vs_reference"] = {
                "reference": labels[0],
                "mean_abs_deletion_gap": float(np.abs(res["deletion"].mean(0) - reference["deletion"].mean(0)).mean()),
                "mean_abs_insertion_gap": float(np.abs(res["insertion"].mean(0) - reference["insertion"].mean(0)).mean()),
                "frame_saliency_correlation": _row_correlation(res["frame_scores"], reference["frame_scores"]),
            }
        models.append(entry)
    settings = asdict(cfg)
    settings.pop("show_progress")
    summary = {
        "settings": settings, "removal": "frames set to 0 (the CMN mean, the IG baseline)",
        "probability": "softmax of the margin-free AAM logits s*cos, at the utterance's speaker",
        "utterances": [u.id for u in utterances], "fractions": reference["fractions"].tolist(), "models": models,
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    plot_curves(summary, out / PNG_FILE)
    return summary


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    """Two panels (deletion, insertion): each model's mean target probability against the fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = summary["fractions"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for m in summary["models"]:
            auc = m[f"auc_{kind}"]["mean"]
            ax.plot(x, m[f"mean_{kind}"], marker=".", label=f"{m['label']} (AUC {auc:.3f})")
        verb = "removed" if kind == "deletion" else "inserted"
        ax.set_title(f"{kind}: most salient frames {verb} first")
        ax.set_xlabel(f"fraction of frames {verb}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("target-speaker probability (mean over crops)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
