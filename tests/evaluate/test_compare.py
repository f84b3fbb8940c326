"""Paired comparisons: score files, the speaker bootstrap and the seed intervals, against hand values."""

import json
import math

import numpy as np
import pytest

from kdcache.errors import KdcacheError
from kdcache.evaluate.compare import (
    align, compare_runs, find_score_file, read_scores, seed_interval, speaker_bootstrap, t_quantile_975,
    trial_weights,
)
from kdcache.evaluate.metrics import compute_eer

# 3 speakers, 2 utterances each: 3 target trials and 6 non-target trials
TRIALS = [
    ("a/s/1.wav", "a/s/2.wav", True), ("b/s/1.wav", "b/s/2.wav", True), ("c/s/1.wav", "c/s/2.wav", True),
    ("a/s/1.wav", "b/s/1.wav", False), ("a/s/2.wav", "c/s/1.wav", False), ("b/s/2.wav", "c/s/2.wav", False),
    ("a/s/1.wav", "c/s/2.wav", False), ("b/s/1.wav", "a/s/2.wav", False), ("c/s/1.wav", "b/s/2.wav", False),
]


def _write(path, scores, trials=TRIALS):
    path.write_text("".join(f"{e} {t} {s} {'target' if y else 'nontarget'}\n" for (e, t, y), s in zip(trials, scores)))
    return path


def _perfect():
    return [0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.0, -0.1, 0.15]


def test_read_and_align(tmp_path):
    a = read_scores(_write(tmp_path / "a", _perfect()))
    assert a.labels.tolist() == [True] * 3 + [False] * 6 and a.scores[1] == 0.8
    shuffled = list(reversed(list(zip(TRIALS, _perfect()))))
    b = read_scores(_write(tmp_path / "b", [s for _, s in shuffled], [t for t, _ in shuffled]))
    _, b_scores = align(a, b)
    np.testing.assert_array_equal(b_scores, a.scores)
    c = read_scores(_write(tmp_path / "c", _perfect()[:8], TRIALS[:8]))
    with pytest.raises(KdcacheError, match="different trials"):
        align(a, c)
    (tmp_path / "bad").write_text("x y 0.5 maybe\n")
    with pytest.raises(KdcacheError, match="bad:1"):
        read_scores(tmp_path / "bad")


def test_trial_weights_by_hand():
    enroll = np.array([0, 1, 0, 1])
    test = np.array([0, 1, 2, 2])
    counts = np.array([2, 0, 3])  # speaker 0 drawn twice, 1 never, 2 three times
    assert trial_weights(enroll, test, counts).tolist() == [2, 0, 6, 0]


def test_bootstrap_of_a_perfect_against_an_inverted_system(tmp_path):
    a = read_scores(_write(tmp_path / "a", _perfect()))
    inverted = -a.scores
    out = speaker_bootstrap(a, [a.scores], [inverted], replicates=50)
    assert (out["eer_a"], out["eer_b"]) == (0.0, 1.0)
    assert (out["difference"], out["low"], out["high"], out["p_a_not_better"]) == (-1.0, -1.0, -1.0, 0.0)
    same = speaker_bootstrap(a, [a.scores], [a.scores.copy()], replicates=50)
    assert (same["low"], same["high"], same["p_a_not_better"]) == (0.0, 0.0, 1.0)
    assert out["num_speakers"] == 3


def test_bootstrap_replicate_equals_hand_expanded_trials(tmp_path):
    """One replicate: the EER of the trials repeated by their weights, for two seeds of A."""
    rng = np.random.default_rng(1)
    a = read_scores(_write(tmp_path / "a", _perfect()))
    a2, b = a.scores + rng.normal(0, 0.3, 9), a.scores + rng.normal(0, 0.5, 9)
    out = speaker_bootstrap(a, [a.scores, a2], [b], replicates=1, seed=7)
    # the same draw by hand
    n = np.bincount(np.random.default_rng(7).integers(0, 3, 3), minlength=3)
    spk = {"a": 0, "b": 1, "c": 2}
    w = [n[spk[e[0]]] if e[0] == t[0] else n[spk[e[0]]] * n[spk[t[0]]] for e, t, _ in TRIALS]
    y = np.repeat(a.labels, w)
    if y.all() or not y.any():
        pytest.skip("this draw is redrawn by the library")
    by_hand = (compute_eer(np.repeat(a.scores, w), y) + compute_eer(np.repeat(a2, w), y)) / 2 \
        - compute_eer(np.repeat(b, w), y)
    assert out["low"] == pytest.approx(by_hand) and out["high"] == pytest.approx(by_hand)
    assert out["eer_a"] == pytest.approx((compute_eer(a.scores, a.labels) + compute_eer(a2, a.labels)) / 2)


def test_t_quantiles():
    # printed table values (4 decimals); a fractional df rounds down
    assert t_quantile_975(2) == pytest.approx(4.3027, abs=1e-4) and t_quantile_975(2.9) == t_quantile_975(2)
    assert t_quantile_975(30) == pytest.approx(2.0423, abs=1e-4)
    assert t_quantile_975(45) == pytest.approx(2.0141, abs=2e-4)  # table value of t(0.975, 45)
    assert t_quantile_975(1e12) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(KdcacheError):
        t_quantile_975(0.5)


def test_seed_intervals_by_hand():
    paired = seed_interval([0.03, 0.04, 0.05], [0.02, 0.02, 0.03], [0, 1, 2], [0, 1, 2])
    # per-seed differences 0.01, 0.02, 0.02: mean 1/60, sd sqrt(1/3)/100, se = sd / sqrt(3) = 1/300
    assert paired["method"] == "paired t"
    assert paired["difference"] == pytest.approx(1 / 60)
    assert paired["low"] == pytest.approx(1 / 60 - 4.3027 / 300, abs=1e-6)
    assert paired["high"] == pytest.approx(1 / 60 + 4.3027 / 300, abs=1e-6)
    welch = seed_interval([1.0, 2.0, 3.0], [2.0, 4.0])
    # va = 1/3, vb = 1: se = sqrt(4/3); df = (4/3)^2 / ((1/3)^2 / 2 + 1) = 1.68 -> t(1) = 12.7062
    assert welch["method"] == "Welch t" and welch["df"] == pytest.approx((16 / 9) / (1 / 18 + 1))
    assert welch["low"] == pytest.approx(-1 - 12.7062 * math.sqrt(4 / 3), abs=1e-4)
    with pytest.raises(KdcacheError, match="2 seeds"):
        seed_interval([0.1], [0.2, 0.3])
    assert "note" not in paired and "note" not in welch


def test_seeds_that_agree_exactly_give_a_flagged_zero_width_interval():
    """EER moves in steps of 1/targets: two seeds can differ by exactly the same amount (the study's ResNet34
    dkd T 2 b 8 against kd T 2: 1.05 - 1.20 and 1.10 - 1.25)."""
    flat = seed_interval([0.0105, 0.011], [0.012, 0.0125], [0, 1], [0, 1])
    assert flat["low"] == pytest.approx(-0.0015) and flat["high"] == pytest.approx(-0.0015)
    assert "width 0" in flat["note"]


def test_compare_runs_reads_run_directories(tmp_path):
    rng = np.random.default_rng(0)
    runs = {}
    for name, noise in (("dkd", 0.1), ("ce", 0.6)):
        for seed in (0, 1):
            d = tmp_path / f"{name}-s{seed}"
            d.mkdir()
            _write(d / "scores.txt", np.array(_perfect()) + rng.normal(0, noise, 9))
            (d / "config.json").write_text(json.dumps({"extra": {"training": {"seed": seed}}}))
            runs.setdefault(name, []).append(d)
    out = compare_runs(runs["dkd"], runs["ce"], replicates=20, names=("dkd", "ce"))
    assert out["seeds"] == {"a": [0, 1], "b": [0, 1]} and out["over_seeds"]["method"] == "paired t"
    assert out["over_speakers"]["difference"] == pytest.approx(np.mean(out["eers"]["a"]) - np.mean(out["eers"]["b"]))
    single = compare_runs(runs["dkd"][:1], runs["ce"][:1], replicates=5)
    assert "skipped" in single["over_seeds"]
    assert find_score_file(runs["ce"][0]) == runs["ce"][0] / "scores.txt"
    with pytest.raises(KdcacheError, match="no score file"):
        find_score_file(tmp_path)
