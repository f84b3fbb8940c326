"""The cache fingerprint: one hash naming what a cache's arrays are a function of."""

from __future__ import annotations

import hashlib
import json
from typing import Any

FINGERPRINT_FIELDS = ("teacher_weights_sha256", "features", "crop_plan", "corpus_sha256", "augment", "saliency", "logits")


def fingerprint_inputs(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that determine the cached values (no timestamps, no tool version)."""
    teacher = settings.get("teacher") or {}
    corpus = settings.get("corpus") or {}
    return {
        "teacher_weights_sha256": teacher.get("weights_sha256"),
        "features": settings.get("features"),
        "crop_plan": settings.get("crop_plan"),
        "corpus_sha256": corpus.get("sha256"),
        "augment": settings.get("augment"),
        "saliency": settings.get("saliency"),
        "logits": settings.get("logits"),
    }


def cache_fingerprint(settings: dict[str, Any]) -> str:
    """sha256 (hex) over the teacher weights hash, feature config, crop plan, corpus manifest hash,
    augmentation sets and saliency settings: equal fingerprints mean interchangeable caches."""
    canonical = json.dumps(fingerprint_inputs(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
