"""Cosine scoring and AS-norm against explicit loop implementations."""

from __future__ import annotations

import math

import pytest
import torch

from kdcache.errors import KdcacheError
from kdcache.evaluate.scoring import EmbeddingTable, as_norm, cohort_stats, cosine_scores, score_trials


def embeddings(n: int, dim: int = 16, seed: int = 0, offset: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) + offset


def loop_cosine(a, b, mean=None):
    a, b = a.tolist(), b.tolist()
    if mean is not None:
        m = mean.tolist()
        a = [x - y for x, y in zip(a, m)]
        b = [x - y for x, y in zip(b, m)]
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def loop_stats(e, cohort, top_n, mean=None):
    """WeSpeaker get_mean_std for one embedding: descending sort, top N, mean and np.std (ddof 0)."""
    s = sorted((loop_cosine(e, c, mean) for c in cohort), reverse=True)[:top_n]
    mu = sum(s) / len(s)
    return mu, math.sqrt(sum((x - mu) ** 2 for x in s) / len(s))


def loop_as_norm(scores, enroll, test, cohort, top_n, mean=None):
    out = []
    for s, e, t in zip(scores.tolist(), enroll, test):
        mu_e, sd_e = loop_stats(e, cohort, top_n, mean)
        mu_t, sd_t = loop_stats(t, cohort, top_n, mean)
        out.append(0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("with_mean", [False, True])
def test_cosine_scores_match_formula(with_mean):
    e, t = embeddings(12, seed=1), embeddings(12, seed=2)
    mean = embeddings(1, seed=3)[0] if with_mean else None
    got = cosine_scores(e, t, mean)
    want = torch.tensor([loop_cosine(e[i], t[i], mean) for i in range(12)], dtype=torch.float64)
    assert got.shape == (12,) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)


def test_cosine_scores_half_precision_in_float32():
    e, t = embeddings(6, seed=4), embeddings(6, seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cosine_scores(e.half(), t.half())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, cosine_scores(e.half().float(), t.half().float()))


@pytest.mark.parametrize("top_n", [5, 300])  # 300 > cohort size: clipped to 40
@pytest.mark.parametrize("with_mean", [False, True])
def test_as_norm_matches_loop(top_n, with_mean):
    enroll, test, cohort = embeddings(7, seed=6), embeddings(7, seed=7), embeddings(40, seed=8)
    mean = embeddings(1, seed=9)[0] if with_mean else None
    scores = cosine_scores(enroll, test, mean)
    got = as_norm(scores, enroll, test, cohort, top_n=top_n, mean=mean)
    want = loop_as_norm(scores, enroll, test, cohort, min(top_n, 40), mean)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_cohort_stats_chunks_and_clips(monkeypatch):
    import kdcache.evaluate.scoring as scoring

    x, cohort = embeddings(9, seed=10), embeddings(25, seed=11)
    whole = cohort_stats(x, cohort, top_n=10)
    monkeypatch.setattr(scoring, "_CHUNK_ROWS", 4)  # 3 chunks
    chunked = cohort_stats(x, cohort, top_n=10)
    torch.testing.assert_close(whole, chunked)
    mu, sd = cohort_stats(x, cohort, top_n=1000)
    mu_loop, sd_loop = zip(*(loop_stats(r, cohort, 25) for r in x))
    torch.testing.assert_close(mu.double(), torch.tensor(mu_loop, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(sd.double(), torch.tensor(sd_loop, dtype=torch.float64), rtol=0, atol=1e-6)


def test_score_trials_matches_per_trial_computation():
    ids = [f"spk{i // 3}/utt{i}" for i in range(10)]
    table = EmbeddingTable(ids, embeddings(10, seed=12))
    enroll = [ids[i] for i in (0, 0, 1, 4, 9, 9)]
    test = [ids[i] for i in (1, 5, 2, 7, 0, 3)]
    cohort, mean = embeddings(30, seed=13), embeddings(1, seed=14)[0]
    e, t = table.emb[table.rows(enroll)], table.emb[table.rows(test)]
    plain = score_trials(table, enroll, test, mean=mean)
    torch.testing.assert_close(plain, cosine_scores(e, t, mean))
    normed = score_trials(table, enroll, test, mean=mean, cohort_emb=cohort, top_n=10)
    torch.testing.assert_close(normed, as_norm(plain, e, t, cohort, top_n=10, mean=mean))
    with pytest.raises(KdcacheError, match="nope"):
        score_trials(table, ["nope"], [ids[0]])


def test_invalid_inputs():
    e, t, c = embeddings(4), embeddings(4, seed=1), embeddings(10, seed=2)
    s = cosine_scores(e, t)
    bad = [
        lambda: cosine_scores(e, t[:3]),
        lambda: cosine_scores(e, embeddings(4, dim=8)),
        lambda: cosine_scores(e[0], t[0]),
        lambda: cosine_scores(e, t, mean=torch.zeros(3)),
        lambda: as_norm(s[:3], e, t, c),
        lambda: as_norm(s, e, t, embeddings(10, dim=8)),
        lambda: as_norm(s, e, t, c[:1]),
        lambda: as_norm(s, e, t, c, top_n=1),
        lambda: as_norm(s, e, t, torch.ones(5, 16)),  # identical cohort: zero spread
        lambda: EmbeddingTable(["a", "a"], embeddings(2)),
        lambda: EmbeddingTable(["a"], embeddings(2)),
    ]
    for fn in bad:
        with pytest.raises(KdcacheError):
            fn()
