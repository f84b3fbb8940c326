"""A model directory's ``config.json``, validated field by field and against the weights it describes.

``parse_model_config`` is the one reader of the document (``ModelConfig.from_json`` calls it);
``check_config_matches_model`` runs once the weights are loaded, so a config whose ``embed_dim``,
speaker count or feature size disagrees with the network is refused where it is read, in one line,
instead of deep inside a cache build (or silently, in ``evaluate``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from kdcache.data.settings import parse_features
from kdcache.errors import KdcacheError
from kdcache.fields import Fields

CONFIG_FIELDS = ("kdcache_model_format", "arch", "model_args", "embed_dim", "head", "features", "speakers", "extra")


def parse_model_config(data: Any, source: str):
    """config.json (parsed JSON) -> ModelConfig; KdcacheError naming ``source`` and the field."""
    from kdcache.models.checkpoint import MODEL_FORMAT_VERSION, ModelConfig

    if not isinstance(data, dict):
        raise KdcacheError(f"{source}: expected a JSON object")
    version = data.get("kdcache_model_format")
    if version != MODEL_FORMAT_VERSION or isinstance(version, bool):
        raise KdcacheError(
            f"{source}: model format version {version!r} is not supported "
            f"(this kdcache reads version {MODEL_FORMAT_VERSION})"
        )
    top = Fields(data, source, "config")
    top.only(CONFIG_FIELDS)
    arch = top.string("arch")
    model_args = top.obj("model_args")
    embed_dim = top.integer("embed_dim", 1, 1 << 16)
    head = top.obj("head")
    head.string("type", choices=("arc_margin",), default="arc_margin")
    scale = head.number("scale", 0, 1e4, min_open=True)
    margin = head.number("margin", 0, 1.5, default=0.2)
    features = parse_features(top.obj("features"))
    speakers = top.array("speakers")
    if not speakers or not all(isinstance(s, str) and s and not any(c.isspace() for c in s) for s in speakers):
        top.fail("config.speakers must be a non-empty array of speaker ids (strings without spaces)")
    if len(set(speakers)) != len(speakers):
        duplicate = next(s for s in speakers if speakers.count(s) > 1)
        top.fail(f"config.speakers lists {duplicate!r} twice")
    extra = top.obj("extra", default=None)
    if extra is not None:
        extra.string("weights_sha256", default=None, nullable=True)
    return ModelConfig(
        arch=arch, model_args=dict(model_args.data), embed_dim=embed_dim, speakers=list(speakers),
        features=features.to_dict(), head_scale=scale, head_margin=margin,
        extra=dict(extra.data) if extra is not None else {},
    )


def check_config_matches_model(config, model: nn.Module, source: str) -> None:
    """The config's embedding size, class count and feature size must be those of the loaded network."""
    width = int(getattr(model, "embed_dim", config.embed_dim))
    if config.embed_dim != width:
        raise KdcacheError(f"{source}: config.embed_dim is {config.embed_dim} but the model's embeddings have "
                           f"{width} dimensions (fix embed_dim in config.json)")
    head = getattr(model, "projection", None)
    weight = getattr(head, "weight", None)
    if weight is not None and tuple(weight.shape) != (config.num_classes, width):
        raise KdcacheError(f"{source}: the head has shape {tuple(weight.shape)} but config.json lists "
                           f"{config.num_classes} speakers of {width}-dimensional embeddings")
    feat_dim = (getattr(model, "model_args", None) or {}).get("feat_dim")
    bins = config.features.get("num_mel_bins")
    if feat_dim is not None and bins != feat_dim:
        raise KdcacheError(f"{source}: config.features.num_mel_bins is {bins} but the model takes {feat_dim} "
                           "features per frame (model_args.feat_dim)")
