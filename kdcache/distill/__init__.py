"""kdcache.distill: distillation losses, pure functions of tensors (no I/O, no models)."""

from kdcache.distill.losses import (
    apply_teacher_margin,
    batch_level_loss,
    ce_loss,
    class_level_loss,
    dkd_loss,
    dkd_terms,
    embedding_distance,
    embedding_loss,
    instance_level_loss,
    kd_loss,
    multi_level_loss,
    standardize_logits,
)

__all__ = [
    "apply_teacher_margin",
    "batch_level_loss",
    "ce_loss",
    "class_level_loss",
    "dkd_loss",
    "dkd_terms",
    "embedding_distance",
    "embedding_loss",
    "instance_level_loss",
    "kd_loss",
    "multi_level_loss",
    "standardize_logits",
]
