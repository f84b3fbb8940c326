"""ig-steps: the Riemann sum's completeness error against a model where it is known by hand, the other
measures against their definitions, and a run on a real tiny teacher."""

import json
import math

import pytest
import torch

from kdcache.errors import KdcacheError
from kdcache.evaluate.ig_steps import (
    IgStepsConfig, completeness_errors, kl_divergence, map_correlation, run_ig_steps,
)
from kdcache.teacher.saliency import integrated_gradients


class HalfSquare(torch.nn.Module):
    """Two classes: logit 0 = z^2 / 2 with z the sum of every bin of the input (any length); logit 1 = 0.

    Along the IG path a*x the gradient of bin i is a*z, so the right Riemann sum with n steps gives
    sum A = z^2 (n + 1) / (2n) against the true z^2 / 2: an absolute error of z^2 / (2n), relative 1/n.
    """

    def forward(self, x):
        z = x.sum(dim=(1, 2))
        return torch.stack([z * z / 2, torch.zeros_like(z)], dim=1)


@pytest.mark.parametrize("steps", [2, 5, 50])
def test_completeness_error_is_the_right_riemann_sums_miss(steps):
    x = torch.tensor([[[1.0, 2.0], [0.5, -0.5], [1.0, 0.0], [0.0, 1.0]]])  # z = 5 over the crop
    model, target = HalfSquare(), torch.tensor([0])
    maps = integrated_gradients(model, x, target, steps).unsqueeze(1)  # one duration: the whole crop
    absolute, relative = completeness_errors(model, x, target, maps, [4])
    assert absolute.item() == pytest.approx(25 / (2 * steps), rel=1e-5)
    assert relative.item() == pytest.approx(1 / steps, rel=1e-5)


def test_completeness_error_averages_over_segments():
    # two 2-frame segments, z = 3.5 and 1.5: absolute errors z^2/(2n), each relative 1/n
    x = torch.tensor([[[1.0, 2.0], [0.5, 0.0], [1.0, 0.0], [0.0, 0.5]]])
    model, target, steps = HalfSquare(), torch.tensor([0]), 4
    halves = [integrated_gradients(model, x[:, lo:lo + 2], target, steps) for lo in (0, 2)]
    maps = torch.cat(halves, dim=1).unsqueeze(1)
    absolute, relative = completeness_errors(model, x, target, maps, [2])
    assert absolute.item() == pytest.approx((3.5 ** 2 + 1.5 ** 2) / (2 * steps) / 2, rel=1e-5)
    assert relative.item() == pytest.approx(1 / steps, rel=1e-5)


def test_map_correlation_and_kl_by_hand():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    r = map_correlation(a, torch.stack([2 * a[0] + 1, a[1]]))
    assert r[0].item() == pytest.approx(1.0) and math.isnan(r[1].item())  # no spread: no correlation
    assert map_correlation(a[:1], -a[:1]).item() == pytest.approx(-1.0)
    # p = softmax([0, ln 3]) = [1/4, 3/4], q = [1/2, 1/2]: KL = 1/4 ln(1/2) + 3/4 ln(3/2)
    kl = kl_divergence(torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64), torch.tensor([[5.0, 5.0]]))
    assert kl.item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-9)


def test_config_refuses_bad_step_lists(tmp_path):
    for steps in ((10,), (1, 10), (5, 5)):
        with pytest.raises(KdcacheError, match="--steps"):
            IgStepsConfig(model="m", data="d", out=str(tmp_path), steps=steps).check()
    with pytest.raises(KdcacheError, match="--integrated-input"):
        IgStepsConfig(model="m", data="d", out=str(tmp_path), integrated_input="raw").check()


def test_run_on_a_trained_teacher(tiny_corpus, tiny_teacher, tmp_path):
    from captum.attr import IntegratedGradients

    from kdcache.data.corpus import load_corpus
    from kdcache.data.features import FeatureConfig
    from kdcache.evaluate.saliency_report import centre_crop_fbank
    from kdcache.models.checkpoint import load_model_dir
    from kdcache.teacher.saliency import TargetLogit

    cfg = IgStepsConfig(model=str(tiny_teacher), data=str(tiny_corpus / "train"), out=str(tmp_path / "o"),
                        steps=(6, 2), utterances=3, crop_seconds=0.5, ig_durations=(0.5,), batch_size=2,
                        show_progress=False)
    summary = run_ig_steps(cfg)
    saved = json.loads((tmp_path / "o" / "ig_steps.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert (tmp_path / "o" / "ig_steps.png").stat().st_size > 1000
    assert summary["duration_frames"] == [50] and summary["reference_steps"] == 6
    rows = {r["steps"]: r for r in summary["rows"]}
    assert list(rows) == [2, 6]
    assert rows[6]["map_correlation"]["mean"] == pytest.approx(1.0)
    assert rows[6]["integrated_kl"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert rows[2]["integrated_kl"]["mean"] > 0.0
    for row in rows.values():
        assert 0.0 <= row["integrated_top1"]["mean"] <= 1.0 and row["cpu_seconds_per_crop"]["mean"] > 0.0
    # Independently: Captum's own convergence delta (sum of attributions minus f(x) - f(0)) on the same
    # crops; the tool's maps are float16-rounded as in a cache, hence the tolerance.
    model, config = load_model_dir(tiny_teacher, map_location="cpu")
    model.eval()
    features = FeatureConfig.from_dict(config.features)
    corpus = load_corpus(tiny_corpus / "train")
    feats = torch.stack([centre_crop_fbank(corpus.by_id(u).path, features.crop_num_samples(0.5), features)
                         for u in summary["utterances"]])
    targets = torch.tensor([config.speakers.index(corpus.by_id(u).speaker) for u in summary["utterances"]])
    for steps in (2, 6):
        _, delta = IntegratedGradients(TargetLogit(model)).attribute(
            feats.requires_grad_(True), baselines=torch.zeros_like(feats), target=targets, n_steps=steps,
            method="riemann_right", return_convergence_delta=True)
        expected = float(delta.detach().abs().mean())
        assert rows[steps]["completeness_error"]["mean"] == pytest.approx(expected, rel=2e-3, abs=2e-3)
