"""The cache's root attributes (``zarr.json`` -> ``attributes.kdcache``) and array metadata, validated.

A cache may come from anywhere (a pull, an HTTP server, a hand edit). Its attributes are read once, here,
into a ``CacheAttributes`` whose every field has the type and range the rest of kdcache relies on; any
other value is refused with one line naming the cache and the field. Provenance fields that only
``build-teacher-cache`` writes (teacher, features, crop plan, ...) are checked when present; a reader
that needs one asks ``CacheAttributes.features`` and gets a one-line error if it is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kdcache.data.features import FeatureConfig
from kdcache.data.settings import parse_features
from kdcache.errors import IntegrityError, KdcacheError
from kdcache.fields import Fields

from . import schema as sc
from .schema import CacheLayout

LAYOUT_FIELDS = ("num_rows", "num_classes", "embed_dim", "logits_mode", "saliency_shape", "integrated",
                 "shard_rows", "chunk_rows")
_MAX_ROWS = 1 << 40
_MAX_DIM = 1 << 24


@dataclass(frozen=True)
class CacheAttributes:
    """attrs["kdcache"] of a cache, checked. ``settings`` is the document itself (for provenance display
    and fingerprints); the typed fields are what code reads."""

    source: str
    settings: dict[str, Any]
    layout: CacheLayout
    num_utterances: int
    has_head: bool
    feature_config: FeatureConfig | None

    @property
    def features(self) -> FeatureConfig:
        """The teacher's fbank settings; KdcacheError if the cache does not record them."""
        if self.feature_config is None:
            raise KdcacheError(f"{self.source}: attributes.kdcache.features is missing (a cache written by "
                               "build-teacher-cache records them); rebuild the cache")
        return self.feature_config


def parse_cache_attributes(settings: Any, source: str) -> CacheAttributes:
    """Check ``attrs["kdcache"]`` of the cache at ``source``; one-line KdcacheError naming the field."""
    where = f"{source}/zarr.json"
    if not isinstance(settings, dict):
        raise KdcacheError(f"{source}: a zarr group but not a kdcache cache (no attrs['{sc.ATTRS_KEY}'])")
    version = settings.get("format_version")
    if version != sc.FORMAT_VERSION or isinstance(version, bool):
        raise KdcacheError(
            f"{source}: cache format version {version!r} is not supported "
            f"(this kdcache reads version {sc.FORMAT_VERSION}); upgrade kdcache or rebuild the cache"
        )
    if settings.get("initialized", False) is not True:
        raise KdcacheError(f"{source}: the cache's creation was interrupted; build it again")
    top = Fields(settings, where, f"attributes.{sc.ATTRS_KEY}")
    layout = parse_layout(top.obj("layout"))
    num_utterances = top.integer("num_utterances", 1, _MAX_ROWS)
    has_head = top.boolean("has_head")
    top.boolean("complete", default=False)
    for key in ("created", "tool_version", "head_sha256", "recipe_sha256"):
        top.string(key, default=None, nullable=True)
    top.string("logits", choices=[layout.logits_mode], default=None, nullable=True)
    _check_teacher(top.obj("teacher", nullable=True, default=None), layout)
    features = top.obj("features", nullable=True, default=None)
    feature_config = parse_features(features) if features is not None else None
    _check_crop_plan(top.obj("crop_plan", nullable=True, default=None))
    corpus = top.obj("corpus", nullable=True, default=None)
    if corpus is not None:
        corpus.string("sha256", default=None)
        corpus.integer("utterances", 1, _MAX_ROWS, default=None)
    saliency = top.obj("saliency", nullable=True, default=None)
    if saliency is not None:
        saliency.string("integrated_input", default=None)
        saliency.integer("steps", 1, default=None)
    top.obj("augment", nullable=True, default=None)
    if layout.integrated and layout.saliency_shape is None:
        top.fail(f"{top.where}.layout.integrated is true but layout.saliency_shape is null")
    return CacheAttributes(source, settings, layout, num_utterances, has_head, feature_config)


def parse_layout(fields: Fields) -> CacheLayout:
    """attributes.kdcache.layout -> CacheLayout (every field checked before CacheLayout sees it)."""
    fields.only(LAYOUT_FIELDS)
    num_rows = fields.integer("num_rows", 1, _MAX_ROWS)
    num_classes = fields.integer("num_classes", 1, _MAX_DIM)
    embed_dim = fields.integer("embed_dim", 1, _MAX_DIM)
    shard_rows = fields.integer("shard_rows", 1, _MAX_DIM)
    chunk_rows = fields.integer("chunk_rows", 1, shard_rows)
    if shard_rows % chunk_rows:
        fields.fail(f"{fields.where}.shard_rows ({shard_rows}) must be a multiple of chunk_rows ({chunk_rows})")
    mode = fields.string("logits_mode", choices=sc.LOGITS_MODES)
    shape = fields.array("saliency_shape", nullable=True)
    if shape is not None and (len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int)
                                                     or not 1 <= v <= _MAX_DIM for v in shape)):
        fields.fail(f"{fields.where}.saliency_shape must be null or 3 positive integers, got {shape!r}"[:300])
    integrated = fields.boolean("integrated")
    return CacheLayout(num_rows=num_rows, num_classes=num_classes, embed_dim=embed_dim, logits_mode=mode,
                       saliency_shape=tuple(shape) if shape is not None else None, integrated=integrated,
                       shard_rows=shard_rows, chunk_rows=chunk_rows)


def _check_teacher(teacher: Fields | None, layout: CacheLayout) -> None:
    if teacher is None:
        return
    teacher.string("arch", default=None)
    teacher.obj("model_args", nullable=True, default=None)
    teacher.string("weights_sha256", default=None, nullable=True)
    teacher.integer("classes", layout.num_classes, layout.num_classes, default=None)
    teacher.integer("embed_dim", layout.embed_dim, layout.embed_dim, default=None)
    teacher.number("scale", 0, 1e4, min_open=True, default=None)
    teacher.number("margin", 0, 1.5, default=None)


def _check_crop_plan(plan: Fields | None) -> None:
    if plan is None:
        return
    plan.number("seconds", 0, 600, min_open=True, default=None)
    plan.integer("per_utt", 1, 1000, default=None)
    plan.integer("seed", 0, default=None)


def check_array_metadata(node: Any, spec: sc.ArraySpec, source: str) -> None:
    """An array's stored shape and dtype must be the ones its layout implies (a swapped or edited array
    ``zarr.json`` would otherwise be decoded with the wrong shape). IntegrityError naming the array."""
    shape = tuple(int(v) for v in node.shape)
    if shape != tuple(spec.shape):
        raise IntegrityError(f"{source}: array {spec.name} has shape {shape}, expected {tuple(spec.shape)} "
                             "(its zarr.json disagrees with the cache's layout)")
    stored = node.dtype
    kind = getattr(stored, "kind", None)
    if spec.dtype is str:
        if kind not in ("T", "U", "O"):
            raise IntegrityError(f"{source}: array {spec.name} has dtype {stored}, expected strings")
    elif np.dtype(spec.dtype) != np.dtype(stored):
        raise IntegrityError(f"{source}: array {spec.name} has dtype {stored}, expected {np.dtype(spec.dtype)}")
