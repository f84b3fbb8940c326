"""Argument checks of the distillation losses: each bad value a user can pass is one
:class:`kdcache.errors.KdcacheError` line naming the argument."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from kdcache.errors import KdcacheError


def upcast(*ts: Tensor) -> tuple[Tensor, ...]:
    """Cast to a common floating dtype of at least float32."""
    dtype = torch.float32
    for t in ts:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in ts)


def check_logits(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise KdcacheError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise KdcacheError(f"{name} must have shape [B, C], got {list(x.shape)}")
    if not x.is_floating_point():
        raise KdcacheError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise KdcacheError(f"{name} is empty (shape {list(x.shape)})")
    return x


def check_pair(student: object, teacher: object, what: str = "logits") -> tuple[Tensor, Tensor]:
    s = check_logits(f"student_{what}", student)
    t = check_logits(f"teacher_{what}", teacher)
    if s.shape != t.shape:
        raise KdcacheError(
            f"student_{what} {list(s.shape)} and teacher_{what} {list(t.shape)} differ in shape"
        )
    return s, t


def check_target(target: object, batch: int, classes: int, allow_unknown: bool = False) -> Tensor:
    """Validate a ``[B]`` integer target; values in ``[0, C)`` (or ``< 0`` when allowed)."""
    if not isinstance(target, Tensor):
        raise KdcacheError(f"target must be a tensor, got {type(target).__name__}")
    if target.dim() != 1 or target.shape[0] != batch:
        raise KdcacheError(f"target must have shape [{batch}], got {list(target.shape)}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise KdcacheError(f"target must hold integer class indices, got {target.dtype}")
    target = target.long()
    # One host sync; it turns a CUDA device-side assert into a readable error.
    bad = target >= classes if allow_unknown else (target < 0) | (target >= classes)
    if bool(bad.any()):
        value = int(target[bad][0])
        allowed = f"< {classes}" if allow_unknown else f"in [0, {classes})"
        raise KdcacheError(f"target holds class index {value}; indices must be {allowed} (C = {classes})")
    return target


def check_temperature(temperature: object) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise KdcacheError(f"temperature must be a number, got {temperature!r}")
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise KdcacheError(f"temperature must be a positive finite number, got {temperature!r}")
    return t


def check_weight(name: str, value: object, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise KdcacheError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = "non-negative" if allow_zero else "positive"
        raise KdcacheError(f"{name} must be a {need} finite number, got {value!r}")
    return v


def check_mask(mask: object, batch: int) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise KdcacheError(f"mask must be a tensor or None, got {type(mask).__name__}")
    if mask.dim() != 1 or mask.shape[0] != batch:
        raise KdcacheError(f"mask must have shape [{batch}], got {list(mask.shape)}")
    return mask
