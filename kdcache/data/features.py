"""Kaldi log-mel filterbanks as WeSpeaker computes them, plus mean normalisation over time.

WeSpeaker: waveform in [-1, 1] scaled by 32768, ``torchaudio.compliance.kaldi.fbank`` with 80 bins,
25/10 ms hamming frames, ``use_energy=False``, other options at torchaudio's defaults
(pre-emphasis 0.97, DC removal, 512-point FFT, ``snip_edges``), then CMN (mean only).
The cache path uses no dither: dither is noise a student could not replay.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi

from kdcache.errors import KdcacheError

INT16_SCALE = 32768.0  # 1 << 15: WeSpeaker's scaling of float audio to the int16 range
_WINDOWS = ("hamming", "hanning", "povey", "rectangular", "blackman")


@dataclass(frozen=True)
class FeatureConfig:
    """Fbank settings. Stored in the cache and compared on use."""

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window_type: str = "hamming"
    dither: float = 0.0
    cmn: bool = True

    def __post_init__(self) -> None:
        if self.window_type not in _WINDOWS:
            raise KdcacheError(f"features: window_type {self.window_type!r} not one of {_WINDOWS}")
        if self.sample_rate <= 0 or self.num_mel_bins <= 0 or self.frame_shift_ms <= 0 \
                or self.frame_length_ms <= 0 or self.dither < 0:
            raise KdcacheError(f"features: invalid settings {self.to_dict()}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused (a newer or foreign config)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise KdcacheError(f"features: unknown setting(s) {unknown} in feature config")
        return cls(**d)

    @property
    def window_size(self) -> int:
        """Frame length in samples (400), computed as torchaudio does."""
        return int(self.sample_rate * self.frame_length_ms * 0.001)

    @property
    def window_shift(self) -> int:
        """Frame shift in samples (160)."""
        return int(self.sample_rate * self.frame_shift_ms * 0.001)

    def num_samples_for_frames(self, frames: int) -> int:
        """Samples that give exactly ``frames`` frames: (frames - 1) * shift + window."""
        return (int(frames) - 1) * self.window_shift + self.window_size

    def num_frames(self, num_samples: int) -> int:
        """Frames of a waveform of ``num_samples`` samples (``snip_edges``); 0 if shorter than a window."""
        if num_samples < self.window_size:
            return 0
        return 1 + (int(num_samples) - self.window_size) // self.window_shift

    def frames_for_seconds(self, seconds: float) -> int:
        """Frames in a crop of ``seconds`` (2.0 s -> 200)."""
        return int(round(seconds * 1000.0 / self.frame_shift_ms))

    def crop_num_samples(self, seconds: float) -> int:
        """Samples of a crop of ``seconds`` (2.0 s -> 200 frames -> 32240 samples)."""
        return self.num_samples_for_frames(self.frames_for_seconds(seconds))


def _as_tensor(waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform))
    return waveform.to(torch.float32)


def _kaldi_args(cfg: FeatureConfig) -> dict[str, Any]:
    return dict(num_mel_bins=cfg.num_mel_bins, frame_length=cfg.frame_length_ms,
                frame_shift=cfg.frame_shift_ms, dither=cfg.dither,
                sample_frequency=float(cfg.sample_rate), window_type=cfg.window_type,
                use_energy=False)


def compute_fbank(waveform: np.ndarray | torch.Tensor, cfg: FeatureConfig = FeatureConfig(),
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Log-mel fbank of one waveform: [N] float in [-1, 1] -> [T, num_mel_bins] float32.

    With ``cfg.dither > 0`` the dither noise comes from ``generator`` when given (replayable: the
    same generator state gives the same features); without one it comes from torch's global RNG
    and cannot be replayed.
    """
    x = _as_tensor(waveform)
    if x.dim() != 1:
        raise KdcacheError(f"features: expected a 1-D waveform, got shape {tuple(x.shape)}")
    if x.numel() < cfg.window_size:
        raise KdcacheError(f"features: waveform of {x.numel()} samples is shorter than one frame "
                           f"({cfg.window_size})")
    x = (x * INT16_SCALE).unsqueeze(0)
    if cfg.dither > 0 and generator is not None:
        # torchaudio draws dither from the global RNG: seed a forked copy of it from the generator.
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            feats = kaldi.fbank(x, **_kaldi_args(cfg))
    else:
        feats = kaldi.fbank(x, **_kaldi_args(cfg))
    if cfg.cmn:
        feats = feats - feats.mean(dim=0, keepdim=True)
    return feats


def compute_fbank_batch(waves: np.ndarray | torch.Tensor,
                        cfg: FeatureConfig = FeatureConfig()) -> torch.Tensor:
    """Fbank of equal-length waveforms: [B, N] float in [-1, 1] -> [B, T, num_mel_bins] float32.

    Vectorised re-statement of ``kaldi.fbank`` (same operations, on any device); equal to
    :func:`compute_fbank` per row up to float rounding. Dither is not supported here: use
    :func:`compute_fbank` per row.
    """
    if cfg.dither > 0:
        raise KdcacheError("features: compute_fbank_batch does not dither; use compute_fbank")
    x = _as_tensor(waves)
    if x.dim() != 2:
        raise KdcacheError(f"features: expected [B, N] waveforms, got shape {tuple(x.shape)}")
    win, shift = cfg.window_size, cfg.window_shift
    if x.shape[1] < win:
        raise KdcacheError(f"features: waveforms of {x.shape[1]} samples are shorter than one frame")
    padded = 1 << (win - 1).bit_length()
    frames = (x * INT16_SCALE).unfold(1, win, shift)  # [B, T, win]
    frames = frames - frames.mean(dim=2, keepdim=True)
    prev = torch.cat([frames[..., :1], frames[..., :-1]], dim=2)  # replicate-pad by one sample
    frames = frames - 0.97 * prev
    window = kaldi._feature_window_function(cfg.window_type, win, 0.42, x.device, x.dtype)
    frames = torch.nn.functional.pad(frames * window, (0, padded - win))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # [B, T, padded/2 + 1]
    mel, _ = kaldi.get_mel_banks(cfg.num_mel_bins, padded, float(cfg.sample_rate), 20.0, 0.0,
                                 100.0, -500.0, 1.0)
    mel = torch.nn.functional.pad(mel.to(device=x.device, dtype=x.dtype), (0, 1))
    eps = torch.tensor(torch.finfo(torch.float).eps, device=x.device, dtype=x.dtype)
    feats = torch.max(power @ mel.T, eps).log()
    if cfg.cmn:
        feats = feats - feats.mean(dim=1, keepdim=True)
    return feats
