"""build_model / default_model_args / count_parameters, narrow variants, pooling details."""

from __future__ import annotations

import json

import pytest
import torch

from kdcache.errors import KdcacheError
from kdcache.models import MODEL_NAMES, build_model, count_parameters, default_model_args
from kdcache.models.campplus import segment_mean
from kdcache.models.pooling import ASTP, TSTP, get_pooling

# Narrow CPU variants: (name, overrides, embedding dim).
NARROW = [
    ("xvector", {"hid_dim": 64, "stats_dim": 128, "embed_dim": 32}, 32),
    ("resnet34", {"m_channels": 8}, 256),
    ("resnet34", {"m_channels": 4, "embed_dim": 24, "two_emb_layer": True}, 24),
    ("resnet293", {"m_channels": 4, "embed_dim": 16}, 16),
    ("ecapa_c512", {"channels": 64}, 192),
    ("ecapa_c1024", {"channels": 32, "embed_dim": 40}, 40),
    ("campplus", {"init_channels": 32, "growth_rate": 8, "bn_size": 2, "embed_dim": 64}, 64),
]


def _id(v):
    name, overrides, _ = v
    return name + "-" + "-".join(f"{k}{val}" for k, val in overrides.items())


def test_model_names():
    assert MODEL_NAMES == ("xvector", "resnet34", "resnet293", "ecapa_c512", "ecapa_c1024",
                           "campplus")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_model_args_roundtrip(name):
    args = default_model_args(name)
    assert json.loads(json.dumps(args)) == args
    args["feat_dim"] = 40  # a copy: mutating it changes nothing
    assert default_model_args(name)["feat_dim"] == 80
    expected_emb = {"xvector": 512, "resnet34": 256, "resnet293": 256, "ecapa_c512": 192,
                    "ecapa_c1024": 192, "campplus": 512}[name]
    assert default_model_args(name)["embed_dim"] == expected_emb


def test_build_records_full_args():
    model = build_model("resnet34", m_channels=4)
    assert model.arch == "resnet34"
    assert model.model_args == default_model_args("resnet34") | {"m_channels": 4}
    again = build_model(model.arch, **model.model_args)
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()}


def test_unknown_model_lists_names():
    with pytest.raises(KdcacheError) as err:
        build_model("resnet50")
    msg = str(err.value)
    assert "resnet50" in msg and all(n in msg for n in MODEL_NAMES) and "\n" not in msg
    with pytest.raises(KdcacheError):
        default_model_args("nope")


def test_unknown_argument_lists_valid_ones():
    with pytest.raises(KdcacheError) as err:
        build_model("ecapa_c512", chanels=64)
    msg = str(err.value)
    assert "chanels" in msg and "channels" in msg and "embed_dim" in msg and "\n" not in msg


@pytest.mark.parametrize("name, kwargs", [
    ("xvector", {"embed_dim": "512"}),
    ("xvector", {"hid_dim": 0}),
    ("resnet34", {"two_emb_layer": 1}),
    ("resnet34", {"m_channels": True}),
    ("resnet34", {"pooling_func": "MQMHASTP"}),
    ("ecapa_c512", {"channels": 60}),
    ("campplus", {"config_str": "batchnorm-gelu"}),
])
def test_bad_argument_values(name, kwargs):
    with pytest.raises(KdcacheError):
        build_model(name, **kwargs)


@pytest.mark.parametrize("variant", NARROW, ids=_id)
def test_narrow_forward_backward(variant):
    name, overrides, dim = variant
    torch.manual_seed(0)
    model = build_model(name, **overrides)
    assert model.embed_dim == dim
    model.train()
    x = torch.randn(2, 200, 80)
    emb = model(x)
    assert isinstance(emb, torch.Tensor) and emb.shape == (2, dim)
    emb.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("variant", [v for v in NARROW if v[0] != "resnet293"], ids=_id)
def test_frames_are_free_and_batch_independent(variant):
    name, overrides, dim = variant
    torch.manual_seed(0)
    model = build_model(name, **overrides).eval()
    with torch.no_grad():
        for frames in (model.min_frames, 57, 150, 233):
            x = torch.randn(3, frames, 80)
            emb = model(x)
            assert emb.shape == (3, dim) and torch.isfinite(emb).all(), frames
            torch.testing.assert_close(model(x[1:2]), emb[1:2], rtol=1e-4, atol=1e-5)


def test_count_parameters_excludes_head_only():
    from kdcache.models import attach_head

    model = build_model("campplus", init_channels=32, growth_rate=8, bn_size=2)
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    attach_head(model, 11)
    assert count_parameters(model) == total
    assert sum(p.numel() for p in model.parameters()) == total + 11 * model.embed_dim


def test_tstp_unbiased_and_c_major():
    x = torch.randn(2, 3, 4, 7, dtype=torch.float64)
    out = TSTP(in_dim=12)(x)
    assert out.shape == (2, 24)
    mean = x.mean(-1)
    std = ((x - mean[..., None]).pow(2).sum(-1) / (7 - 1) + 1e-7).sqrt()
    c, f = 2, 3  # index c*F + f
    assert out[1, c * 4 + f].item() == pytest.approx(mean[1, c, f].item())
    assert out[1, 12 + c * 4 + f].item() == pytest.approx(std[1, c, f].item())
    torch.testing.assert_close(TSTP(in_dim=3)(x[:, :, 0]), torch.cat([mean[:, :, 0],
                                                                     std[:, :, 0]], 1))


def test_astp_shapes_and_uniform_attention():
    pool = ASTP(in_dim=6, bottleneck_dim=4, global_context_att=True)
    assert pool.linear1.in_channels == 18 and pool.get_out_dim() == 12
    with torch.no_grad():
        pool.linear2.weight.zero_()
        pool.linear2.bias.zero_()  # uniform attention: plain mean and biased std
    x = torch.randn(2, 6, 9, dtype=torch.float32)
    out = pool(x)
    expected = torch.cat([x.mean(-1), x.var(-1, unbiased=False).clamp(min=1e-7).sqrt()], 1)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert ASTP(in_dim=6)(torch.randn(2, 2, 3, 5)).shape == (2, 12)  # 4-D input, C*F = 6
    with pytest.raises(KdcacheError):
        get_pooling("TAP", in_dim=6)


@pytest.mark.parametrize("frames", [1, 99, 100, 101, 250])
def test_segment_mean(frames):
    x = torch.randn(2, 3, frames, dtype=torch.float64)
    got = segment_mean(x)
    expected = torch.empty_like(x)
    for start in range(0, frames, 100):
        seg = x[..., start:start + 100]
        expected[..., start:start + 100] = seg.mean(-1, keepdim=True)
    torch.testing.assert_close(got, expected)


def test_a_float_model_argument_is_checked_as_a_number():
    """A float default used to make every value "must be a string", a valid float included."""
    from kdcache.models import _check_arg

    _check_arg("toy", "dropout", 0.3, 0.5)
    _check_arg("toy", "dropout", 1, 0.5)
    with pytest.raises(KdcacheError, match=r"argument dropout='x' must be a finite number"):
        _check_arg("toy", "dropout", "x", 0.5)
    with pytest.raises(KdcacheError, match="must be a finite number"):
        _check_arg("toy", "dropout", True, 0.5)


def test_arguments_too_large_are_one_line_errors(monkeypatch):
    import kdcache.models as models

    with pytest.raises(KdcacheError, match=r"argument embed_dim=1000000000 must be an integer in \[1, 65536\]"):
        models.build_model("xvector", embed_dim=10**9)

    def no_memory(**kwargs):  # what torch's allocator raises for weights larger than the machine
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 34359738368 bytes")

    monkeypatch.setitem(models._REGISTRY, "xvector", (no_memory, models._REGISTRY["xvector"][1]))
    with pytest.raises(KdcacheError, match="need more memory than this machine has"):
        models.build_model("xvector", hid_dim=65536)
