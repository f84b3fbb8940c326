"""Export a kdcache model directory for use outside kdcache: a WeSpeaker model folder, or ONNX.

- ``wespeaker``: ``avg_model.pt`` (the plain state_dict, AAM head as ``projection.weight``; kdcache's
  models use WeSpeaker's parameter names) and ``config.yaml`` (``model``, ``model_args``,
  ``projection_args``, ``margin_update``, ``dataset_args`` with the fbank settings), the layout of
  WeSpeaker's pretrained models, loaded by ``get_speaker_model(config['model'])(**config['model_args'])``
  and ``load_checkpoint``. ``speakers.txt`` (the class order) rides along for ``kdcache import-wespeaker``.
- ``onnx``: the embedding model as WeSpeaker's ``wespeaker/bin/export_onnx.py`` writes it: opset 14,
  input ``feats`` [B, T, num_mel_bins] (fbank after CMN), output ``embs`` [B, embed_dim] (minus an
  optional mean vector, zeros by default), dynamic axes ``feats: {0: B, 1: T}``, ``embs: {0: B}``.
  The fbank settings, architecture and arguments are stored in the model's ``metadata_props``
  (:data:`ONNX_META_FEATURES` etc.), so ``kdcache evaluate --model file.onnx`` computes the same input.

Every file is written under a temporary name and renamed; errors leave nothing behind.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcache.data.features import FeatureConfig
from kdcache.errors import KdcacheError
from kdcache.models.checkpoint import ModelConfig, load_model_dir, strip_prefix
from kdcache.models.wespeaker_config import wespeaker_config

FORMATS = ("wespeaker", "onnx")
ONNX_OPSET = 14
ONNX_INPUT = "feats"
ONNX_OUTPUT = "embs"
ONNX_DYNAMIC_AXES = {ONNX_INPUT: {0: "B", 1: "T"}, ONNX_OUTPUT: {0: "B"}}
ONNX_META_FEATURES = "kdcache.features"  # JSON of FeatureConfig
ONNX_META_ARCH = "kdcache.arch"
ONNX_META_MODEL_ARGS = "kdcache.model_args"  # JSON
ONNX_META_EMBED_DIM = "kdcache.embed_dim"
ONNX_META_INPUT = "kdcache.input"


class EmbeddingExport(nn.Module):
    """WeSpeaker's export wrapper: feats [B, T, F] -> embeddings [B, D] minus ``mean_vec`` [D]."""

    def __init__(self, model: nn.Module, mean_vec: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        dim = int(model.embed_dim)
        self.register_buffer("mean_vec", torch.zeros(dim) if mean_vec is None else mean_vec.float().reshape(dim))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        out = self.model(feats)
        emb = out[-1] if isinstance(out, tuple) else out
        return emb - self.mean_vec


def _replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def _crop_frames(config: ModelConfig) -> int:
    training = config.extra.get("training") or {}
    seconds = training.get("crop_seconds", 2.0)
    try:
        return FeatureConfig.from_dict(config.features).frames_for_seconds(float(seconds))
    except (TypeError, ValueError):
        return 200


def _margin_epochs(config: ModelConfig) -> tuple[int, int]:
    """The 1-based margin ramp epochs of the training run (WeSpeaker's 20 and 40 when unknown)."""
    training = config.extra.get("training") or {}
    start, full = training.get("margin_start_epoch"), training.get("margin_full_epoch")
    epochs = training.get("epochs")
    if epochs and (start is None or full is None):
        start = 1 + round(20 * int(epochs) / 150) if start is None else start
        full = max(int(start), 1 + round(40 * int(epochs) / 150)) if full is None else full
    return (int(start or 20), int(full or 40))


def export_wespeaker(model_dir: str | Path, out: str | Path) -> tuple[Path, list[str]]:
    """Write ``out/avg_model.pt``, ``out/config.yaml`` and ``out/speakers.txt``.

    Returns the folder and warnings (arguments stock WeSpeaker's named constructors cannot take)."""
    import yaml

    model, config = load_model_dir(model_dir)
    yaml_config, extras = wespeaker_config(
        config.arch, config.model_args, config.embed_dim, config.num_classes, config.head_scale,
        config.head_margin, FeatureConfig.from_dict(config.features), crop_frames=_crop_frames(config),
        margin_epochs=_margin_epochs(config),
    )
    warnings_out = []
    if extras:
        warnings_out.append(
            f"model_args {', '.join(extras)}: stock WeSpeaker's {yaml_config['model']}() does not take "
            f"{'this argument' if len(extras) == 1 else 'these arguments'} (it fixes the width), so "
            "only a WeSpeaker patched to pass it through can build this narrow model; kdcache import-wespeaker can")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KdcacheError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in strip_prefix(model.state_dict()).items()}
    files = {
        "avg_model.pt": lambda tmp: torch.save(state, tmp),
        "config.yaml": lambda tmp: tmp.write_text(
            "# WeSpeaker model config written by kdcache export (loads with get_speaker_model(config['model'])"
            "(**config['model_args']))\n" + yaml.safe_dump(yaml_config, sort_keys=False), encoding="utf-8"),
        "speakers.txt": lambda tmp: tmp.write_text("".join(s + "\n" for s in config.speakers), encoding="utf-8"),
    }
    for name, write in files.items():
        tmp = out / (name + ".tmp")
        write(tmp)
        _replace(tmp, out / name)
    return out, warnings_out


def onnx_bytes(model: nn.Module, feat_dim: int, mean_vec: torch.Tensor | None = None, frames: int = 200) -> bytes:
    """The ONNX serialisation of ``EmbeddingExport(model)`` with WeSpeaker's names and dynamic axes."""
    wrapper = EmbeddingExport(model, mean_vec).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation; it is WeSpeaker's
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, torch.ones(1, frames, feat_dim), buffer, do_constant_folding=True, opset_version=ONNX_OPSET,
            input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT], dynamic_axes=ONNX_DYNAMIC_AXES, dynamo=False,
        )
    return buffer.getvalue()


def export_onnx(model_dir: str | Path, out: str | Path, mean_vec: torch.Tensor | None = None) -> Path:
    """Write the embedding model of ``model_dir`` to the ONNX file ``out`` (fbank settings in its metadata)."""
    try:
        import onnx
    except ImportError:
        raise KdcacheError("--format onnx needs the onnx package: pip install 'kdcache[export]'") from None
    model, config = load_model_dir(model_dir)
    out = Path(out)
    if out.is_dir():
        raise KdcacheError(f"{out}: is a folder; give the .onnx file to write")
    features = FeatureConfig.from_dict(config.features)
    proto = onnx.load_from_string(onnx_bytes(model, features.num_mel_bins, mean_vec))
    meta: dict[str, Any] = {
        ONNX_META_FEATURES: json.dumps(features.to_dict()),
        ONNX_META_ARCH: config.arch,
        ONNX_META_MODEL_ARGS: json.dumps(config.model_args),
        ONNX_META_EMBED_DIM: str(config.embed_dim),
        ONNX_META_INPUT: "feats [B, T, num_mel_bins]: Kaldi fbank (int16-scaled waveform, hamming), minus its "
                         "mean over time (CMN); output embs [B, embed_dim]",
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "kdcache"
    onnx.checker.check_model(proto)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString())
    _replace(tmp, out)
    return out


def export_model(model_dir: str | Path, fmt: str, out: str | Path) -> tuple[Path, list[str]]:
    """``kdcache export``: returns the path written and any warnings."""
    if fmt not in FORMATS:
        raise KdcacheError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if fmt == "wespeaker":
        return export_wespeaker(model_dir, out)
    return export_onnx(model_dir, out), []
