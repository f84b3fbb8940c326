"""The cache fingerprint: one hash naming what a cache's arrays are a function of."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .schema import OUTPUTS

# What every output depends on (teacher weights, features, crop plan, corpus manifest, augmentation),
# then the build settings that change particular outputs (schema.OutputSpec.setting: the logits mode,
# the saliency settings).
BASE_FIELDS = ("teacher_weights_sha256", "features", "crop_plan", "corpus_sha256", "augment")
FINGERPRINT_FIELDS = BASE_FIELDS + tuple(dict.fromkeys(o.setting for o in OUTPUTS if o.setting))


def fingerprint_inputs(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that determine the cached values (no timestamps, no tool version), keyed by
    FINGERPRINT_FIELDS."""
    teacher = settings.get("teacher") or {}
    corpus = settings.get("corpus") or {}
    nested = {"teacher_weights_sha256": teacher.get("weights_sha256"), "corpus_sha256": corpus.get("sha256")}
    return {name: nested[name] if name in nested else settings.get(name) for name in FINGERPRINT_FIELDS}


def cache_fingerprint(settings: dict[str, Any]) -> str:
    """sha256 (hex) over the fingerprint inputs (FINGERPRINT_FIELDS): the teacher weights hash, feature
    config, crop plan, corpus manifest hash, augmentation sets, logits mode and saliency settings.
    Equal fingerprints mean interchangeable caches."""
    canonical = json.dumps(fingerprint_inputs(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
