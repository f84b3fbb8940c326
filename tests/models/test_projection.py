"""The AAM head (ArcMarginProduct), its margin schedule and attach_head."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kdcache.errors import KdcacheError
from kdcache.models import ArcMarginProduct, MarginScheduler, attach_head, build_model, count_parameters
from tests.models.wespeaker_fill import FIXTURES

FIX = json.loads((FIXTURES / "projection_arcmargin.json").read_text())
CASES = FIX["cases"]


def _case_id(case):
    return f"m{case['margin']}-{'easy' if case['easy_margin'] else 'hard'}"


def _head(case) -> ArcMarginProduct:
    head = ArcMarginProduct(FIX["embed_dim"], FIX["num_class"], scale=case["scale"],
                            margin=0.0, easy_margin=case["easy_margin"])
    with torch.no_grad():
        head.weight.copy_(torch.tensor(FIX["weight"]))
    head.update(case["margin"])
    return head


def _formula64(weight, x, labels, margin, easy, scale) -> np.ndarray:
    """PROJECTION.md's forward, written independently in float64 numpy."""
    w = np.asarray(weight, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
        w / np.linalg.norm(w, axis=1, keepdims=True)).T
    out = cos.copy()
    for i, j in enumerate(labels):
        c = cos[i, j]
        phi = math.cos(math.acos(c) + margin)
        if easy:
            out[i, j] = phi if c > 0 else c
        else:
            out[i, j] = phi if c > -math.cos(margin) else c - (1.0 - math.cos(margin))
    return scale * out


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fixture_logits(case):
    head = _head(case)
    assert head.th == pytest.approx(case["th"], abs=1e-12)
    assert head.mmm == pytest.approx(case["mmm"], abs=1e-12)
    x = torch.tensor(FIX["input"])
    labels = torch.tensor(FIX["labels"])
    cos = head.cosine(x)
    target = cos.gather(1, labels.view(-1, 1)).squeeze(1)
    np.testing.assert_allclose(target.detach().numpy(), case["target_cosine"], rtol=0, atol=2e-6)
    logits = head(x, labels)
    assert logits.shape == (len(FIX["labels"]), FIX["num_class"]) and logits.dtype == torch.float32
    np.testing.assert_allclose(logits.detach().numpy(), case["logits"], rtol=0, atol=2e-5)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_float64_formula(case):
    expected = _formula64(FIX["weight"], FIX["input"], FIX["labels"], case["margin"],
                          case["easy_margin"], case["scale"])
    np.testing.assert_allclose(expected, case["logits"], rtol=0, atol=2e-5)
    logits = _head(case)(torch.tensor(FIX["input"]), torch.tensor(FIX["labels"]))
    np.testing.assert_allclose(logits.detach().numpy(), expected, rtol=0, atol=2e-5)


def test_fallback_branch_is_exercised():
    # The last row's target cosine is below th for m = 0.2, so the linear fallback applies.
    case = next(c for c in CASES if c["margin"] == 0.2 and not c["easy_margin"])
    assert case["target_cosine"][-1] < case["th"]
    logits = _head(case)(torch.tensor(FIX["input"]), torch.tensor(FIX["labels"]))
    last, label = len(FIX["labels"]) - 1, FIX["labels"][-1]
    assert logits[last, label].item() == pytest.approx(
        case["scale"] * (case["target_cosine"][-1] - case["mmm"]), abs=2e-5)


def test_cosine_logits_and_normalized_weight():
    head = _head(CASES[0])
    x = torch.tensor(FIX["input"])
    np.testing.assert_allclose(head.cosine_logits(x).detach().numpy(), CASES[0]["logits"],
                               rtol=0, atol=2e-5)
    w = head.normalized_weight()
    assert w.shape == (FIX["num_class"], FIX["embed_dim"])
    np.testing.assert_allclose(w.norm(dim=1).detach().numpy(), 1.0, atol=1e-6)
    with torch.no_grad():
        head.weight[0].zero_()  # F.normalize semantics: a zero row stays zero, no NaN
    assert torch.equal(head.normalized_weight()[0], torch.zeros(FIX["embed_dim"]))


def test_cosine_in_float32_under_autocast():
    head = _head(CASES[2])
    x = torch.tensor(FIX["input"])
    labels = torch.tensor(FIX["labels"])
    plain = head(x, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = head(x.bfloat16(), labels)
    assert auto.dtype == torch.float32
    # Only the bf16 rounding of the input remains.
    assert (auto - plain).abs().max().item() < 0.5


def test_no_nan_when_embedding_equals_a_class_weight():
    head = ArcMarginProduct(16, 4, margin=0.2)
    emb = (head.weight.detach()[:2] * 3.0).requires_grad_(True)
    logits = head(emb, torch.tensor([0, 1]))
    logits.sum().backward()
    assert torch.isfinite(logits).all() and torch.isfinite(emb.grad).all()


def test_init_and_parameters():
    head = ArcMarginProduct(192, 50)
    assert [n for n, _ in head.named_parameters()] == ["weight"]
    assert head.weight.shape == (50, 192)
    assert head.weight.abs().max().item() <= math.sqrt(6.0 / (50 + 192))
    assert head.margin == 0.0 and head.th == -1.0 and head.mmm == 0.0
    head.update(0.3)
    assert head.cos_m == math.cos(0.3) and head.sin_m == math.sin(0.3)
    assert head.th == pytest.approx(-math.cos(0.3)) and head.mmm == pytest.approx(1 - math.cos(0.3))


def _schedule_ref(it, epoch_iter, start, fix, initial, final, kind):
    """PROJECTION.md's schedule written out."""
    if it < (start - 1) * epoch_iter:
        return initial
    if it >= (fix - 1) * epoch_iter:
        return final
    t, span = it - (start - 1) * epoch_iter, (fix - start) * epoch_iter
    ratio = 1 - math.exp(t / span * math.log(1e-3 / (1 + 1e-6))) if kind == "exp" else t / span
    return initial + (final - initial) * ratio


@pytest.mark.parametrize("kind", ["exp", "linear"])
def test_margin_schedule_wespeaker_defaults(kind):
    e = 100
    sched = MarginScheduler(ArcMarginProduct(8, 3), iterations_per_epoch=e, kind=kind)
    for it in [0, 19 * e - 1, 19 * e, 19 * e + 1, 25 * e + 7, 30 * e, 39 * e - 1, 39 * e, 10**6]:
        assert sched.get_margin(it) == pytest.approx(
            _schedule_ref(it, e, 20, 40, 0.0, 0.2, kind), abs=1e-12), it
    assert sched.get_margin(19 * e - 1) == 0.0 and sched.get_margin(39 * e) == 0.2
    assert 0.199 < sched.get_margin(39 * e - 1) < 0.2


def test_margin_schedule_scaled_run_updates_head():
    head = ArcMarginProduct(8, 3)
    sched = MarginScheduler(head, iterations_per_epoch=5, initial_margin=0.0, final_margin=0.2,
                            increase_start_epoch=2, fix_start_epoch=4)
    seen = [sched.step() for _ in range(50)]  # a 10-epoch run
    assert seen == [pytest.approx(_schedule_ref(i, 5, 2, 4, 0.0, 0.2, "exp")) for i in range(50)]
    assert seen[4] == 0.0 and seen[5] == 0.0 and 0 < seen[6] < seen[14] < 0.2 and seen[15] == 0.2
    assert head.margin == 0.2
    assert sched.step(7) == pytest.approx(_schedule_ref(7, 5, 2, 4, 0.0, 0.2, "exp"))
    assert head.margin == pytest.approx(seen[7]) and head.th == pytest.approx(-math.cos(seen[7]))


def test_margin_schedule_lm_fixed_and_errors():
    sched = MarginScheduler(ArcMarginProduct(8, 3), 10, initial_margin=0.5, final_margin=0.5,
                            increase_start_epoch=1, fix_start_epoch=1)
    assert {sched.get_margin(i) for i in range(30)} == {0.5}
    with pytest.raises(KdcacheError):
        MarginScheduler(ArcMarginProduct(8, 3), 10, kind="cosine")
    with pytest.raises(KdcacheError):
        MarginScheduler(ArcMarginProduct(8, 3), 0)
    with pytest.raises(KdcacheError):
        MarginScheduler(ArcMarginProduct(8, 3), 10, increase_start_epoch=5, fix_start_epoch=4)


def test_attach_head_key_naming():
    model = build_model("xvector", hid_dim=32, stats_dim=64, embed_dim=48)
    n_model = count_parameters(model)
    head = attach_head(model, 7)
    assert model.projection is head and head.scale == 32.0 and head.margin == 0.0
    sd = model.state_dict()
    assert "projection.weight" in sd and sd["projection.weight"].shape == (7, 48)
    assert [k for k in sd if k.startswith("projection")] == ["projection.weight"]
    assert count_parameters(model) == n_model
    model.eval()
    with torch.no_grad():
        emb = model(torch.randn(2, 40, 80))
    assert emb.shape == (2, 48)
    assert head(emb, torch.tensor([0, 6])).shape == (2, 7)
