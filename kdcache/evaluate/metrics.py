"""Verification metrics with the NIST SRE definitions that WeSpeaker uses.

A trial is accepted when its score is at or above a threshold. Operating points are taken only at
thresholds between distinct scores: tied trials are accepted or rejected together, so the result does
not depend on the order of tied scores (a plain cumulative sum over sorted scores does).
Rates are fractions in [0, 1]; scores and labels are numpy arrays (or anything ``np.asarray`` takes).
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike

from kdcache.errors import KdcacheError

__all__ = ["det_curve", "compute_eer", "compute_min_dcf"]


def _check(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1 or s.shape != y.shape:
        raise KdcacheError(f"scores {list(s.shape)} and labels {list(y.shape)} must be 1-D of equal length")
    if s.size == 0:
        raise KdcacheError("no trials: scores and labels are empty")
    if not np.all(np.isfinite(s)):
        raise KdcacheError(f"scores hold {int(np.sum(~np.isfinite(s)))} non-finite values (NaN or inf)")
    if y.dtype != np.bool_:
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise KdcacheError(f"labels must be bool or 0/1, got dtype {y.dtype}")
        if not np.all((y == 0) | (y == 1)):
            raise KdcacheError("labels must be bool or 0/1 (1 = target trial)")
        y = y == 1
    n_target = int(y.sum())
    if n_target == 0 or n_target == y.size:
        kind = "non-target" if n_target == y.size else "target"  # the class that is missing
        raise KdcacheError(f"trials hold only one class: no {kind} trials, so EER/minDCF are undefined")
    return s, y


def det_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET operating points ``(fnr, fpr, thresholds)``, each ``[K + 1]`` for ``K`` distinct scores.

    Point ``k`` accepts trials with ``score >= thresholds[k]``; thresholds ascend from the lowest
    score (accept all: fnr 0, fpr 1) to ``+inf`` (reject all: fnr 1, fpr 0). ``fnr`` is
    non-decreasing and ``fpr`` non-increasing.
    """
    s, y = _check(scores, labels)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    n_target = int(y.sum())
    n_nontarget = y.size - n_target
    # last index of each group of tied scores, except the highest group
    ends = np.flatnonzero(np.diff(s) > 0)
    targets_below = np.concatenate([[0], np.cumsum(y)[ends], [n_target]])
    nontargets_below = np.concatenate([[0], np.cumsum(~y)[ends], [n_nontarget]])
    fnr = targets_below / n_target
    fpr = (n_nontarget - nontargets_below) / n_nontarget
    thresholds = np.concatenate([s[:1], s[ends + 1], [np.inf]])
    return fnr, fpr, thresholds


def compute_eer(scores: ArrayLike, labels: ArrayLike) -> float:
    """Equal error rate (fraction in [0, 1]).

    Linear interpolation between the two DET points where ``fnr - fpr`` changes sign, as in
    WeSpeaker's ``compute_eer``: the value where the segment joining them crosses ``fnr = fpr``.
    """
    fnr, fpr, _ = det_curve(scores, labels)
    diff = fnr - fpr  # non-decreasing from -1 to +1
    hi = int(np.flatnonzero(diff >= 0)[0])  # >= 1, since diff[0] = -1
    lo = hi - 1
    a = diff[hi] / (diff[hi] - diff[lo])
    return float(fnr[hi] + a * (fnr[lo] - fnr[hi]))


def compute_min_dcf(
    scores: ArrayLike,
    labels: ArrayLike,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalised minimum detection cost (NIST SRE / WeSpeaker ``compute_c_norm``).

    ``min_k(c_miss * fnr_k * p_target + c_fa * fpr_k * (1 - p_target)) /
    min(c_miss * p_target, c_fa * (1 - p_target))``: 1 is the cost of always answering the cheaper
    way, 0 perfect. SpeechBrain's minDCF is the unnormalised numerator.
    """
    for name, value in (("c_miss", c_miss), ("c_fa", c_fa)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < np.inf):
            raise KdcacheError(f"{name} must be a positive finite number, got {value!r}")
    if isinstance(p_target, bool) or not isinstance(p_target, numbers.Real) or not (0 < p_target < 1):
        raise KdcacheError(f"p_target must be in (0, 1), got {p_target!r}")
    fnr, fpr, _ = det_curve(scores, labels)
    cost = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))
