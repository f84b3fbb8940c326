import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kdcache.data import augment as aug_mod
from kdcache.data.augment import AugmentConfig, Augmenter
from kdcache.errors import KdcacheError


def _speechy(n: int = 16000, seed: int = 0) -> np.ndarray:
    r = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.5 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)
            + 0.05 * r.standard_normal(n)).astype(np.float32)


@pytest.fixture()
def material(tmp_path: Path) -> tuple[Path, Path]:
    r = np.random.default_rng(1)
    noise, rir = tmp_path / "noise", tmp_path / "rir"
    (noise / "sub").mkdir(parents=True)
    rir.mkdir()
    sf.write(noise / "white.wav", 0.3 * r.standard_normal(24000), 16000, subtype="PCM_16")
    sf.write(noise / "sub" / "short.wav", 0.3 * r.standard_normal(4000), 16000, subtype="PCM_16")
    for k in range(2):
        h = r.standard_normal(3000) * np.exp(-np.arange(3000) / (300.0 * (k + 1)))
        h[0] = 1.0
        sf.write(rir / f"rir{k}.wav", 0.9 * h / np.abs(h).max(), 16000, subtype="PCM_16")
    return noise, rir


def test_prob_zero_is_identity(material: tuple[Path, Path]) -> None:
    aug = Augmenter(AugmentConfig(str(material[0]), str(material[1]), prob=0.0))
    x = _speechy()
    assert all(aug.apply(x, seed) is x for seed in range(20))
    no_dirs = Augmenter(AugmentConfig(prob=1.0))
    assert not no_dirs.enabled and no_dirs.apply(x, 3) is x


def test_same_seed_same_output(material: tuple[Path, Path]) -> None:
    cfg = AugmentConfig(str(material[0]), str(material[1]), prob=0.6)
    a, b = Augmenter(cfg), Augmenter(cfg)
    x = _speechy()
    outs = [a.apply(x, seed) for seed in range(30)]
    for seed, out in enumerate(outs):
        again = b.apply(x, seed)
        assert np.array_equal(out, again) and out.dtype == np.float32
    changed = [out is not x for out in outs]
    assert 5 < sum(changed) < 28  # about 60% augmented
    assert len({out.tobytes() for out in outs}) > 10


def test_peak_is_kept(material: tuple[Path, Path]) -> None:
    aug = Augmenter(AugmentConfig(str(material[0]), str(material[1]), prob=1.0))
    x = _speechy()
    for seed in range(10):
        y = aug.apply(x, seed)
        assert y.shape == x.shape
        assert np.isclose(np.abs(y).max(), np.abs(x).max(), rtol=1e-5)


def test_reverb_is_normalised_convolution(material: tuple[Path, Path]) -> None:
    rir_dir = material[1]
    aug = Augmenter(AugmentConfig(reverb_dir=str(rir_dir), prob=1.0))
    x = _speechy()
    seed = 11
    rng = np.random.default_rng(seed)
    rng.random()
    rng.integers(1)  # kind: reverb is the only one
    name = sorted(p.name for p in rir_dir.iterdir())[int(rng.integers(2))]
    h = sf.read(rir_dir / name, dtype="float32")[0].astype(np.float64)
    ref = np.convolve(x.astype(np.float64), h / np.sqrt(np.sum(h**2)))[:len(x)]
    ref *= np.abs(x).max() / np.abs(ref).max()
    np.testing.assert_allclose(aug.apply(x, seed), ref, atol=1e-5)


def test_noise_snr_in_range(material: tuple[Path, Path]) -> None:
    aug = Augmenter(AugmentConfig(noise_dir=str(material[0]), prob=1.0))
    x = _speechy().astype(np.float64)
    for seed in range(15):
        y = aug.apply(x.astype(np.float32), seed).astype(np.float64)
        c = np.dot(y, x) / np.dot(x, x)  # y = c (x + noise), the noise is independent of x
        noise = y / c - x
        snr = 10 * np.log10(np.mean(x**2) / np.mean(noise**2))
        assert -1.0 < snr < 16.0


def test_long_noise_read_in_segments_matches_cache(material: tuple[Path, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = AugmentConfig(noise_dir=str(material[0]), prob=1.0)
    x = _speechy(8000)
    cached = [Augmenter(cfg).apply(x, s) for s in range(10)]
    monkeypatch.setattr(aug_mod, "CACHE_MAX_SAMPLES", 10000)  # white.wav is now "long"
    streamed = Augmenter(cfg)
    assert all(np.array_equal(c, streamed.apply(x, s)) for s, c in enumerate(cached))
    assert streamed._long  # the segment path was taken


def test_manifest(material: tuple[Path, Path]) -> None:
    aug = Augmenter(AugmentConfig(str(material[0]), str(material[1])))
    m = aug.manifest()
    assert [e["name"] for e in m["noise"]] == ["sub/short.wav", "white.wav"]
    assert [e["name"] for e in m["reverb"]] == ["rir0.wav", "rir1.wav"]
    assert m["noise"][1]["sha256"] == hashlib.sha256(
        (material[0] / "white.wav").read_bytes()).hexdigest()
    assert m["prob"] == 0.6


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(KdcacheError, match="missing"):
        Augmenter(AugmentConfig(noise_dir=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdcacheError, match="empty"):
        Augmenter(AugmentConfig(reverb_dir=str(tmp_path / "empty")))
    with pytest.raises(KdcacheError):
        AugmentConfig(prob=1.5)
    cfg = AugmentConfig(noise_dir="n", prob=0.3)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(KdcacheError):
        AugmentConfig.from_dict({"noise": "n"})
