import numpy as np
import pytest

from kdcache.data.crops import CropPlan, plan_rows, seed_sequence_state
from kdcache.errors import KdcacheError

CROP = 32240
LENGTHS = [50000, 32240, 1000, 160000, 40000, 32241, 90000]


def _reference(lengths: list[int], plan: CropPlan) -> set[tuple[int, int, int]]:
    """(utterance, start, aug_seed) of every (u, k), straight from numpy's SeedSequence."""
    out = set()
    for u, n in enumerate(lengths):
        for k in range(plan.per_utt):
            w = np.random.SeedSequence([plan.seed, u, k]).generate_state(2, np.uint64)
            start = int(w[0] % np.uint64(max(n - CROP, 0) + 1))
            out.add((u, start, int(w[1] >> np.uint64(1))))
    return out


def test_rows_are_a_permutation_of_all_pairs() -> None:
    plan = CropPlan(seconds=2.0, per_utt=3, seed=7)
    rows = plan_rows(LENGTHS, plan, CROP)
    assert len(rows) == len(LENGTHS) * 3
    assert {(int(u), int(s), int(a)) for u, s, a in zip(rows.utterance, rows.start, rows.aug_seed)} \
        == _reference(LENGTHS, plan)
    assert np.bincount(rows.utterance).tolist() == [3] * len(LENGTHS)
    assert not np.all(np.diff(rows.utterance) >= 0)  # shuffled, not grouped
    assert rows.utterance.dtype == rows.start.dtype == rows.num_samples.dtype == np.int64
    assert rows.aug_seed.dtype == np.uint64 and int(rows.aug_seed.max()) < 2**63
    assert np.all(rows.num_samples == CROP)


def test_starts_within_bounds() -> None:
    lengths = np.random.default_rng(0).integers(500, 100000, 300)
    rows = plan_rows(lengths, CropPlan(per_utt=5), CROP)
    n = lengths[rows.utterance]
    assert np.all(rows.start >= 0)
    assert np.all(rows.start <= np.maximum(n - CROP, 0))
    assert np.all(rows.start[n <= CROP] == 0)
    long = n > 3 * CROP
    assert rows.start[long].max() > CROP  # draws reach across the utterance


def test_deterministic_and_seeded() -> None:
    a = plan_rows(LENGTHS, CropPlan(seed=1), CROP)
    b = plan_rows(LENGTHS, CropPlan(seed=1), CROP)
    c = plan_rows(LENGTHS, CropPlan(seed=2), CROP)
    for name in ("utterance", "start", "num_samples", "aug_seed"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.aug_seed, c.aug_seed)


def test_pair_draws_do_not_depend_on_corpus_size() -> None:
    plan = CropPlan(per_utt=2, seed=3)
    small = _reference(LENGTHS[:3], plan)
    rows = plan_rows(LENGTHS, plan, CROP)
    big = {(int(u), int(s), int(a)) for u, s, a in zip(rows.utterance, rows.start, rows.aug_seed)}
    assert small <= big


def test_chunk_is_a_random_sample() -> None:
    rows = plan_rows([CROP * 2] * 1000, CropPlan(per_utt=4), CROP)
    first = rows.utterance[:400]
    assert len(np.unique(first)) > 300 and first.max() > 900 and first.min() < 100


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1, 2**32 + 5, 2**64 + 3])
def test_vectorised_seed_sequence(seed: int) -> None:
    u = np.array([0, 1, 17, 2**31, 2**32 - 1])
    k = np.array([0, 9, 1, 3, 2**32 - 1])
    got = seed_sequence_state([seed], u, k, n_words=3)
    for i in range(len(u)):
        ref = np.random.SeedSequence([seed, int(u[i]), int(k[i])]).generate_state(3, np.uint64)
        assert np.array_equal(got[:, i], ref)


def test_plan_config() -> None:
    plan = CropPlan(seconds=3.0, per_utt=10, seed=4)
    assert CropPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(KdcacheError):
        CropPlan.from_dict({"seconds": 2.0, "crops": 3})
    with pytest.raises(KdcacheError):
        CropPlan(per_utt=0)
    with pytest.raises(KdcacheError):
        plan_rows([100, 0], CropPlan(), CROP)
