"""Distillation losses: pure functions of tensors (no I/O, no models).

Shapes: logits ``[B, C]`` (``B`` rows, ``C`` classes), target ``[B]`` integer class indices,
embeddings ``[B, D]``. Every loss is a batch mean (sum over classes or dimensions, mean over rows)
and is computed in at least float32 with autocast disabled, whatever the caller's autocast state:
float16/bfloat16 inputs are upcast (the non-target mass of AAM logits underflows in half precision),
float64 inputs stay float64. The result is a 0-d tensor of that dtype.

Invalid arguments a user can give (shapes, temperatures, weights, class indices) raise
:class:`kdcache.errors.KdcacheError`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdcache.distributed import full_precision
from kdcache.distill.checks import (
    check_logits,
    check_mask,
    check_pair,
    check_target,
    check_temperature,
    check_weight,
    upcast,
)
from kdcache.errors import KdcacheError
from kdcache.models.projection import arc_margin_phi

__all__ = [
    "ce_loss",
    "kd_loss",
    "dkd_loss",
    "dkd_terms",
    "embedding_loss",
    "embedding_distance",
    "instance_level_loss",
    "class_level_loss",
    "batch_level_loss",
    "multi_level_loss",
    "apply_teacher_margin",
    "standardize_logits",
]


# ----------------------------------------------------------------------------- helpers


def _lse_parts(z: Tensor) -> tuple[Tensor, Tensor]:
    """``logsumexp(z, dim=1) = top + rel``, both ``[B, 1]``, with ``rel`` exact to rounding.

    ``top`` is the (detached) row maximum and ``rel = log1p(sum of exp(z - top) over the other
    entries)``. ``F.log_softmax`` and ``torch.logsumexp`` round ``top + log(1 + tail)`` as one number,
    an absolute error of about ``eps * |top|``; for a confident row (``log p_target`` about -1e-2)
    that is a relative error near 1e-4, and KL values of order 1e-4 lose three digits.
    ``z`` may hold ``-inf`` (masked entries) if every row has a finite one.
    """
    top, idx = z.detach().max(dim=1, keepdim=True)
    zc = z - top
    tail = torch.exp(zc).scatter(1, idx, 0.0).sum(dim=1, keepdim=True)
    # expm1(0) adds 0 to the value but restores d/dz_top, which the scatter removed
    return top, torch.log1p(tail + torch.expm1(zc.gather(1, idx)))


def _log_softmax(z: Tensor) -> Tensor:
    """``log_softmax(z, dim=1)``, exact to rounding (see :func:`_lse_parts`)."""
    top, rel = _lse_parts(z)
    return (z - top) - rel


def row_kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``[B]``: KL(p || q) per row from log-probabilities; 0 where p underflows to 0."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


# ----------------------------------------------------------------------------- CE, KD, embeddings


def ce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of ``logits [B, C]`` against ``target [B]`` in ``[0, C)``, batch mean.

    Pass AAM logits (with the margin on the target) for AAM-softmax CE.
    """
    z = check_logits("logits", logits)
    t = check_target(target, z.shape[0], z.shape[1])
    with full_precision(z):
        (z,) = upcast(z)
        return -_log_softmax(z).gather(1, t.unsqueeze(1)).mean()


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))`` summed over classes, batch mean.

    Hinton's KD; identical to MLKD's instance term without a mask.
    """
    return instance_level_loss(student_logits, teacher_logits, temperature)


def embedding_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """``mean(1 - cos(e_s, e_t))`` over the batch; embeddings ``[B, D]`` of equal ``D``.

    Map the student into the teacher's dimension first when they differ (a learned projection).
    """
    s, t = check_pair(student_emb, teacher_emb, "emb")
    with full_precision(s):
        s, t = upcast(s, t)
        return (1.0 - F.cosine_similarity(s, t, dim=1, eps=1e-8)).mean()


def embedding_distance(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """``mean ||e_s - e_t||^2``: squared Euclidean distance summed over ``D``, batch mean (IML-KD)."""
    s, t = check_pair(student_emb, teacher_emb, "emb")
    with full_precision(s):
        s, t = upcast(s, t)
        return (s - t).square().sum(dim=1).mean()


# ----------------------------------------------------------------------------- DKD


def _decouple(z: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Split tempered logits ``z [B, C]`` into DKD's two distributions, in log space.

    Returns ``log_b [B, 2]`` = log [p_target, sum of the others] and ``log_n [B, C]`` =
    log-softmax over the non-target classes, 0 on the target column (so it contributes 0).
    Working in log space keeps both finite when the non-target mass underflows (AAM logits).
    This is :func:`_lse_parts` on the logits with the target masked, written out so that ``log_n``
    reuses its shifted logits, and the target column is set by scattering one entry per row (a
    ``[B, C]`` boolean mask cost twice as much): DKD runs on every step, every pass over ``[B, C]`` counts.
    """
    col = target.unsqueeze(1)
    masked = z.scatter(1, col, float("-inf"))
    top, idx = masked.detach().max(dim=1, keepdim=True)
    shifted = masked - top  # z - top off the target, -inf on it
    tail = torch.exp(shifted).scatter(1, idx, 0.0).sum(dim=1, keepdim=True)
    rel = torch.log1p(tail + torch.expm1(shifted.gather(1, idx)))  # logsumexp over the others = top + rel
    # r = log(mass of the others / target probability); logsigmoid keeps
    # log(1 - 1e-20) = -1e-20 where log(p_target) would round to 0
    r = (top - z.gather(1, col)) + rel
    log_b = torch.cat([F.logsigmoid(-r), F.logsigmoid(r)], dim=1)
    log_n = (shifted - rel).scatter(1, col, 0.0)
    return log_b, log_n


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """DKD's ``(TCKD, NCKD)``, each already multiplied by ``T^2``, batch means.

    TCKD = KL([p_t, 1 - p_t]_teacher || [p_t, 1 - p_t]_student) with ``p_t`` the target
    probability of ``softmax(z/T)``; NCKD = KL between the softmaxes over the non-target classes.
    Equal to mdistiller's ``dkd_loss`` terms wherever those are finite, and more accurate: mdistiller
    takes ``torch.log`` of summed probabilities (``-inf`` once the student's non-target mass underflows,
    and ``p_target`` rounds to 1 below a mass of ~1e-7 in float32) and masks the target by subtracting
    1000, which leaks when a target logit exceeds the others by more than about ``1000 * T``. Here both
    parts are exact in log space. With ``C = 2`` the non-target distributions have one element each and
    NCKD is exactly 0 (mdistiller issue #60 calls it undefined).
    """
    s, t = check_pair(student_logits, teacher_logits)
    batch, classes = s.shape
    if classes < 2:
        raise KdcacheError(f"DKD needs at least 2 classes, got C = {classes}")
    target = check_target(target, batch, classes)
    temp = check_temperature(temperature)
    with full_precision(s):
        s, t = upcast(s, t)
        # z / 1 is z exactly: skip the pass (T = 1 is ENSKD's setting)
        log_b_s, log_n_s = _decouple(s if temp == 1.0 else s / temp, target)
        # the teacher side needs no graph unless the caller differentiates through the teacher too
        with torch.set_grad_enabled(torch.is_grad_enabled() and t.requires_grad):
            log_b_t, log_n_t = _decouple(t if temp == 1.0 else t / temp, target)
        scale = temp * temp / batch
        tckd = row_kl(log_b_t, log_b_s).sum() * scale
        nckd = row_kl(log_n_t, log_n_s).sum() * scale
        return tckd, nckd


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """Decoupled KD: ``alpha * TCKD + beta * NCKD`` (see :func:`dkd_terms`), mdistiller's value.

    Defaults are mdistiller's (alpha 1, beta 8, T 4); ENSKD used alpha 1, beta 2, T 1.
    """
    a = check_weight("alpha", alpha, allow_zero=True)
    b = check_weight("beta", beta, allow_zero=False)
    tckd, nckd = dkd_terms(student_logits, teacher_logits, target, temperature)
    return a * tckd + b * nckd


# ----------------------------------------------------------------------------- MLKD / IML-KD


def _instance(log_p_s: Tensor, log_p_t: Tensor, temp: float, mask: Tensor | None) -> Tensor:
    rows = row_kl(log_p_t, log_p_s)
    if mask is not None:
        rows = rows * mask
    return rows.mean() * (temp * temp)


def instance_level_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    mask: Tensor | None = None,
) -> Tensor:
    """MLKD's instance term: ``T^2 * mean_i(mask_i * KL_i)``, ``KL_i`` summed over classes.

    Without ``mask`` this is :func:`kd_loss` (MLKD: ``kl_div(reduction="none").sum(1).mean() * T^2``).
    ``mask [B]`` (bool or float weights) zeroes or weights rows; the mean still divides by ``B``.
    MLKD's released code multiplies the already-reduced scalar by its confidence mask and takes
    ``.mean()``, i.e. ``mean(KL) * mean(mask)``; the per-row form here is its evident intent.
    """
    s, t = check_pair(student_logits, teacher_logits)
    temp = check_temperature(temperature)
    m = check_mask(mask, s.shape[0])
    with full_precision(s):
        s, t = upcast(s, t)
        if m is not None:
            m = m.to(s.dtype)
        return _instance(_log_softmax(s / temp), _log_softmax(t / temp), temp, m)


def _half_sum_and_diff(log_p_s: Tensor, log_p_t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """From log-probabilities ``[B, C]``: ``S = (P_t + P_s)/2``, ``D = P_t - P_s``, ``M = D S^T [B, B]``.

    With ``P_t = S + D/2`` and ``P_s = S - D/2``:
    ``P_t P_t^T - P_s P_s^T = M + M^T`` and ``P_t^T P_t - P_s^T P_s = S^T D + D^T S``.
    Both differences are then formed from ``D`` directly, never as the difference of two large
    Gram matrices, so they keep full relative accuracy when student and teacher agree closely (the
    plain ``||A A^T||^2 - 2||A B^T||^2 + ||B B^T||^2`` loses every digit there, even in float64).
    Where ``P_t`` and ``P_s`` are within a factor 1.65, ``D = P_s * expm1(log P_t - log P_s)``, exact
    to rounding even for two probabilities near 1 (a confident student close to its teacher).
    """
    p_s, p_t = log_p_s.exp(), log_p_t.exp()
    ratio = log_p_t - log_p_s
    # the clamp keeps the unused branch finite, so its gradient is 0 and never NaN
    near = p_s * torch.expm1(ratio.clamp(-0.5, 0.5))
    d = torch.where(ratio.abs() <= 0.5, near, p_t - p_s)
    s_half = p_s + 0.5 * d
    return s_half, d, d @ s_half.T


def _batch_term(m: Tensor, batch: int) -> Tensor:
    return (m + m.T).square().sum() / batch


def _class_term(s_half: Tensor, d: Tensor, m: Tensor, classes: int) -> Tensor:
    # ||S^T D + D^T S||_F^2 = 2 <S S^T, D D^T>_F + 2 tr(M M): O(B^2 C), no C x C matrix.
    return 2.0 * ((s_half @ s_half.T) * (d @ d.T)).sum() / classes + 2.0 * (m * m.T).sum() / classes


def class_level_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """MLKD's class term ``||P_t^T P_t - P_s^T P_s||_F^2 / C``, ``P = softmax(z/T) [B, C]``.

    Computed from ``[B, B]`` Gram matrices in O(B^2 C) time and O(B^2 + B C) memory.
    """
    s, t = check_pair(student_logits, teacher_logits)
    temp = check_temperature(temperature)
    with full_precision(s):
        s, t = upcast(s, t)
        s_half, d, m = _half_sum_and_diff(_log_softmax(s / temp), _log_softmax(t / temp))
        return _class_term(s_half, d, m, s.shape[1])


def batch_level_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """MLKD's batch term ``||P_t P_t^T - P_s P_s^T||_F^2 / B``, ``P = softmax(z/T) [B, C]``."""
    s, t = check_pair(student_logits, teacher_logits)
    temp = check_temperature(temperature)
    with full_precision(s):
        s, t = upcast(s, t)
        _, _, m = _half_sum_and_diff(_log_softmax(s / temp), _log_softmax(t / temp))
        return _batch_term(m, s.shape[0])


def multi_level_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperatures: Sequence[float] = (1.0, 2.0, 3.0, 4.0, 5.0),
    mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """MLKD's three terms, each summed over ``temperatures``.

    Returns ``{"instance": ..., "class_": ..., "batch": ...}`` (0-d tensors); the instance term
    carries ``T^2`` per temperature, the class and batch terms do not (as in MLKD). ``mask`` applies
    to the instance term only (see :func:`instance_level_loss`). The softmax and the shared
    ``[B, B]`` product are computed once per temperature.
    """
    s, t = check_pair(student_logits, teacher_logits)
    temps = [check_temperature(x) for x in temperatures] if isinstance(temperatures, Sequence) else None
    if not temps:
        raise KdcacheError(f"temperatures must be a non-empty sequence of numbers, got {temperatures!r}")
    m_rows = check_mask(mask, s.shape[0])
    batch, classes = s.shape
    with full_precision(s):
        s, t = upcast(s, t)
        if m_rows is not None:
            m_rows = m_rows.to(s.dtype)
        instance = class_ = batch_ = s.new_zeros(())
        for temp in temps:
            log_p_s = _log_softmax(s / temp)
            log_p_t = _log_softmax(t / temp)
            instance = instance + _instance(log_p_s, log_p_t, temp, m_rows)
            s_half, d, m = _half_sum_and_diff(log_p_s, log_p_t)
            class_ = class_ + _class_term(s_half, d, m, classes)
            batch_ = batch_ + _batch_term(m, batch)
        return {"instance": instance, "class_": class_, "batch": batch_}


# ----------------------------------------------------------------------------- AAM margin


def apply_teacher_margin(teacher_logits: Tensor, target: Tensor, margin: float, scale: float) -> Tensor:
    """Put the ArcMargin margin on the target column of cached margin-free logits ``s*cos``.

    Target column becomes ``s * phi`` with WeSpeaker's non-easy rule: ``phi = cos(theta + m)`` where
    ``cos > cos(pi - m)``, else ``cos - (1 - cos m)``; other columns, and rows with ``target < 0``
    (speaker unknown to the teacher), are unchanged. ``cos`` is clamped to [-1, 1] first (float16
    caches round slightly past 1). Returns ``[B, C]`` in at least float32; not meant for gradients.
    """
    z = check_logits("teacher_logits", teacher_logits)
    target = check_target(target, z.shape[0], z.shape[1], allow_unknown=True)
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not (0 <= margin < math.pi):
        raise KdcacheError(f"margin must be a number in [0, pi) radians, got {margin!r}")
    s = check_weight("scale", scale, allow_zero=False)
    m = float(margin)
    with full_precision(z):
        (z,) = upcast(z)
        out = z.clone()
        rows = torch.nonzero(target >= 0).squeeze(1)
        if rows.numel() == 0:
            return out
        cols = target[rows]
        cos = (z[rows, cols] / s).clamp(-1.0, 1.0)
        out[rows, cols] = s * arc_margin_phi(cos, m, sin2_floor=0.0)
        return out


# ----------------------------------------------------------------------------- logit standardization


LOGIT_STAND_EPS = 1e-7  # the reference code's (sunshangquan/logit-standardization-KD, ``normalize``)


def standardize_logits(logits: Tensor, eps: float = LOGIT_STAND_EPS) -> Tensor:
    """Z-score each row over the class axis: ``(z - mean(z)) / (eps + std(z))`` (Sun et al., CVPR 2024).

    ``std`` is the unbiased sample standard deviation (divisor ``C - 1``, ``torch.std``'s default) and
    ``eps`` is added to it, not under the root: both as in the paper's released code. ``[B, C]`` in,
    ``[B, C]`` out, at least float32. Differentiable; ``C`` must be at least 2.
    """
    z = check_logits("logits", logits)
    if z.shape[1] < 2:
        raise KdcacheError(f"logit standardization needs at least 2 classes, got C = {z.shape[1]}")
    with full_precision(z):
        (z,) = upcast(z)
        mean = z.mean(dim=1, keepdim=True)
        std = z.std(dim=1, keepdim=True)
        return (z - mean) / (eps + std)
