"""EER / minDCF / DET against hand-computed cases and a brute-force threshold sweep."""

from __future__ import annotations

import numpy as np
import pytest

from kdcache.errors import KdcacheError
from kdcache.evaluate.metrics import compute_eer, compute_min_dcf, det_curve


def trials(targets, nontargets):
    scores = np.array(list(targets) + list(nontargets), dtype=float)
    labels = np.array([1] * len(targets) + [0] * len(nontargets))
    return scores, labels


# Case A. targets 0.9 0.8 0.4, non-targets 0.7 0.3 0.2 0.1. Accept score >= t:
#   t     fnr   fpr   fnr - fpr   fnr + 99 fpr (cost at p = 0.01, normalised by 0.01)
#   0.1   0     1     -1          99
#   0.2   0     3/4   -3/4        74.25
#   0.3   0     1/2   -1/2        49.5
#   0.4   0     1/4   -1/4        24.75
#   0.7   1/3   1/4   +1/12       25.083
#   0.8   1/3   0     +1/3        1/3   <- minimum: minDCF(0.01) = 1/3
#   0.9   2/3   0                 2/3
#   inf   1     0                 1
# fnr - fpr changes sign between t = 0.4 (d = -1/4) and t = 0.7 (d = +1/12); the segment
# crosses fnr = fpr at a = (1/12) / (1/12 + 1/4) = 1/4 of the way back from 0.7:
#   EER = 1/3 + 1/4 * (0 - 1/3) = 1/4   (and fpr there: 1/4 + 1/4 * (1/4 - 1/4) = 1/4).
# At p = 0.5 the normalised cost is fnr + fpr: minimum 1/4 at t = 0.4.
CASE_A = trials([0.9, 0.8, 0.4], [0.7, 0.3, 0.2, 0.1])


def test_case_a_by_hand():
    scores, labels = CASE_A
    fnr, fpr, thr = det_curve(scores, labels)
    np.testing.assert_allclose(thr, [0.1, 0.2, 0.3, 0.4, 0.7, 0.8, 0.9, np.inf])
    np.testing.assert_allclose(fnr, [0, 0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(fpr, [1, 0.75, 0.5, 0.25, 0.25, 0, 0, 0])
    assert compute_eer(scores, labels) == pytest.approx(0.25, abs=1e-12)
    assert compute_min_dcf(scores, labels) == pytest.approx(1 / 3, abs=1e-12)
    assert compute_min_dcf(scores, labels, p_target=0.5) == pytest.approx(0.25, abs=1e-12)
    # c_miss = 10, p = 0.01: cost 0.1 fnr + 0.99 fpr, normalised by 0.1: fnr + 9.9 fpr, min 1/3 at 0.8
    assert compute_min_dcf(scores, labels, c_miss=10.0) == pytest.approx(1 / 3, abs=1e-12)
    # labels as bool give the same
    assert compute_eer(scores, labels.astype(bool)) == compute_eer(scores, labels)


# Case B, ties. targets 0.5 0.9, non-targets 0.5 0.1; the two 0.5 trials are accepted together:
#   t     fnr   fpr   fnr + 99 fpr
#   0.1   0     1     99
#   0.5   0     1/2   49.5
#   0.9   1/2   0     1/2   <- minDCF(0.01) = 1/2
#   inf   1     0     1
# crossing between t = 0.5 (d = -1/2) and 0.9 (d = +1/2): a = 1/2, EER = 1/2 + 1/2 (0 - 1/2) = 1/4.
# A cumulative sum over sorted scores that splits the tie gives EER 0 or 1/2 and minDCF 0 or 1/2,
# depending on which 0.5 trial sorts first.
def test_tied_scores_by_hand_and_order_independent():
    scores, labels = trials([0.5, 0.9], [0.5, 0.1])
    for perm in ([0, 1, 2, 3], [2, 0, 3, 1], [1, 3, 2, 0], [3, 2, 1, 0]):
        s, y = scores[perm], labels[perm]
        fnr, fpr, thr = det_curve(s, y)
        np.testing.assert_allclose(thr, [0.1, 0.5, 0.9, np.inf])
        np.testing.assert_allclose(fnr, [0, 0, 0.5, 1])
        np.testing.assert_allclose(fpr, [1, 0.5, 0, 0])
        assert compute_eer(s, y) == pytest.approx(0.25, abs=1e-12)
        assert compute_min_dcf(s, y) == pytest.approx(0.5, abs=1e-12)


def test_all_scores_tied():
    # one threshold (accept all: fnr 0, fpr 1) and +inf (fnr 1, fpr 0): EER 1/2 on the diagonal,
    # minDCF = min(99, 1) = 1
    scores, labels = trials([1.0, 1.0], [1.0, 1.0, 1.0])
    assert compute_eer(scores, labels) == pytest.approx(0.5)
    assert compute_min_dcf(scores, labels) == pytest.approx(1.0)


def test_perfect_and_reversed_separation():
    scores, labels = trials([0.6, 0.9, 0.7], [0.1, 0.5, 0.2])
    assert compute_eer(scores, labels) == 0.0
    assert compute_min_dcf(scores, labels) == 0.0
    # the target scores touching the highest non-target score is not separation: t = 0.5 accepts it
    scores, labels = trials([0.5, 0.9], [0.1, 0.5])
    assert compute_eer(scores, labels) > 0
    # reversed: points (fnr, fpr) = (0,1) (1/2,1) (1,1) (1,1/2) (1,0); fnr = fpr first at (1,1): EER 1;
    # fnr + 99 fpr is smallest at (1,0): minDCF 1
    scores, labels = trials([0.1, 0.2], [0.8, 0.9])
    assert compute_eer(scores, labels) == pytest.approx(1.0)
    assert compute_min_dcf(scores, labels) == pytest.approx(1.0)


def brute_force(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Every threshold (each distinct score, midpoints, +-inf): EER bounds and minDCF."""
    u = np.unique(scores)
    cands = np.concatenate([[-np.inf, np.inf], u, (u[1:] + u[:-1]) / 2])
    tgt, non = scores[labels == 1], scores[labels == 0]
    best_cost, lo, hi = np.inf, 0.0, 1.0
    for t in cands:
        fnr = np.mean(tgt < t)
        fpr = np.mean(non >= t)
        best_cost = min(best_cost, c_miss * p_target * fnr + c_fa * (1 - p_target) * fpr)
        lo = max(lo, min(fnr, fpr))
        hi = min(hi, max(fnr, fpr))
    return lo, hi, best_cost / min(c_miss * p_target, c_fa * (1 - p_target))


@pytest.mark.parametrize("seed", range(6))
def test_against_brute_force_sweep(seed):
    rng = np.random.default_rng(seed)
    n_tgt, n_non = rng.integers(5, 60), rng.integers(20, 300)
    scores = np.concatenate([rng.normal(1.0, 1.0, n_tgt), rng.normal(-0.5, 1.0, n_non)])
    if seed % 2:
        scores = np.round(scores, 1)  # many ties
    labels = np.concatenate([np.ones(n_tgt, int), np.zeros(n_non, int)])
    perm = rng.permutation(len(scores))
    scores, labels = scores[perm], labels[perm]
    for p_target, c_miss, c_fa in ((0.01, 1.0, 1.0), (0.05, 1.0, 1.0), (0.3, 2.0, 0.5)):
        lo, hi, min_dcf = brute_force(scores, labels, p_target, c_miss, c_fa)
        got = compute_min_dcf(scores, labels, p_target, c_miss, c_fa)
        assert got == pytest.approx(min_dcf, abs=1e-9)
    eer = compute_eer(scores, labels)
    assert lo - 1e-12 <= eer <= hi + 1e-12


def wespeaker_style(scores, labels):
    """Sorted cumulative rates and the crossing interpolation, written as loops (no ties allowed)."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    n_t, n_n = int(sum(labels)), len(labels) - int(sum(labels))
    fnr, fpr, seen_t, seen_n = [], [], 0, 0
    for i in order:
        seen_t += labels[i]
        seen_n += 1 - labels[i]
        fnr.append(seen_t / n_t)
        fpr.append(1 - seen_n / n_n)
    for k in range(1, len(fnr)):
        if fnr[k] - fpr[k] >= 0 > fnr[k - 1] - fpr[k - 1]:
            d1, d2 = fnr[k] - fpr[k], fnr[k - 1] - fpr[k - 1]
            eer = fnr[k] + d1 / (d1 - d2) * (fnr[k - 1] - fnr[k])
            break
    cost = min(0.01 * a + 0.99 * b for a, b in zip(fnr, fpr)) / 0.01
    return eer, cost


@pytest.mark.parametrize("seed", range(4))
def test_matches_wespeaker_definition_without_ties(seed):
    rng = np.random.default_rng(100 + seed)
    scores = np.concatenate([rng.normal(1.5, 1.0, 40), rng.normal(0.0, 1.0, 400)])
    labels = np.concatenate([np.ones(40, int), np.zeros(400, int)])
    eer, min_dcf = wespeaker_style(list(scores), list(labels))
    assert compute_eer(scores, labels) == pytest.approx(eer, abs=1e-12)
    assert compute_min_dcf(scores, labels) == pytest.approx(min_dcf, abs=1e-12)


def test_invalid_inputs():
    scores, labels = CASE_A
    bad = [
        lambda: compute_eer([], []),
        lambda: compute_eer(scores, np.ones_like(labels)),
        lambda: compute_min_dcf(scores, np.zeros_like(labels)),
        lambda: compute_eer(scores, labels[:-1]),
        lambda: compute_eer(np.where(labels == 1, np.nan, scores), labels),
        lambda: compute_eer(scores, labels * 2),
        lambda: compute_eer(scores.reshape(1, -1), labels.reshape(1, -1)),
        lambda: compute_min_dcf(scores, labels, p_target=0.0),
        lambda: compute_min_dcf(scores, labels, p_target=1.0),
        lambda: compute_min_dcf(scores, labels, c_miss=0.0),
        lambda: compute_min_dcf(scores, labels, c_fa=-1.0),
        lambda: det_curve(scores, np.array(["a"] * len(scores))),
    ]
    for fn in bad:
        with pytest.raises(KdcacheError):
            fn()


def test_one_class_only_names_the_class_that_is_missing():
    with pytest.raises(KdcacheError, match="no non-target trials"):
        compute_eer([0.1, 0.2], [1, 1])
    with pytest.raises(KdcacheError, match="no target trials"):
        compute_eer([0.1, 0.2], [0, 0])
