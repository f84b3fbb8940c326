"""Trial scoring: cosine similarity and adaptive s-norm (AS-norm), as in WeSpeaker.

Embeddings are ``[N, D]`` tensors; scores ``[N]``. Everything is computed in at least float32 with
autocast disabled. An optional ``mean [D]`` (usually the training-set mean embedding) is subtracted
from every embedding, cohort included, before L2 normalisation.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kdcache.distributed import full_precision
from kdcache.errors import KdcacheError

__all__ = ["cosine_scores", "cohort_stats", "as_norm", "normalize_scores", "EmbeddingTable", "score_trials"]

_CHUNK_ROWS = 1024  # rows of the [rows, cohort] score matrix held at once


def _matrix(name: str, x: object, dim: int | None = None) -> Tensor:
    if not isinstance(x, Tensor):
        raise KdcacheError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() != 2 or not x.is_floating_point():
        raise KdcacheError(f"{name} must be a floating-point [N, D] tensor, got {x.dtype} {list(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise KdcacheError(f"{name} has embedding dimension {x.shape[1]}, expected {dim}")
    return x


def _float(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _prepare(x: Tensor, mean: Tensor | None) -> Tensor:
    """Subtract ``mean`` and L2-normalise rows."""
    x = _float(x)
    if mean is not None:
        x = x - mean.to(device=x.device, dtype=x.dtype)
    return F.normalize(x, dim=1)


def _check_mean(mean: object, dim: int) -> Tensor | None:
    if mean is None:
        return None
    if not isinstance(mean, Tensor) or mean.shape != (dim,) or not mean.is_floating_point():
        shape = list(mean.shape) if isinstance(mean, Tensor) else type(mean).__name__
        raise KdcacheError(f"mean must be a floating-point [{dim}] tensor, got {shape}")
    return mean


def cosine_scores(enroll_emb: Tensor, test_emb: Tensor, mean: Tensor | None = None) -> Tensor:
    """``[N]`` cosine similarity of row ``i`` of ``enroll_emb [N, D]`` and of ``test_emb [N, D]``.

    ``mean [D]`` is subtracted from both before normalising.
    """
    e = _matrix("enroll_emb", enroll_emb)
    t = _matrix("test_emb", test_emb, e.shape[1])
    if e.shape[0] != t.shape[0]:
        raise KdcacheError(f"enroll_emb has {e.shape[0]} rows but test_emb has {t.shape[0]}")
    mean = _check_mean(mean, e.shape[1])
    with full_precision(e):
        return (_prepare(e, mean) * _prepare(t, mean)).sum(dim=1)


def _top_n(top_n: object, cohort_size: int) -> int:
    if isinstance(top_n, bool) or not isinstance(top_n, numbers.Integral) or top_n < 2:
        raise KdcacheError(f"top_n must be an integer >= 2, got {top_n!r}")
    if cohort_size < 2:
        raise KdcacheError(f"AS-norm needs a cohort of at least 2 embeddings, got {cohort_size}")
    return min(int(top_n), cohort_size)


def cohort_stats(
    emb: Tensor, cohort_emb: Tensor, top_n: int = 300, mean: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-row mean and standard deviation ``([N], [N])`` of the ``top_n`` highest cosine scores
    of ``emb [N, D]`` against ``cohort_emb [M, D]`` (population std, as numpy's ``np.std``).

    ``top_n`` is clipped to ``M``. Rows are processed in chunks, so memory stays bounded.
    """
    x = _matrix("emb", emb)
    c = _matrix("cohort_emb", cohort_emb, x.shape[1])
    k = _top_n(top_n, c.shape[0])
    mean = _check_mean(mean, x.shape[1])
    with full_precision(x):
        c = _prepare(c.to(x.device), mean)
        means, stds = [], []
        for start in range(0, x.shape[0], _CHUNK_ROWS):
            rows = _prepare(x[start : start + _CHUNK_ROWS], mean)
            top = torch.topk(rows @ c.T, k, dim=1).values
            means.append(top.mean(dim=1))
            stds.append(top.std(dim=1, correction=0))
        if not means:
            return c.new_zeros(0), c.new_zeros(0)
        mu, sd = torch.cat(means), torch.cat(stds)
    if bool((sd <= 0).any()):
        raise KdcacheError("top-N cohort scores have zero spread for some embedding (duplicated cohort?)")
    return mu, sd


def normalize_scores(scores: Tensor, enroll_stats: tuple[Tensor, Tensor], test_stats: tuple[Tensor, Tensor]) -> Tensor:
    """AS-norm from cohort statistics: ``0.5 * ((s - mu_e)/sd_e + (s - mu_t)/sd_t)``, all ``[N]``."""
    (mu_e, sd_e), (mu_t, sd_t) = enroll_stats, test_stats
    s = _float(scores)
    return 0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)


def as_norm(
    scores: Tensor,
    enroll_emb: Tensor,
    test_emb: Tensor,
    cohort_emb: Tensor,
    top_n: int = 300,
    mean: Tensor | None = None,
) -> Tensor:
    """Adaptive s-norm of ``scores [N]`` (WeSpeaker ``score_norm.py``, method ``asnorm``).

    For each side, the mean and std of the ``top_n`` best cosine scores against ``cohort_emb [M, D]``
    (``top_n`` clipped to ``M``); ``s' = 0.5 * ((s - mu_e)/sd_e + (s - mu_t)/sd_t)``. ``mean [D]`` is
    subtracted from all embeddings as WeSpeaker does; pass the one used for ``scores``.
    """
    e = _matrix("enroll_emb", enroll_emb)
    t = _matrix("test_emb", test_emb, e.shape[1])
    if not isinstance(scores, Tensor) or scores.dim() != 1 or not scores.is_floating_point():
        raise KdcacheError("scores must be a floating-point [N] tensor")
    if not (scores.shape[0] == e.shape[0] == t.shape[0]):
        raise KdcacheError(
            f"scores [{scores.shape[0]}], enroll_emb [{e.shape[0]}] and test_emb [{t.shape[0]}] differ in N"
        )
    stats_e = cohort_stats(e, cohort_emb, top_n, mean)
    stats_t = cohort_stats(t, cohort_emb, top_n, mean)
    with full_precision(e):
        return normalize_scores(scores.to(stats_e[0].device), stats_e, stats_t)


@dataclass(frozen=True, eq=False)
class EmbeddingTable:
    """Utterance embeddings: ``ids[i]`` names row ``i`` of ``emb [U, D]``."""

    ids: tuple[str, ...]
    emb: Tensor

    def __post_init__(self) -> None:
        _matrix("emb", self.emb)
        if len(self.ids) != self.emb.shape[0]:
            raise KdcacheError(f"{len(self.ids)} ids for {self.emb.shape[0]} embeddings")
        if len(set(self.ids)) != len(self.ids):
            raise KdcacheError("embedding table ids are not unique")
        object.__setattr__(self, "ids", tuple(self.ids))
        object.__setattr__(self, "_index", {u: i for i, u in enumerate(self.ids)})

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: Sequence[str]) -> Tensor:
        """``[len(ids)]`` int64 row indices; an unknown id is a :class:`KdcacheError` naming it."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        try:
            return torch.tensor([index[u] for u in ids], dtype=torch.long)
        except KeyError as err:
            raise KdcacheError(f"no embedding for utterance {err.args[0]!r}") from None


def score_trials(
    table: EmbeddingTable,
    enroll_ids: Sequence[str],
    test_ids: Sequence[str],
    mean: Tensor | None = None,
    cohort_emb: Tensor | None = None,
    top_n: int = 300,
) -> Tensor:
    """``[N]`` cosine scores of trials ``(enroll_ids[i], test_ids[i])``, AS-normed if ``cohort_emb``.

    Same values as :func:`cosine_scores` then :func:`as_norm` on the gathered rows, but the cohort
    statistics are computed once per distinct utterance, not once per trial.
    """
    if len(enroll_ids) != len(test_ids):
        raise KdcacheError(f"{len(enroll_ids)} enroll ids but {len(test_ids)} test ids")
    e_rows, t_rows = table.rows(enroll_ids), table.rows(test_ids)
    device = table.emb.device
    e_rows, t_rows = e_rows.to(device), t_rows.to(device)
    scores = cosine_scores(table.emb[e_rows], table.emb[t_rows], mean)
    if cohort_emb is None:
        return scores
    used, inverse = torch.unique(torch.cat([e_rows, t_rows]), return_inverse=True)
    mu, sd = cohort_stats(table.emb[used], cohort_emb, top_n, mean)
    n = e_rows.shape[0]
    ie, it = inverse[:n], inverse[n:]
    with full_precision(scores):
        return normalize_scores(scores, (mu[ie], sd[ie]), (mu[it], sd[it]))
