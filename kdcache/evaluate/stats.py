"""Mean and Student's t confidence interval over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache


def _t_pdf(x: float, df: int) -> float:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf_above_half(x: float, df: int, intervals: int = 4000) -> float:
    """P(T <= x) - 1/2 for x >= 0, by Simpson's rule on the density (error < 1e-10 for x < 100)."""
    h = x / intervals
    total = _t_pdf(0.0, df) + _t_pdf(x, df)
    for i in range(1, intervals):
        total += (4 if i % 2 else 2) * _t_pdf(i * h, df)
    return total * h / 3


@lru_cache(maxsize=64)
def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile (in (0.5, 1)) of Student's t with ``df`` >= 1 degrees of freedom,
    e.g. ``t_quantile(0.975, 2)`` = 4.3027 (the two-sided 95% value for 3 seeds)."""
    if not 0.5 < probability < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < probability < 1 and df >= 1, got {probability}, {df}")
    target = probability - 0.5
    lo, hi = 0.0, 1.0
    while _t_cdf_above_half(hi, df) < target:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if _t_cdf_above_half(mid, df) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """``(mean, half_width)`` of the two-sided Student's t interval ``mean ± t * s / sqrt(n)``, with ``s``
    the sample standard deviation (n - 1); ``half_width`` is None for a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci of no values")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
