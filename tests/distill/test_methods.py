"""The method registry, method options, and logit-standardized KD (Sun et al., CVPR 2024) against an
independent float64 numpy computation of the reference code's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdcache.distill import losses as L
from kdcache.distill import methods
from kdcache.distill.methods import RunInfo, build, resolve_options
from kdcache.distill.methods.base import Method
from kdcache.errors import KdcacheError

RUN = RunInfo(epochs=6, teacher_scale=32.0, teacher_margin=0.2)


def np_z(z: np.ndarray) -> np.ndarray:
    """The reference ``normalize``: (z - mean) / (1e-7 + std), torch.std's unbiased estimate."""
    return (z - z.mean(1, keepdims=True)) / (1e-7 + z.std(1, ddof=1, keepdims=True))


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * (np.log(p) - np.log(q))).sum(1)


def batch(seed: int = 0, B: int = 6, C: int = 12):
    g = torch.Generator().manual_seed(seed)
    s = 32 * (torch.rand(B, C, generator=g) * 2 - 1)
    cos_t = torch.rand(B, C, generator=g) * 1.8 - 0.9
    labels = torch.randint(0, C, (B,), generator=g)
    return {"logits": s}, {"label": labels, "teacher_logits": 32 * cos_t}


def test_standardize_logits_is_the_reference_z_score():
    z = torch.randn(5, 7, dtype=torch.float64) * 9 + 3
    expected = np_z(z.numpy())
    assert np.allclose(L.standardize_logits(z).numpy(), expected, rtol=1e-12, atol=1e-12)
    out = L.standardize_logits(z.float())
    assert out.dtype == torch.float32
    assert np.allclose(out.numpy().std(1, ddof=1), 1.0, atol=1e-5) and np.allclose(out.numpy().mean(1), 0, atol=1e-5)
    # eps is added to the std, not under the root: a constant row maps to 0, not NaN
    assert torch.equal(L.standardize_logits(torch.ones(2, 4)), torch.zeros(2, 4))
    with pytest.raises(KdcacheError, match="at least 2 classes"):
        L.standardize_logits(torch.ones(3, 1))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_with_logit_stand_matches_the_reference_formula(temperature):
    out, b = batch(1)
    kd = build("kd", {"logit_stand": True, "temperature": temperature, "kd_weight": 0.7}, RUN)
    terms = kd.terms(out, b, 0.0)
    zs, zt = np_z(out["logits"].double().numpy()), np_z(b["teacher_logits"].double().numpy())
    expected = 0.7 * temperature**2 * np_kl_rows(np_softmax(zt / temperature), np_softmax(zs / temperature)).mean()
    assert terms["kd"].item() == pytest.approx(expected, rel=1e-5)
    plain = build("kd", {"temperature": temperature, "kd_weight": 0.7}, RUN).terms(out, b, 0.0)
    assert plain["kd"].item() != pytest.approx(expected, rel=1e-3)
    assert terms["ce"].item() == plain["ce"].item()  # CE keeps the raw AAM logits


def test_logit_stand_makes_kd_blind_to_the_teacher_logit_scale_and_offset():
    out, b = batch(2)
    kd = build("kd", {"logit_stand": True, "temperature": 2.0}, RUN)
    base = kd.terms(out, b, 0.0)["kd"].item()
    moved = dict(b, teacher_logits=3.0 * b["teacher_logits"] - 5.0)
    assert kd.terms(out, moved, 0.0)["kd"].item() == pytest.approx(base, rel=1e-4)
    plain = build("kd", {"temperature": 2.0}, RUN)
    assert plain.terms(out, moved, 0.0)["kd"].item() != pytest.approx(plain.terms(out, b, 0.0)["kd"].item(), rel=1e-2)


def np_margin(t_logits: np.ndarray, labels: np.ndarray, m: float, s: float) -> np.ndarray:
    out = t_logits.copy()
    for i, y in enumerate(labels):
        c = t_logits[i, y] / s
        out[i, y] = s * (math.cos(math.acos(c) + m) if c > math.cos(math.pi - m) else c - (1 - math.cos(m)))
    return out


def np_dkd(zs: np.ndarray, zt: np.ndarray, labels: np.ndarray, T: float) -> tuple[float, float]:
    """mdistiller's dkd_loss terms (masks, softmax of z/T, 1000-subtraction for NCKD), in float64."""
    B = len(labels)
    gt = np.zeros_like(zs, dtype=bool)
    gt[np.arange(B), labels] = True
    ps, pt = np_softmax(zs / T), np_softmax(zt / T)
    bs = np.stack([ps[gt], ps[~gt].reshape(B, -1).sum(1)], 1)
    bt = np.stack([pt[gt], pt[~gt].reshape(B, -1).sum(1)], 1)
    tckd = np_kl_rows(bt, bs).sum() * T**2 / B
    ns, nt = np_softmax(zs / T - 1000.0 * gt), np_softmax(zt / T - 1000.0 * gt)
    keep = ~gt
    nckd = (nt[keep] * (np.log(nt[keep]) - np.log(ns[keep]))).sum() * T**2 / B
    return tckd, nckd


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_dkd_with_logit_stand_matches_the_reference_formula(temperature):
    out, b = batch(3)
    dkd = build("dkd", {"logit_stand": True, "temperature": temperature, "alpha": 0.5, "beta": 8.0,
                        "kd_warmup_epochs": 2.0}, RUN)
    terms = dkd.terms(out, b, 1.0)  # ramp 1/2
    labels = b["label"].numpy()
    zt = np_z(np_margin(b["teacher_logits"].double().numpy(), labels, 0.2, 32.0))
    zs = np_z(out["logits"].double().numpy())
    tckd, nckd = np_dkd(zs, zt, labels, temperature)
    assert terms["tckd"].item() == pytest.approx(0.5 * 0.5 * tckd, rel=1e-4)
    assert terms["nckd"].item() == pytest.approx(0.5 * 8.0 * nckd, rel=1e-4)


def test_mlkd_with_logit_stand_standardizes_the_instance_term_only_as_the_reference():
    out, b = batch(4)
    temps = (1.0, 3.0)
    terms = build("mlkd", {"logit_stand": True, "temperatures": temps}, RUN).terms(out, b, 0.0)
    s, t = out["logits"].double().numpy(), b["teacher_logits"].double().numpy()
    zs, zt = np_z(s), np_z(t)
    B, C = s.shape
    instance = sum(T**2 * np_kl_rows(np_softmax(zt / T), np_softmax(zs / T)).mean() for T in temps)
    class_ = sum(np.square(np_softmax(t / T).T @ np_softmax(t / T) - np_softmax(s / T).T @ np_softmax(s / T)).sum() / C
                 for T in temps)
    batch_ = sum(np.square(np_softmax(t / T) @ np_softmax(t / T).T - np_softmax(s / T) @ np_softmax(s / T).T).sum() / B
                 for T in temps)
    assert terms["instance"].item() == pytest.approx(instance, rel=1e-4)
    assert terms["class"].item() == pytest.approx(class_, rel=1e-4)
    assert terms["batch"].item() == pytest.approx(batch_, rel=1e-4)


def test_the_registry_lists_the_built_in_methods_and_refuses_a_second_class_under_one_name():
    assert methods.names()[:6] == ["ce", "embedding", "kd", "dkd", "mlkd", "imlkd"]
    assert {"logit_stand"} <= {o.name for o in methods.get("dkd").options}
    assert not any(o.name == "logit_stand" for o in methods.get("imlkd").options)

    class Other(Method):
        name = "kd"

    with pytest.raises(KdcacheError, match="defined twice"):
        methods.register(Other)
    with pytest.raises(KdcacheError, match="--loss nope: choose one of ce, embedding"):
        methods.get("nope")


def test_options_from_loss_args_and_the_old_flags():
    assert resolve_options("dkd", {"beta": 8}, {"temperature": 2.0})["beta"] == 8.0
    opts = resolve_options("dkd", {}, {"beta": 8.0, "temperature": 2.0, "eta": 3.0, "temperatures": None})
    assert (opts["beta"], opts["temperature"], opts["alpha"], opts["logit_stand"]) == (8.0, 2.0, 1.0, False)
    assert resolve_options("mlkd", {"temperatures": "1,2"}, {})["temperatures"] == (1.0, 2.0)
    assert resolve_options("kd", {}, {"temperatures": (1.0,)}) == {"kd_weight": 1.0, "temperature": 1.0,
                                                                    "logit_stand": False}
    with pytest.raises(KdcacheError, match="^--eta must be a positive number"):
        resolve_options("dkd", {}, {"eta": 0.0})  # checked even where the method ignores it, as before
    with pytest.raises(KdcacheError, match="--loss dkd has no option 'eta'"):
        resolve_options("dkd", {"eta": 1.0}, {})
    with pytest.raises(KdcacheError, match="--beta 8.0 and --loss-args beta 2 disagree"):
        resolve_options("dkd", {"beta": 2}, {"beta": 8.0})
    with pytest.raises(KdcacheError, match="logit_stand must be true or false"):
        resolve_options("kd", {"logit_stand": 1}, {})
    with pytest.raises(KdcacheError, match="temperatures must be a non-empty list"):
        resolve_options("mlkd", {"temperatures": []}, {})
    with pytest.raises(KdcacheError, match="temperature must be a positive number"):
        resolve_options("kd", {"temperature": "2"}, {})
