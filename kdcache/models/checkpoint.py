"""Model directories: a state_dict (``model.pt``) plus a JSON config (``config.json``).

A model directory is what ``train-teacher`` and ``train-student`` write and what ``evaluate`` and
``build-teacher-cache`` read. The state_dict holds the speaker model with WeSpeaker's key names and
the AAM head as ``projection.weight`` (exactly the layout of a WeSpeaker ``avg_model.pt``). Nothing is
ever unpickled: weights load with ``torch.load(..., weights_only=True)``, metadata is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcache.errors import KdcacheError
from kdcache.models.config_check import check_config_matches_model

MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and interpret its outputs."""

    arch: str
    model_args: dict[str, Any]
    embed_dim: int
    speakers: list[str]
    features: dict[str, Any]
    head_scale: float = 32.0
    head_margin: float = 0.2
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.speakers)

    def to_json(self) -> dict[str, Any]:
        return {
            "kdcache_model_format": MODEL_FORMAT_VERSION,
            "arch": self.arch,
            "model_args": self.model_args,
            "embed_dim": self.embed_dim,
            "head": {"type": "arc_margin", "scale": self.head_scale, "margin": self.head_margin},
            "features": self.features,
            "speakers": self.speakers,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> "ModelConfig":
        """Parse and validate config.json (every field typed and in range; kdcache.models.config_check)."""
        from kdcache.models.config_check import parse_model_config

        return parse_model_config(data, source)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_only_reason(err: BaseException) -> str:
    """The line of torch's weights_only refusal that says what was refused (its message is a page long)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        tail = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        if tail:
            return tail[0][:200]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else "unsafe content"


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a plain ``{name: tensor}`` checkpoint without unpickling arbitrary objects."""
    if not path.is_file():
        raise KdcacheError(f"{path}: checkpoint file not found")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as refused:
        raise KdcacheError(
            f"{path}: refused to load: not a plain state_dict of tensors, and unpickling it could run code "
            f"(torch weights_only: {weights_only_reason(refused)})"
        ) from None
    except Exception as broken:  # noqa: BLE001 - garbage bytes fail in many ways (KeyError for text files)
        first = str(broken).strip().splitlines()[0] if str(broken).strip() else type(broken).__name__
        raise KdcacheError(f"{path}: not a readable torch checkpoint ({type(broken).__name__}: {first[:160]})") from broken
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise KdcacheError(f"{path}: not a plain state_dict (expected a mapping of names to tensors)")
    return state


def strip_prefix(state: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Drop a DDP ``module.`` prefix if every key carries it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def build_speaker_model(config: ModelConfig) -> nn.Module:
    """Build the architecture of ``config`` with its AAM head attached as ``projection``."""
    from kdcache.models import attach_head, build_model

    model = build_model(config.arch, **config.model_args)
    head = attach_head(model, config.num_classes, scale=config.head_scale)
    head.update(config.head_margin)
    return model


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load ``state`` into ``model``, naming missing/unexpected/mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with wrong shape (e.g. {k}: {tuple(state[k].shape)} "
                f"vs {tuple(expected[k].shape)})"
            )
        raise KdcacheError(f"{source}: weights do not fit the configured model: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def read_config(model_dir: Path) -> ModelConfig:
    """Read and validate ``model_dir/config.json``."""
    path = Path(model_dir) / CONFIG_FILE
    if not Path(model_dir).is_dir():
        raise KdcacheError(f"{model_dir}: model directory not found")
    if not path.is_file():
        raise KdcacheError(f"{path}: missing model config (a model directory holds {WEIGHTS_FILE} and {CONFIG_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as bad:
        raise KdcacheError(f"{path}: invalid JSON ({bad})") from None
    return ModelConfig.from_json(data, str(path))


def load_model_dir(model_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Load a model directory: the model (head attached, eval mode) and its config."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    model = build_speaker_model(config)
    weights = model_dir / WEIGHTS_FILE
    state = load_state_dict_file(weights)
    expected_sha = config.extra.get("weights_sha256")
    if expected_sha and sha256_file(weights) != expected_sha:
        raise KdcacheError(f"{weights}: sha256 differs from {CONFIG_FILE} (a partial write or a swapped file)")
    load_weights(model, strip_prefix(state), str(weights))
    check_config_matches_model(config, model, str(model_dir / CONFIG_FILE))
    model.to(map_location).eval()
    return model, config


def save_model_dir(model_dir: str | Path, model: nn.Module, config: ModelConfig) -> Path:
    """Write ``model.pt`` and ``config.json`` atomically (temporary names, then rename).

    The config records the weights' sha256 in ``extra['weights_sha256']``.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in strip_prefix(model.state_dict()).items()}
    weights_tmp = model_dir / (WEIGHTS_FILE + ".tmp")
    torch.save(state, weights_tmp)
    config.extra["weights_sha256"] = sha256_file(weights_tmp)
    config_tmp = model_dir / (CONFIG_FILE + ".tmp")
    config_tmp.write_text(json.dumps(config.to_json(), indent=1) + "\n", encoding="utf-8")
    os.replace(weights_tmp, model_dir / WEIGHTS_FILE)
    os.replace(config_tmp, model_dir / CONFIG_FILE)
    return model_dir


def save_trained_model(model_dir: str | Path, model: nn.Module, *, speakers: list[str], features: dict[str, Any],
                       margin: float, extra: dict[str, Any]) -> Path:
    """Save a model trained by kdcache (made by ``build_model``, which records ``arch`` and the full
    ``model_args``; its AAM head attached as ``projection``) as a model directory; ``margin``: the final
    AAM margin, ``extra``: provenance for ``config.json``."""
    config = ModelConfig(
        arch=model.arch,
        model_args=dict(model.model_args),
        embed_dim=int(model.embed_dim),
        speakers=list(speakers),
        features=features,
        head_scale=float(model.projection.scale),
        head_margin=margin,
        extra=extra,
    )
    return save_model_dir(model_dir, model, config)
