"""Run an exported ONNX embedding model (``kdcache export --format onnx``) with onnxruntime.

:func:`load_onnx_model` gives a module with the interface of a kdcache speaker model (feats
[B, T, F] -> embeddings [B, D]) and a :class:`ModelConfig` rebuilt from the file's metadata, so
evaluation scores a deployed model exactly as it ships.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdcache.data.features import FeatureConfig
from kdcache.errors import KdcacheError
from kdcache.models.checkpoint import ModelConfig
from kdcache.models.export import (
    ONNX_INPUT,
    ONNX_META_ARCH,
    ONNX_META_EMBED_DIM,
    ONNX_META_FEATURES,
    ONNX_META_MODEL_ARGS,
    ONNX_OUTPUT,
)


class OnnxEmbedder(nn.Module):
    """An onnxruntime session behind a module's forward: feats [B, T, F] float32 -> embs [B, D] (CPU)."""

    def __init__(self, session, embed_dim: int) -> None:
        super().__init__()
        self.session = session
        self.embed_dim = embed_dim

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(feats.detach().to("cpu", torch.float32).numpy())
        (emb,) = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: x})
        return torch.from_numpy(emb)


def load_onnx_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[OnnxEmbedder, ModelConfig]:
    """Open ``path`` with onnxruntime (CUDA provider for a cuda ``device`` when available)."""
    path = Path(path)
    if not path.is_file():
        raise KdcacheError(f"{path}: ONNX file not found")
    try:
        import onnxruntime as ort
    except ImportError:
        raise KdcacheError("evaluating an ONNX model needs onnxruntime: pip install 'kdcache[export]'") from None
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(torch.get_num_threads(), 1)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as bad:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise KdcacheError(f"{path}: not a loadable ONNX model ({' '.join(str(bad).split())[:200]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    names_in = [i.name for i in session.get_inputs()]
    names_out = [o.name for o in session.get_outputs()]
    if names_in != [ONNX_INPUT] or ONNX_OUTPUT not in names_out:
        raise KdcacheError(f"{path}: expected input '{ONNX_INPUT}' and output '{ONNX_OUTPUT}' (WeSpeaker's "
                           f"export_onnx.py names), found inputs {names_in} and outputs {names_out}")
    if ONNX_META_FEATURES not in meta:
        raise KdcacheError(f"{path}: no fbank settings in its metadata ({ONNX_META_FEATURES}); export it with "
                           "kdcache export --format onnx")
    try:
        features = FeatureConfig.from_dict(json.loads(meta[ONNX_META_FEATURES]))
        model_args = json.loads(meta.get(ONNX_META_MODEL_ARGS, "{}"))
        embed_dim = int(meta.get(ONNX_META_EMBED_DIM) or session.get_outputs()[0].shape[-1])
    except (ValueError, TypeError) as bad:
        raise KdcacheError(f"{path}: malformed kdcache metadata ({bad})") from None
    config = ModelConfig(
        arch=meta.get(ONNX_META_ARCH, "onnx"), model_args=model_args, embed_dim=embed_dim, speakers=[],
        features=features.to_dict(), extra={"onnx": path.name},
    )
    return OnnxEmbedder(session, embed_dim).eval(), config
