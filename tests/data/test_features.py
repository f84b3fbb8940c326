import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from kdcache.data.features import FeatureConfig, compute_fbank, compute_fbank_batch
from kdcache.errors import KdcacheError


def _waves(batch: int, n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((batch, n)) * 0.1).astype(np.float32)


def test_crop_sizes() -> None:
    cfg = FeatureConfig()
    assert cfg.frames_for_seconds(2.0) == 200
    assert cfg.crop_num_samples(2.0) == 32240
    assert cfg.num_samples_for_frames(200) == 32240
    assert cfg.num_frames(32240) == 200 and cfg.num_frames(32239) == 199
    assert cfg.num_frames(399) == 0


def test_fbank_matches_wespeaker_call() -> None:
    x = _waves(1, 32240)[0]
    ref = kaldi.fbank(torch.from_numpy(x).unsqueeze(0) * 32768, num_mel_bins=80, frame_length=25,
                      frame_shift=10, dither=0.0, sample_frequency=16000, window_type="hamming",
                      use_energy=False)
    ref = ref - ref.mean(dim=0)
    feats = compute_fbank(x)
    assert feats.shape == (200, 80) and feats.dtype == torch.float32
    assert torch.equal(feats, ref)
    assert feats.mean(dim=0).abs().max() < 1e-4  # CMN
    assert torch.equal(compute_fbank(torch.from_numpy(x)), feats)
    raw = compute_fbank(x, FeatureConfig(cmn=False))
    assert torch.allclose(raw - raw.mean(dim=0), feats)


def test_batch_equals_single() -> None:
    w = _waves(3, 20000)
    batch = compute_fbank_batch(w)
    single = torch.stack([compute_fbank(x) for x in w])
    assert batch.shape == (3, 123, 80)
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-4)
    for cfg in (FeatureConfig(cmn=False), FeatureConfig(window_type="povey", num_mel_bins=40)):
        torch.testing.assert_close(compute_fbank_batch(w, cfg),
                                   torch.stack([compute_fbank(x, cfg) for x in w]),
                                   rtol=0, atol=1e-4)


def test_dither_replayable_with_generator() -> None:
    x = _waves(1, 8000)[0]
    cfg = FeatureConfig(dither=1.0)
    a = compute_fbank(x, cfg, torch.Generator().manual_seed(5))
    b = compute_fbank(x, cfg, torch.Generator().manual_seed(5))
    c = compute_fbank(x, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(KdcacheError):
        compute_fbank_batch(_waves(2, 8000), cfg)


def test_config_dict_round_trip() -> None:
    cfg = FeatureConfig(num_mel_bins=64, cmn=False)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(KdcacheError, match="unknown"):
        FeatureConfig.from_dict({**cfg.to_dict(), "use_energy": True})
    with pytest.raises(KdcacheError):
        FeatureConfig(window_type="kaiser")


def test_too_short() -> None:
    with pytest.raises(KdcacheError):
        compute_fbank(np.zeros(100, dtype=np.float32))
