"""Losses against independent float64 computations of their formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdcache.distill import (
    apply_teacher_margin,
    batch_level_loss,
    ce_loss,
    class_level_loss,
    dkd_loss,
    dkd_terms,
    embedding_distance,
    embedding_loss,
    instance_level_loss,
    kd_loss,
    multi_level_loss,
)
from kdcache.errors import KdcacheError

RTOL = 1e-5
ATOL = 1e-8  # for values that are 0 up to rounding
SCALE = 32.0
SPEAKERS = 5994


# ----------------------------------------------------------------------------- inputs


def random_case(batch: int = 8, classes: int = 12, seed: int = 0, spread: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    zs = spread * torch.randn(batch, classes, generator=g)
    zt = spread * torch.randn(batch, classes, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    return zs, zt, y


def aam_case(batch: int = 4, classes: int = SPEAKERS, seed: int = 1):
    """AAM-scale logits: s * cos with cos uniform in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    cs = torch.rand(batch, classes, generator=g) * 2 - 1
    ct = torch.rand(batch, classes, generator=g) * 2 - 1
    y = torch.randint(0, classes, (batch,), generator=g)
    return SCALE * cs, SCALE * ct, y


def confident_aam_case(batch: int = 4, classes: int = SPEAKERS, seed: int = 2):
    """Trained-model-like AAM logits: target cos near 1, the rest near -0.7.

    At T = 1 the non-target mass is about 1e-20 (float32 rounds p_target to exactly 1).
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (batch,), generator=g)
    out = []
    for _ in range(2):
        cos = -0.7 + 0.02 * torch.randn(batch, classes, generator=g)
        cos[torch.arange(batch), y] = 0.97 + 0.02 * torch.rand(batch, generator=g)
        out.append(SCALE * cos)
    return out[0], out[1], y


CASES = {
    "random": lambda: random_case(),
    "random_wide": lambda: random_case(batch=5, classes=300, seed=3, spread=6.0),
    "aam": lambda: aam_case(),
}


# ----------------------------------------------------------------------------- references (float64)


def ref_probs(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(z / T) by explicit exponentials, float64."""
    z = z.double() / temperature
    e = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def ref_kl_rows(p: torch.Tensor, q: torch.Tensor) -> list[float]:
    """KL(p_i || q_i) row by row with the 0 log 0 = 0 convention, float64."""
    out = []
    for i in range(p.shape[0]):
        pi, qi = p[i], q[i]
        keep = pi > 0
        out.append(float((pi[keep] * (torch.log(pi[keep]) - torch.log(qi[keep]))).sum()))
    return out


def ref_kd(zs, zt, temperature):
    rows = ref_kl_rows(ref_probs(zt, temperature), ref_probs(zs, temperature))
    return temperature**2 * sum(rows) / len(rows)


def mdistiller_dkd(zs, zt, target, alpha, beta, temperature, dtype=torch.float64):
    """A literal transcription of mdistiller's ``dkd_loss`` (``size_average=False`` is
    ``reduction="sum"``). Returns (tckd, nckd, total)."""
    logits_student, logits_teacher = zs.to(dtype), zt.to(dtype)
    gt_mask = torch.zeros_like(logits_student).scatter_(1, target.unsqueeze(1), 1).bool()
    other_mask = torch.ones_like(logits_student).scatter_(1, target.unsqueeze(1), 0).bool()

    def cat_mask(t, mask1, mask2):
        t1 = (t * mask1).sum(dim=1, keepdims=True)
        t2 = (t * mask2).sum(1, keepdims=True)
        return torch.cat([t1, t2], dim=1)

    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    pred_student = cat_mask(pred_student, gt_mask, other_mask)
    pred_teacher = cat_mask(pred_teacher, gt_mask, other_mask)
    log_pred_student = torch.log(pred_student)
    tckd = F.kl_div(log_pred_student, pred_teacher, reduction="sum") * temperature**2 / target.shape[0]
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd = (
        F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum")
        * temperature**2
        / target.shape[0]
    )
    return float(tckd), float(nckd), float(alpha * tckd + beta * nckd)


def ref_class(zs, zt, temperature):
    """sum((P_t^T P_t - P_s^T P_s)^2) / C with the C x C matrices, float64, in column blocks."""
    ps, pt = ref_probs(zs, temperature), ref_probs(zt, temperature)
    classes = ps.shape[1]
    total = 0.0
    for start in range(0, classes, 1024):
        block = pt.T @ pt[:, start : start + 1024] - ps.T @ ps[:, start : start + 1024]
        total += float((block**2).sum())
    return total / classes


def ref_batch(zs, zt, temperature):
    ps, pt = ref_probs(zs, temperature), ref_probs(zt, temperature)
    return float(((pt @ pt.T - ps @ ps.T) ** 2).sum()) / ps.shape[0]


def close(actual: torch.Tensor, expected: float, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert actual.dim() == 0
    a = float(actual.detach())
    assert math.isfinite(a)
    assert abs(a - expected) <= atol + rtol * abs(expected), (a, expected)


# ----------------------------------------------------------------------------- CE / KD / instance


@pytest.mark.parametrize("case", CASES)
def test_ce_matches_negative_log_probability(case):
    zs, _, y = CASES[case]()
    p = ref_probs(zs, 1.0)
    expected = -sum(math.log(float(p[i, y[i]])) for i in range(len(y))) / len(y)
    out = ce_loss(zs, y)
    assert out.dtype == torch.float32
    close(out, expected)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_matches_explicit_kl(case, temperature):
    zs, zt, _ = CASES[case]()
    close(kd_loss(zs, zt, temperature), ref_kd(zs, zt, temperature))


def test_kd_temperature_scaling():
    zs, zt, _ = random_case()
    for temperature in (0.5, 2.0, 7.0):
        close(kd_loss(zs, zt, temperature), temperature**2 * float(kd_loss(zs / temperature, zt / temperature, 1.0)))


def test_one_hot_teacher_is_finite_and_exact():
    zs, zt, y = random_case(classes=50)
    zt[torch.arange(len(y)), y] = 1e4  # teacher puts all its mass on the target
    expected = sum(-math.log(float(ref_probs(zs, 2.0)[i, y[i]])) for i in range(len(y))) / len(y) * 4.0
    close(kd_loss(zs, zt, 2.0), expected)
    close(class_level_loss(zs, zt, 2.0), ref_class(zs, zt, 2.0))
    close(batch_level_loss(zs, zt, 2.0), ref_batch(zs, zt, 2.0))


def test_instance_level_is_kd_and_mask_weights_rows():
    zs, zt, _ = random_case(batch=6)
    close(instance_level_loss(zs, zt, 3.0), float(kd_loss(zs, zt, 3.0)), rtol=1e-7)
    rows = ref_kl_rows(ref_probs(zt, 3.0), ref_probs(zs, 3.0))
    mask = torch.tensor([True, False, True, True, False, False])
    expected = 9.0 * sum(r for r, m in zip(rows, mask) if m) / 6
    close(instance_level_loss(zs, zt, 3.0, mask=mask), expected)
    weights = torch.linspace(0, 1, 6)
    close(instance_level_loss(zs, zt, 3.0, mask=weights), 9.0 * sum(r * float(w) for r, w in zip(rows, weights)) / 6)


# ----------------------------------------------------------------------------- DKD


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_matches_mdistiller(case, temperature):
    zs, zt, y = CASES[case]()
    tckd_ref, nckd_ref, total_ref = mdistiller_dkd(zs, zt, y, 1.0, 8.0, temperature)
    tckd, nckd = dkd_terms(zs, zt, y, temperature)
    close(tckd, tckd_ref)
    close(nckd, nckd_ref)
    close(dkd_loss(zs, zt, y, alpha=1.0, beta=8.0, temperature=temperature), total_ref)
    close(dkd_loss(zs, zt, y, alpha=0.5, beta=2.0, temperature=temperature), 0.5 * tckd_ref + 2.0 * nckd_ref)


def mp_references(zs, zt, target, temperature):
    """(KD, TCKD, NCKD) with 40-digit arithmetic: float64 cannot represent p_target = 1 - 1e-20."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40

    def probs(z):
        v = [mpmath.mpf(x) / temperature for x in z]
        top = max(v)
        e = [mpmath.exp(x - top) for x in v]
        total = mpmath.fsum(e)
        return [x / total for x in e]

    def kl(p, q):
        return mpmath.fsum(a * mpmath.log(a / b) for a, b in zip(p, q))

    kd = tckd = nckd = mpmath.mpf(0)
    for row_s, row_t, t in zip(zs.tolist(), zt.tolist(), target.tolist()):
        p, q = probs(row_t), probs(row_s)
        kd += kl(p, q)
        p_rest, q_rest = mpmath.fsum(p[:t] + p[t + 1 :]), mpmath.fsum(q[:t] + q[t + 1 :])
        tckd += kl([p[t], p_rest], [q[t], q_rest])
        nckd += kl([x / p_rest for x in p[:t] + p[t + 1 :]], [x / q_rest for x in q[:t] + q[t + 1 :]])
    scale = temperature**2 / len(target)
    return float(kd * scale), float(tckd * scale), float(nckd * scale)


def test_confident_aam_t1_exact_where_float64_references_round():
    # Non-target mass ~1e-20: KD and TCKD are ~1e-20 and float64 rounds p_target to 1 (the float64
    # transcription of mdistiller even returns a negative TCKD here). The log-space float32 values
    # match 40-digit arithmetic.
    zs, zt, y = confident_aam_case(batch=2)
    kd_ref, tckd_ref, nckd_ref = mp_references(zs, zt, y, 1.0)
    assert kd_ref < 1e-18 and tckd_ref < 1e-19
    close(kd_loss(zs, zt, 1.0), kd_ref, atol=0)
    tckd, nckd = dkd_terms(zs, zt, y, 1.0)
    close(tckd, tckd_ref, rtol=1e-4, atol=0)
    close(nckd, nckd_ref, atol=0)
    assert mdistiller_dkd(zs, zt, y, 1.0, 8.0, 1.0)[0] < 0  # the rounding we avoid


@pytest.mark.parametrize("temperature", [2.0, 4.0])
def test_confident_aam_higher_temperature(temperature):
    # Here KD and TCKD are second order in the student-teacher gap while float32 rounds the first-order
    # terms: measured relative error up to 3e-5 (against 40-digit arithmetic too).
    zs, zt, y = confident_aam_case()
    close(kd_loss(zs, zt, temperature), ref_kd(zs, zt, temperature), rtol=1e-4)
    tckd_ref, nckd_ref, _ = mdistiller_dkd(zs, zt, y, 1.0, 8.0, temperature)
    tckd, nckd = dkd_terms(zs, zt, y, temperature)
    close(tckd, tckd_ref, rtol=1e-4)
    close(nckd, nckd_ref)
    close(class_level_loss(zs, zt, temperature), ref_class(zs, zt, temperature))
    close(batch_level_loss(zs, zt, temperature), ref_batch(zs, zt, temperature))


def test_dkd_student_underflow_finite_where_mdistiller_float32_is_not():
    zs, zt, y = random_case(classes=40)
    zs[torch.arange(len(y)), y] = 200.0  # student's non-target mass ~ e^-200: 0 in float32
    with torch.no_grad():
        assert not math.isfinite(mdistiller_dkd(zs, zt, y, 1, 8, 1.0, dtype=torch.float32)[0])
    tckd_ref, nckd_ref, _ = mdistiller_dkd(zs, zt, y, 1, 8, 1.0)  # float64 still represents e^-200
    tckd, nckd = dkd_terms(zs, zt, y, 1.0)
    close(tckd, tckd_ref)
    close(nckd, nckd_ref)


def test_dkd_one_hot_teacher():
    zs, zt, y = random_case(classes=40)
    zt[torch.arange(len(y)), y] = 200.0
    tckd_ref, nckd_ref, _ = mdistiller_dkd(zs, zt, y, 1, 8, 1.0)
    tckd, nckd = dkd_terms(zs, zt, y, 1.0)
    close(tckd, tckd_ref)
    close(nckd, nckd_ref)


def test_dkd_nckd_excludes_the_target_even_past_mdistillers_mask():
    # mdistiller masks the target by subtracting 1000: a teacher target logit of 1e4 leaks through
    zs, zt, y = random_case(classes=40)
    zt[torch.arange(len(y)), y] = 1e4
    keep = ~F.one_hot(y, 40).bool()
    nckd_ref = ref_kd(zs[keep].view(len(y), 39), zt[keep].view(len(y), 39), 2.0)
    close(dkd_terms(zs, zt, y, 2.0)[1], nckd_ref)
    assert mdistiller_dkd(zs, zt, y, 1, 8, 2.0)[1] > 100 * nckd_ref


def test_dkd_two_classes_nckd_is_zero_and_tckd_is_kd():
    zs, zt, y = random_case(batch=16, classes=2)
    zs.requires_grad_(True)
    tckd, nckd = dkd_terms(zs, zt, y, 2.0)
    assert float(nckd.detach()) == 0.0
    close(tckd, ref_kd(zs.detach(), zt, 2.0))  # the binary split is the whole distribution
    (tckd + 8 * nckd).backward()
    assert torch.isfinite(zs.grad).all()


# ----------------------------------------------------------------------------- class / batch / multi-level


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_class_and_batch_level_match_naive(case, temperature):
    zs, zt, _ = CASES[case]()
    close(class_level_loss(zs, zt, temperature), ref_class(zs, zt, temperature))
    # On AAM logits the batch term's diagonal is |p_t|^2 - |p_s|^2 for rows of nearly equal norm:
    # float32 rounding of each row's softmax normaliser (~1e-7) is amplified ~100x. Measured
    # over 30 seeds: at most 2.1e-5 relative (float64 Gram products do not change it).
    rtol = 5e-5 if case == "aam" else RTOL
    close(batch_level_loss(zs, zt, temperature), ref_batch(zs, zt, temperature), rtol=rtol)


def test_class_level_full_scale_runs_and_matches():
    # C = 5994, B = 64 runs in O(B^2 C); the naive C x C value is checked at a smaller C, and at full
    # scale against the plain Gram expansion in float64 (exact enough for unrelated logits).
    zs, zt, _ = aam_case(batch=64)
    out = class_level_loss(zs, zt, 2.0)
    ps, pt = ref_probs(zs, 2.0), ref_probs(zt, 2.0)
    gram = ((pt @ pt.T) ** 2).sum() - 2 * ((pt @ ps.T) ** 2).sum() + ((ps @ ps.T) ** 2).sum()
    close(out, float(gram) / SPEAKERS)
    zs_small, zt_small, _ = aam_case(batch=64, classes=400)
    close(class_level_loss(zs_small, zt_small, 2.0), ref_class(zs_small, zt_small, 2.0))


def test_class_and_batch_accurate_when_student_is_close():
    # the difference of Gram matrices cancels almost every digit here; the S/D form must not
    zs, zt, _ = random_case(batch=6, classes=30, spread=2.0)
    zs64 = zt.double() + 1e-3 * torch.randn(6, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    close(class_level_loss(zs64, zt.double(), 1.0), ref_class(zs64, zt, 1.0), rtol=1e-9, atol=0)
    close(batch_level_loss(zs64, zt.double(), 1.0), ref_batch(zs64, zt, 1.0), rtol=1e-9, atol=0)


def test_multi_level_sums_the_terms_over_temperatures():
    zs, zt, _ = random_case(batch=6, classes=50)
    out = multi_level_loss(zs, zt)
    assert set(out) == {"instance", "class_", "batch"}
    temps = (1.0, 2.0, 3.0, 4.0, 5.0)
    close(out["instance"], sum(ref_kd(zs, zt, t) for t in temps))
    close(out["class_"], sum(ref_class(zs, zt, t) for t in temps))
    close(out["batch"], sum(ref_batch(zs, zt, t) for t in temps))
    out = multi_level_loss(zs, zt, temperatures=[2, 6], mask=torch.ones(6))
    close(out["instance"], ref_kd(zs, zt, 2.0) + ref_kd(zs, zt, 6.0))


# ----------------------------------------------------------------------------- common properties


def all_losses(zs, zt, y, temperature=2.0):
    return {
        "kd": kd_loss(zs, zt, temperature),
        "instance": instance_level_loss(zs, zt, temperature),
        "dkd": dkd_loss(zs, zt, y, 1.0, 8.0, temperature),
        "class": class_level_loss(zs, zt, temperature),
        "batch": batch_level_loss(zs, zt, temperature),
        **{f"mlkd_{k}": v for k, v in multi_level_loss(zs, zt, (1.0, temperature)).items()},
    }


@pytest.mark.parametrize("case", [*CASES, "aam_confident"])
def test_identical_student_and_teacher_give_zero(case):
    _, zt, y = confident_aam_case() if case == "aam_confident" else CASES[case]()
    for name, value in all_losses(zt.clone(), zt, y).items():
        assert abs(float(value)) <= 1e-12, name
    e = torch.randn(5, 16)
    assert abs(float(embedding_loss(e, e.clone()))) < 1e-6
    assert float(embedding_distance(e, e.clone())) == 0.0


@pytest.mark.parametrize("case", ["aam", "aam_confident", "one_hot"])
def test_gradients_are_finite(case):
    if case == "aam_confident":
        zs, zt, y = confident_aam_case()
    elif case == "one_hot":
        zs, zt, y = random_case(classes=60)
        zs[torch.arange(len(y)), y] = 300.0
        zt[torch.arange(len(y)), y] = 300.0
    else:
        zs, zt, y = CASES[case]()
    for temperature in (1.0, 4.0):
        zs_ = zs.clone().requires_grad_(True)
        total = sum(all_losses(zs_, zt, y, temperature).values()) + ce_loss(zs_, y)
        total.backward()
        assert torch.isfinite(total)
        assert torch.isfinite(zs_.grad).all()


def test_gradcheck_float64():
    zs, zt, y = random_case(batch=3, classes=5)
    zs = zs.double().requires_grad_(True)
    zt = zt.double()
    for fn in (
        lambda s: kd_loss(s, zt, 2.0),
        lambda s: dkd_loss(s, zt, y, 1.0, 8.0, 2.0),
        lambda s: class_level_loss(s, zt, 2.0),
        lambda s: batch_level_loss(s, zt, 2.0),
    ):
        assert torch.autograd.gradcheck(fn, (zs,))
    es = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    et = torch.randn(3, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: embedding_loss(s, et) + embedding_distance(s, et), (es,))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_inputs_under_autocast_give_float32(half):
    zs, zt, y = aam_case(batch=4, classes=500)
    es, et = torch.randn(4, 32), torch.randn(4, 32)
    hs, ht, hes, het = zs.to(half), zt.to(half), es.to(half), et.to(half)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = all_losses(hs, ht, y)
        got["ce"] = ce_loss(hs, y)
        got["emb"] = embedding_loss(hes, het)
        got["dist"] = embedding_distance(hes, het)
    # same as float32 on the rounded inputs (so autocast did not lower any op) ...
    want = all_losses(hs.float(), ht.float(), y)
    want["ce"] = ce_loss(hs.float(), y)
    want["emb"] = embedding_loss(hes.float(), het.float())
    want["dist"] = embedding_distance(hes.float(), het.float())
    # ... and close to float32 on the original inputs (only the input rounding differs)
    orig = all_losses(zs, zt, y)
    orig["ce"] = ce_loss(zs, y)
    orig["emb"] = embedding_loss(es, et)
    orig["dist"] = embedding_distance(es, et)
    for name in got:
        assert got[name].dtype == torch.float32, name
        close(got[name], float(want[name]), rtol=1e-6, atol=1e-9)
        close(got[name], float(orig[name]), rtol=5e-2, atol=1e-4)


# ----------------------------------------------------------------------------- embeddings


def test_embedding_losses_match_formulas():
    g = torch.Generator().manual_seed(7)
    es, et = torch.randn(5, 24, generator=g), torch.randn(5, 24, generator=g)
    cos = []
    dist = []
    for i in range(5):
        a, b = es[i].double().tolist(), et[i].double().tolist()
        dot = sum(x * y for x, y in zip(a, b))
        cos.append(dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)))
        dist.append(sum((x - y) ** 2 for x, y in zip(a, b)))
    close(embedding_loss(es, et), sum(1 - c for c in cos) / 5)
    close(embedding_distance(es, et), sum(dist) / 5)
    close(embedding_loss(es, 3.0 * es), 0.0, atol=1e-6)


# ----------------------------------------------------------------------------- teacher margin


def test_apply_teacher_margin_matches_arcmargin():
    margin = 0.2
    cos = torch.tensor([[0.9, 0.1, -0.3], [0.2, -0.99, 0.5], [0.3, 0.4, 0.5], [1.0, 0.0, 0.0]])
    target = torch.tensor([0, 1, -1, 0])
    out = apply_teacher_margin(SCALE * cos, target, margin, SCALE)
    th = math.cos(math.pi - margin)
    expected = (SCALE * cos).double().clone()
    for i, t in enumerate(target.tolist()):
        if t < 0:
            continue
        c = float(cos[i, t])
        phi = math.cos(math.acos(c) + margin) if c > th else c - (1 - math.cos(margin))
        expected[i, t] = SCALE * phi
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-5)
    assert float(cos[1, 1]) < th  # the "hard" branch is exercised
    assert torch.equal(out[2], SCALE * cos[2])  # unknown speaker: unchanged


def test_apply_teacher_margin_clamps_float16_cos_and_zero_margin_is_identity():
    z = torch.tensor([[SCALE * 1.0005, 3.0]], dtype=torch.float16)  # |cos| > 1 after rounding
    out = apply_teacher_margin(z, torch.tensor([0]), 0.2, SCALE)
    assert torch.isfinite(out).all()
    assert abs(float(out[0, 0]) - SCALE * math.cos(0.2)) < 1e-4
    zs, _, y = aam_case(batch=3, classes=20)
    torch.testing.assert_close(apply_teacher_margin(zs, y, 0.0, SCALE), zs, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- errors


def test_invalid_arguments_raise_kdcache_error():
    zs, zt, y = random_case()
    bad = [
        lambda: kd_loss(zs, zt, 0.0),
        lambda: kd_loss(zs, zt, -1.0),
        lambda: kd_loss(zs, zt, float("nan")),
        lambda: kd_loss(zs, zt[:, :5], 1.0),
        lambda: kd_loss(zs[0], zt[0], 1.0),
        lambda: dkd_loss(zs, zt, y, 1.0, 0.0, 1.0),
        lambda: dkd_loss(zs, zt, y, 1.0, -2.0, 1.0),
        lambda: dkd_loss(zs, zt, y, -1.0, 2.0, 1.0),
        lambda: dkd_loss(zs, zt, y, 1.0, 2.0, 0.0),
        lambda: dkd_loss(zs, zt, y[:3], 1.0, 2.0, 1.0),
        lambda: dkd_loss(zs, zt, y.float(), 1.0, 2.0, 1.0),
        lambda: dkd_loss(zs, zt, torch.full_like(y, 12), 1.0, 2.0, 1.0),
        lambda: dkd_loss(zs[:, :1], zt[:, :1], torch.zeros_like(y), 1.0, 2.0, 1.0),
        lambda: ce_loss(zs, -torch.ones_like(y)),
        lambda: class_level_loss(zs, zt.T, 1.0),
        lambda: batch_level_loss(zs, zt, -3),
        lambda: multi_level_loss(zs, zt, temperatures=()),
        lambda: multi_level_loss(zs, zt, temperatures=(1.0, 0.0)),
        lambda: instance_level_loss(zs, zt, 1.0, mask=torch.ones(3)),
        lambda: embedding_loss(torch.randn(4, 8), torch.randn(4, 9)),
        lambda: embedding_distance(torch.randn(4, 8), torch.randn(5, 8)),
        lambda: apply_teacher_margin(zt, y, -0.1, SCALE),
        lambda: apply_teacher_margin(zt, y, 0.2, 0.0),
        lambda: apply_teacher_margin(zt, torch.full_like(y, 99), 0.2, SCALE),
    ]
    for i, fn in enumerate(bad):
        with pytest.raises(KdcacheError) as err:
            fn()
        assert "\n" not in str(err.value), i
