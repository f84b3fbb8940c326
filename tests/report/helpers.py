"""Fake finished runs (config.json, metrics.json, scores.txt, train_log.jsonl) for report tests."""

from __future__ import annotations

import json
from pathlib import Path

from kdcache.models.checkpoint import ModelConfig

TINY_XVECTOR = {"hid_dim": 16, "stats_dim": 32, "embed_dim": 8}


def write_run(path: Path, *, loss: str | None, seed: int, eer: float, min_dcf: float, trials: Path,
              data: str = "/corpus/train", options: dict | None = None, scores: list[tuple[float, bool]] | None = None,
              log: list[dict] | None = None, with_metrics: bool = True, cache: str | None = None) -> Path:
    """A run folder; ``loss`` None makes a teacher."""
    path.mkdir(parents=True)
    training = {"seed": seed, "epochs": 3, "batch_size": 64, "lr": 0.1, "final_lr": 1e-3, "margin": 0.0, "data": data}
    if loss is None:
        extra = {"training": training}
    else:
        training |= {"loss": loss, "temperature": 1.0, "beta": 2.0, "alpha": 1.0, "kd_weight": 1.0} | (options or {})
        extra = {"cache_fingerprint": "f" * 64, "cache": cache or str(path.parent / "no-cache.zarr"), "training": training}
    config = ModelConfig(arch="xvector", model_args=dict(TINY_XVECTOR), embed_dim=8, speakers=[f"s{i}" for i in range(5)],
                         features={"num_mel_bins": 80}, extra=extra)
    (path / "config.json").write_text(json.dumps(config.to_json()))
    if with_metrics:
        metrics = {"eer": eer, "min_dcf": min_dcf, "trials": str(trials)}
        if scores is not None:
            metrics["scores"] = "scores.txt"
            (path / "scores.txt").write_text("".join(
                f"e{k} t{k} {s} {'target' if y else 'nontarget'}\n" for k, (s, y) in enumerate(scores)))
        (path / "metrics.json").write_text(json.dumps(metrics))
    if log:
        (path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return path
