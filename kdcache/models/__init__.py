"""Speaker models with WeSpeaker's parameter names, the AAM head and a name-based factory.

Every model maps fbank features [B, T, F] to embeddings [B, embed_dim] and has ``embed_dim``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch.nn as nn

from kdcache.errors import KdcacheError
from kdcache.models.campplus import CAMPPlus
from kdcache.models.ecapa_tdnn import ECAPA_TDNN_GLOB_c512, ECAPA_TDNN_GLOB_c1024
from kdcache.models.projection import ArcMarginProduct, MarginScheduler, attach_head
from kdcache.models.resnet import ResNet34, ResNet293
from kdcache.models.tdnn import XVEC

MAX_INT_ARG = 1 << 16  # widths, dims and channel counts: far above any real model, far below a typo's 1e9

MODEL_NAMES = ("xvector", "resnet34", "resnet293", "ecapa_c512", "ecapa_c1024", "campplus")

_RESNET_ARGS = {"feat_dim": 80, "embed_dim": 256, "pooling_func": "TSTP",
                "two_emb_layer": False, "m_channels": 32}

# name -> (constructor, full argument dict with the WeSpeaker recipe's values)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    "xvector": (XVEC, {"feat_dim": 80, "hid_dim": 512, "stats_dim": 1500, "embed_dim": 512,
                       "pooling_func": "TSTP"}),
    "resnet34": (ResNet34, dict(_RESNET_ARGS)),
    "resnet293": (ResNet293, dict(_RESNET_ARGS)),
    "ecapa_c512": (ECAPA_TDNN_GLOB_c512, {"feat_dim": 80, "embed_dim": 192, "pooling_func": "ASTP",
                                          "emb_bn": False, "channels": 512}),
    "ecapa_c1024": (ECAPA_TDNN_GLOB_c1024, {"feat_dim": 80, "embed_dim": 192,
                                            "pooling_func": "ASTP", "emb_bn": False,
                                            "channels": 1024}),
    "campplus": (CAMPPlus, {"feat_dim": 80, "embed_dim": 512, "pooling_func": "TSTP",
                            "growth_rate": 32, "bn_size": 4, "init_channels": 128,
                            "config_str": "batchnorm-relu"}),
}


def _lookup(name: str) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    if name not in _REGISTRY:
        raise KdcacheError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")
    return _REGISTRY[name]


def default_model_args(name: str) -> dict[str, Any]:
    """Full (JSON-serialisable) argument dict of architecture `name` with WeSpeaker's values."""
    return dict(_lookup(name)[1])


def _check_arg(name: str, key: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_INT_ARG
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = {bool: "a boolean", int: f"an integer in [1, {MAX_INT_ARG}]",
                float: "a finite number"}.get(type(default), "a string")
        raise KdcacheError(f"model {name!r}: argument {key}={value!r} must be {kind}")


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build architecture `name`; kwargs override its default arguments.

    The model gets ``arch`` and ``model_args`` (the full argument dict) attributes.
    """
    factory, defaults = _lookup(name)
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise KdcacheError(
            f"model {name!r}: unknown argument(s) {', '.join(unknown)}; "
            f"valid: {', '.join(defaults)}")
    args = dict(defaults)
    args.update(kwargs)
    for key, value in args.items():
        _check_arg(name, key, value, defaults[key])
    try:
        model = factory(**args)
    except RuntimeError as err:  # torch's allocator: "can't allocate memory: you tried to allocate N bytes"
        if "allocate" not in str(err):
            raise
        raise KdcacheError(f"model {name!r} with {kwargs}: its weights need more memory than this machine has; "
                           "choose smaller arguments") from err
    model.arch = name
    model.model_args = args
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of the speaker model, excluding an attached ``projection`` head."""
    return sum(
        p.numel() for n, p in model.named_parameters()
        if not (n.startswith("projection.") or n.startswith("module.projection."))
    )


__all__ = [
    "MODEL_NAMES", "ArcMarginProduct", "MarginScheduler", "attach_head", "build_model",
    "count_parameters", "default_model_args",
]
