"""Deletion / insertion curves on a model whose answer is known by hand, and on a real tiny model."""

import json
import math

import numpy as np
import pytest
import torch

from kdcache.errors import KdcacheError
from kdcache.evaluate.saliency_eval import (
    area_under_curve, frame_counts, frame_ranks, frame_scores, saliency_curves,
)


class WeightedFrames(torch.nn.Module):
    """Two classes: logit 0 = sum_t w_t x[t, 0] (bin 0 only), logit 1 = 0. IG from 0 is w_t x_t exactly."""

    def __init__(self, weights):
        super().__init__()
        self.weights = torch.tensor(weights, dtype=torch.float32)

    def forward(self, x):
        z = (x[:, :, 0] * self.weights).sum(1)
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def _toy():
    x = torch.zeros(1, 4, 2)
    x[0, :, 0] = torch.tensor([2.0, 1.0, -1.0, 0.5])
    x[0, :, 1] = torch.tensor([9.0, -9.0, 5.0, 7.0])  # bin 1 has weight 0: no effect
    return WeightedFrames([1.0, 3.0, 2.0, 2.0]), x  # contributions w_t x_t = [2, 3, -2, 1]


def test_curves_follow_the_known_frame_order_and_auc():
    model, x = _toy()
    out = saliency_curves(model, x, torch.tensor([0]), steps=7, points=5)
    np.testing.assert_allclose(out["frame_scores"][0], [2.0, 3.0, -2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out["fractions"], [0.0, 0.25, 0.5, 0.75, 1.0])
    # deletion removes frames 1, 0, 3, 2: logit 4 -> 1 -> -1 -> -2 -> 0
    deletion = [_sigmoid(z) for z in (4.0, 1.0, -1.0, -2.0, 0.0)]
    # insertion puts back 1, 0, 3, 2 into zeros: logit 0 -> 3 -> 5 -> 6 -> 4
    insertion = [_sigmoid(z) for z in (0.0, 3.0, 5.0, 6.0, 4.0)]
    np.testing.assert_allclose(out["deletion"][0], deletion, rtol=1e-6)
    np.testing.assert_allclose(out["insertion"][0], insertion, rtol=1e-6)
    by_hand = lambda p: 0.25 * (p[0] / 2 + p[1] + p[2] + p[3] + p[4] / 2)  # noqa: E731
    assert out["auc_deletion"][0] == pytest.approx(by_hand(deletion), rel=1e-6)
    assert out["auc_insertion"][0] == pytest.approx(by_hand(insertion), rel=1e-6)
    # 0.25 * (0.98201/2 + 0.73106 + 0.26894 + 0.11920 + 0.5/2) = 0.25 * 1.86021
    assert out["auc_deletion"][0] == pytest.approx(0.46505, abs=1e-5)


def test_target_class_is_tracked_per_row():
    model, x = _toy()
    both = torch.cat([x, x])
    out = saliency_curves(model, both, torch.tensor([0, 1]), steps=3, points=5)
    # class 1's logit is constant 0, so its IG is 0 everywhere and its probability is 1 - p(class 0)
    np.testing.assert_allclose(out["frame_scores"][1], 0.0, atol=1e-7)
    assert out["deletion"][1, 0] == pytest.approx(1.0 - _sigmoid(4.0), rel=1e-6)
    assert out["insertion"][1, 0] == pytest.approx(0.5, rel=1e-6)


def test_frame_ranks_abs_scores_and_ties():
    attributions = torch.tensor([[[2.0, 0.0], [1.0, 2.0], [-2.0, 0.0], [1.0, 0.0]]])
    assert frame_scores(attributions, "sum").tolist() == [[2.0, 3.0, -2.0, 1.0]]
    scores = frame_scores(attributions, "abs")  # [2, 3, 2, 1]: frames 0 and 2 tie
    assert frame_ranks(scores).tolist() == [[1, 0, 2, 3]]
    with pytest.raises(KdcacheError, match="frame-score"):
        frame_scores(attributions, "max")


def test_frame_counts_and_area():
    assert frame_counts(4, 3).tolist() == [0, 2, 4]
    assert frame_counts(3, 5).tolist() == [0, 1, 2, 3]  # 0.75 and 2.25 round to 1 and 2; duplicates dropped
    assert frame_counts(200, 21)[-1] == 200
    with pytest.raises(KdcacheError, match="points"):
        frame_counts(10, 1)
    assert area_under_curve(np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)
    assert area_under_curve(np.array([0.0, 0.25, 1.0]), np.array([0.0, 1.0, 1.0])) == pytest.approx(0.875)


def test_saliency_eval_on_a_trained_model(tiny_corpus, tiny_teacher, tmp_path):
    from kdcache.data.features import FeatureConfig
    from kdcache.evaluate.saliency_report import SaliencyEvalConfig, centre_crop_fbank, run_saliency_eval
    from kdcache.models.checkpoint import load_model_dir
    from kdcache.teacher.saliency import TargetLogit

    cfg = SaliencyEvalConfig(models=[str(tiny_teacher), str(tiny_teacher)], labels=["teacher", "again"],
                             data=str(tiny_corpus / "train"), out=str(tmp_path / "out"), utterances=3,
                             crop_seconds=0.5, ig_steps=4, points=6, batch_size=2, show_progress=False)
    summary = run_saliency_eval(cfg)
    saved = json.loads((tmp_path / "out" / "saliency_eval.json").read_text())
    assert saved["utterances"] == summary["utterances"] and len(saved["utterances"]) == 3
    assert (tmp_path / "out" / "saliency_eval.png").stat().st_size > 1000
    teacher, again = saved["models"]
    assert again["vs_reference"]["mean_abs_deletion_gap"] == pytest.approx(0.0, abs=1e-9)
    assert again["vs_reference"]["frame_saliency_correlation"] == pytest.approx(1.0, abs=1e-6)
    # Fraction 0 of deletion is the untouched crop; deletion at 1 and insertion at 0 are both all zeros.
    model, config = load_model_dir(tiny_teacher, map_location="cpu")
    model.eval()
    features = FeatureConfig.from_dict(config.features)
    corpus_dir = tiny_corpus / "train"
    from kdcache.data.corpus import load_corpus

    corpus = load_corpus(corpus_dir)
    feats = torch.stack([centre_crop_fbank(corpus.by_id(u).path, features.crop_num_samples(0.5), features)
                         for u in saved["utterances"]])
    targets = torch.tensor([config.speakers.index(corpus.by_id(u).speaker) for u in saved["utterances"]])
    with torch.no_grad():
        p = torch.softmax(TargetLogit(model)(feats).double(), 1).gather(1, targets.view(-1, 1)).squeeze(1)
        p0 = torch.softmax(TargetLogit(model)(torch.zeros_like(feats)).double(), 1).gather(1, targets.view(-1, 1))
    assert teacher["mean_deletion"][0] == pytest.approx(float(p.mean()), rel=1e-5)
    assert teacher["mean_deletion"][-1] == pytest.approx(float(p0.mean()), rel=1e-5)
    assert teacher["mean_insertion"][0] == pytest.approx(float(p0.mean()), rel=1e-5)
    assert teacher["mean_insertion"][-1] == pytest.approx(float(p.mean()), rel=1e-5)
    aucs = teacher["per_utterance"]["auc_deletion"]
    assert teacher["auc_deletion"]["mean"] == pytest.approx(float(np.mean(aucs)))


def test_saliency_eval_refuses_unknown_speakers(tiny_corpus, tiny_teacher, tmp_path):
    from kdcache.evaluate.saliency_report import SaliencyEvalConfig, run_saliency_eval

    cfg = SaliencyEvalConfig(models=[str(tiny_teacher)], data=str(tiny_corpus / "test"), out=str(tmp_path / "o"),
                             show_progress=False)
    with pytest.raises(KdcacheError, match="training corpus"):
        run_saliency_eval(cfg)
