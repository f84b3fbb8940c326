"""``kdcache ig-steps``: how many integrated-gradient steps a saliency cache needs.

A saliency cache's cost grows with ``--ig-steps`` (each step is a forward and backward pass of the
teacher per crop), so the step count is worth choosing from a measurement. For the same crops and each
step count n, this computes the IG maps exactly as ``build-teacher-cache`` does (the margin-free target
logit, zero baseline, right Riemann sum, one map per ``--ig-durations`` entry, float16-rounded) and:

- **completeness error**: IG's completeness axiom says the map of a segment sums to
  ``f_t(segment) - f_t(0)`` (``f_t`` the target logit ``s * cos``); the Riemann sum misses it by
  ``|sum A - Δf|``. Given in logit units and relative to ``|Δf|``, averaged over a crop's segments;
- **map correlation** with the map at the most steps (Pearson over all bins of a crop);
- what IML-KD's students are taught: the teacher on the integrated input built from the map
  (:func:`kdcache.distill.integrated.integrated_inputs`): its top-1 on the target speaker, and
  ``KL(p_ref || p_n)`` in nats, p the teacher's softmax over the margin-free logits on the integrated
  input at n steps and at the most steps;
- the CPU seconds the maps took per crop (process time: all of the process's threads).

Every statistic is a mean over crops with a normal 95% interval (1.96 standard errors).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcache.data.corpus import load_corpus
from kdcache.data.features import FeatureConfig
from kdcache.distill.integrated import INTEGRATED_INPUT_MODES, integrated_inputs
from kdcache.distill.losses import row_kl
from kdcache.errors import KdcacheError
from kdcache.evaluate.saliency_eval import map_correlation
from kdcache.evaluate.saliency_report import centre_crop_fbank, crop_mean_ci, select_utterances
from kdcache.models.checkpoint import load_model_dir
from kdcache.progress import progress_bar
from kdcache.teacher.saliency import TargetLogit, duration_frames, multi_duration_saliency, segment_bounds

JSON_FILE = "ig_steps.json"
PNG_FILE = "ig_steps.png"
MEASURES = ("completeness_error", "completeness_error_relative", "map_correlation", "integrated_top1",
            "integrated_kl", "cpu_seconds_per_crop")


@dataclass
class IgStepsConfig:
    model: str
    data: str
    out: str
    steps: tuple[int, ...] = (5, 10, 25, 50)
    utterances: int = 32
    crop_seconds: float = 1.0
    ig_durations: tuple[float, ...] = (1.0,)
    integrated_input: str = "weighted"
    seed: int = 0
    batch_size: int = 8
    ig_internal_batch_size: int | None = 64
    device: str = "cpu"
    show_progress: bool = True
    label: str = ""  # the model's name in the plot [default: its folder name]

    def check(self) -> None:
        if len(self.steps) < 2 or any(n < 2 for n in self.steps) or len(set(self.steps)) != len(self.steps):
            raise KdcacheError(f"--steps {','.join(map(str, self.steps))}: give at least two distinct step counts, "
                               "each >= 2 (the largest is the reference)")
        if self.integrated_input not in INTEGRATED_INPUT_MODES:
            raise KdcacheError(f"--integrated-input {self.integrated_input}: choose one of "
                               f"{', '.join(INTEGRATED_INPUT_MODES)}")
        for name in ("utterances", "batch_size"):
            if getattr(self, name) < 1:
                raise KdcacheError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.crop_seconds > 0 or not self.ig_durations or any(not d > 0 for d in self.ig_durations):
            raise KdcacheError("ig-steps: --crop-seconds and every --ig-durations value must be positive")


@torch.no_grad()
def completeness_errors(forward: torch.nn.Module, feats: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor,
                        segment_frames: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per crop, the mean over all segments of all durations of ``|sum A - Δf|`` and of ``|sum A - Δf| / |Δf|``.

    ``feats`` [B, T, F], ``targets`` [B], ``maps`` [B, n_dur, T, F] laid out as
    :func:`multi_duration_saliency` lays them; ``forward`` maps fbank to logits [B, C] (the IG target
    function). Returns two float64 tensors [B] (logit units, and relative).
    """
    index = targets.long().view(-1, 1)
    absolute, relative = [], []
    for d_index, d_frames in enumerate(segment_frames):
        for lo, hi in segment_bounds(feats.shape[1], int(d_frames)):
            segment = feats[:, lo:hi].float()
            delta = (forward(segment).gather(1, index) - forward(torch.zeros_like(segment)).gather(1, index)).squeeze(1)
            gap = (maps[:, d_index, lo:hi].sum(dim=(1, 2)) - delta).double().abs()
            absolute.append(gap)
            relative.append(gap / delta.double().abs().clamp_min(1e-12))
    return torch.stack(absolute, 1).mean(1), torch.stack(relative, 1).mean(1)


def kl_divergence(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(reference) || softmax(logits))`` per row of [B, C] logits, in nats; float64 [B]."""
    return row_kl(torch.log_softmax(reference_logits.double(), dim=1), torch.log_softmax(logits.double(), dim=1))


def step_measures(model: torch.nn.Module, feats: torch.Tensor, targets: torch.Tensor, steps: Sequence[int],
                  segment_frames: Sequence[int], mode: str, internal_batch_size: int | None) -> dict[int, dict]:
    """Every measure of the module docstring for a batch ``feats`` [B, T, F]: {n: {measure: float64 [B]}}.

    The reference of the correlation and the KL is the largest of ``steps``.
    """
    forward = TargetLogit(model)
    maps, seconds = {}, {}
    for n in steps:
        start = time.process_time()
        maps[n] = multi_duration_saliency(model, feats, targets, segment_frames, n, internal_batch_size).half().float()
        seconds[n] = (time.process_time() - start) / feats.shape[0]
    with torch.no_grad():
        logits = {n: forward(integrated_inputs(feats, maps[n], mode)) for n in steps}
    reference = max(steps)
    out = {}
    for n in steps:
        absolute, relative = completeness_errors(forward, feats, targets, maps[n], segment_frames)
        out[n] = {
            "completeness_error": absolute, "completeness_error_relative": relative,
            "map_correlation": map_correlation(maps[n], maps[reference]),
            "integrated_top1": (logits[n].argmax(1) == targets).double(),
            "integrated_kl": kl_divergence(logits[reference], logits[n]),
            "cpu_seconds_per_crop": torch.full((feats.shape[0],), seconds[n], dtype=torch.float64),
        }
    return out


def run_ig_steps(cfg: IgStepsConfig) -> dict[str, Any]:
    """The measures for every step count on ``cfg.utterances`` centre crops; writes JSON and PNG under ``cfg.out``."""
    cfg.check()
    steps = sorted(cfg.steps)
    device = torch.device(cfg.device)
    model, config = load_model_dir(cfg.model, map_location=device)
    model.eval()
    features = FeatureConfig.from_dict(config.features)
    num_samples = features.crop_num_samples(cfg.crop_seconds)
    segment_frames = duration_frames(features, cfg.crop_seconds, cfg.ig_durations)
    utterances = select_utterances(load_corpus(cfg.data), set(config.speakers), cfg.utterances, cfg.seed)
    class_of = {s: i for i, s in enumerate(config.speakers)}
    parts: list[dict[int, dict]] = []
    for begin in progress_bar(range(0, len(utterances), cfg.batch_size), desc=f"ig-steps {Path(cfg.model).name}",
                              unit="batch", disable=not cfg.show_progress, mininterval=1.0):
        chunk = utterances[begin:begin + cfg.batch_size]
        feats = torch.stack([centre_crop_fbank(u.path, num_samples, features) for u in chunk]).to(device)
        targets = torch.tensor([class_of[u.speaker] for u in chunk], device=device)
        parts.append(step_measures(model, feats, targets, steps, segment_frames, cfg.integrated_input,
                                   cfg.ig_internal_batch_size))
    rows = []
    for n in steps:
        row: dict[str, Any] = {"steps": n}
        for measure in MEASURES:
            values = torch.cat([p[n][measure] for p in parts]).cpu().numpy()
            row[measure] = crop_mean_ci(values[np.isfinite(values)])
        rows.append(row)
    settings = asdict(cfg)
    settings.pop("show_progress")
    settings["steps"] = steps
    summary = {"settings": settings, "label": cfg.label or Path(cfg.model).name, "reference_steps": max(steps),
               "duration_frames": segment_frames, "utterances": [u.id for u in utterances], "rows": rows}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    plot_ig_steps([summary], out / PNG_FILE)
    return summary


def plot_ig_steps(summaries: Sequence[dict[str, Any]], path: Path) -> None:
    """Three panels against the step count: relative completeness error, map correlation, integrated-input KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    panels = (("completeness_error_relative", "completeness error / |Δf|", True),
              ("map_correlation", "correlation with the map at the most steps", False),
              ("integrated_kl", "KL to the most steps, integrated input (nats)", False))
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.8))
    for ax, (measure, title, log_y) in zip(axes, panels):
        for s in summaries:
            x = [r["steps"] for r in s["rows"]]
            y = np.array([r[measure]["mean"] for r in s["rows"]])
            err = np.array([r[measure]["ci95"] for r in s["rows"]])
            ax.errorbar(x, y, yerr=np.nan_to_num(err), marker="o", capsize=3, label=s["label"])
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["steps"] for s in summaries for r in s["rows"]}))
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("IG steps")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
