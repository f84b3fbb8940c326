"""WeSpeaker-style reverb / additive-noise augmentation, replayable from a per-row seed.

``Augmenter.apply(wave, seed)`` draws everything from ``np.random.default_rng(seed)`` in a fixed
order: [u < prob?] [kind] [file] [noise: segment start, SNR]. The same seed and the same noise / RIR
files therefore give the same output, so phase 2 replays the teacher's exact input.

As in WeSpeaker (``dataset/processor.py: add_reverb_noise``): the RIR is divided by its L2 norm and
convolved, keeping the first ``len`` samples; noise gets an SNR uniform in [0, 15] dB (MUSAN's
``speech/`` [10, 30] and ``music/`` [5, 15] folders keep their WeSpeaker ranges), with levels
``10 log10(mean(x^2) + 1e-4)``. Unlike WeSpeaker (which scales the peak to 1), the result is rescaled
to the input's peak, so the level of the input is kept and nothing clips.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from kdcache.data.audio import tile
from kdcache.errors import KdcacheError, one_line

SAMPLE_RATE = 16000
_SNR_DB = {"speech": (10.0, 30.0), "music": (5.0, 15.0)}  # by first path component
_DEFAULT_SNR_DB = (0.0, 15.0)
_AUDIO_SUFFIXES = (".wav", ".flac")
CACHE_MAX_SAMPLES = 60 * SAMPLE_RATE  # longer 16 kHz noise files are read a segment at a time


@dataclass(frozen=True)
class AugmentConfig:
    """Folders of noise and RIR audio (searched recursively; None = not used), and the probability."""

    noise_dir: str | None = None
    reverb_dir: str | None = None
    prob: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise KdcacheError(f"augmentation: prob must be in [0, 1], got {self.prob}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentConfig:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise KdcacheError(f"augmentation: unknown setting(s) {unknown}")
        return cls(**d)


def _list_audio(folder: str, what: str) -> list[tuple[str, Path]]:
    """(name, path) of the folder's audio files, sorted; a folder holding a ``wav.scp`` (``<name> <path>``,
    as ``kdcache prepare-voxceleb`` writes for MUSAN and RIRS_NOISES) lists them instead."""
    root = Path(folder)
    if not root.is_dir():
        raise KdcacheError(f"{root}: {what} folder not found")
    if (root / "wav.scp").is_file():
        return _read_list(root / "wav.scp")
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if f.lower().endswith(_AUDIO_SUFFIXES) and not f.startswith("."):
                p = Path(dirpath) / f
                files.append((p.relative_to(root).as_posix(), p))
    if not files:
        raise KdcacheError(f"{root}: no .wav or .flac files in the {what} folder")
    return sorted(files)


def _read_list(scp: Path) -> list[tuple[str, Path]]:
    from kdcache.data.corpus import read_table

    files = []
    for _line, name, value in read_table(scp, "audio list"):
        path = Path(value)
        files.append((name, path if path.is_absolute() else scp.parent / path))
    if len({name for name, _ in files}) != len(files):
        raise KdcacheError(f"{scp}: duplicate names in the audio list")
    return sorted(files)


def _info(path: Path) -> sf._SoundFileInfo:
    try:
        return sf.info(str(path))
    except (RuntimeError, OSError) as e:
        raise KdcacheError(f"{path}: cannot read audio: {one_line(e)}") from None


def _load(path: Path, start: int = 0, frames: int = -1) -> np.ndarray:
    """[frames] float32 at 16 kHz from ``start``; the first channel of multi-channel files, other
    rates resampled (whole file only)."""
    try:
        x, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as e:
        raise KdcacheError(f"{path}: cannot read audio: {one_line(e)}") from None
    x = np.ascontiguousarray(x[:, 0])
    if len(x) == 0:
        raise KdcacheError(f"{path}: no samples")
    if sr != SAMPLE_RATE:
        x = AF.resample(torch.from_numpy(x), sr, SAMPLE_RATE).numpy()
    return x


def _db(x: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(x**2) + 1e-4))


def convolve_full(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Full linear convolution through the FFT: [len(x) + len(h) - 1] float64."""
    n = len(x) + len(h) - 1
    nfft = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[:n]


class Augmenter:
    """Applies :class:`AugmentConfig` to waveforms.

    RIRs and noise files up to a minute are cached in memory (float32) on first use; longer 16 kHz
    noise files (MUSAN music, long recordings) are read one segment at a time.
    """

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self.noise_files = _list_audio(config.noise_dir, "noise") if config.noise_dir else []
        self.rir_files = _list_audio(config.reverb_dir, "reverb") if config.reverb_dir else []
        self.kinds = [k for k, files in (("reverb", self.rir_files), ("noise", self.noise_files))
                      if files]
        self._audio: dict[Path, np.ndarray] = {}  # noise, float32
        self._rirs: dict[Path, np.ndarray] = {}  # normalised RIRs, float64
        self._long: dict[Path, int] = {}  # uncached noise files: length in samples

    @property
    def enabled(self) -> bool:
        return bool(self.kinds) and self.config.prob > 0

    def manifest(self) -> dict[str, Any]:
        """Provenance: the config and the name and sha256 of every noise / RIR file."""
        def entries(files: list[tuple[str, Path]]) -> list[dict[str, str]]:
            return [{"name": name, "sha256": _sha256(p)} for name, p in files]
        return {"prob": self.config.prob, "noise": entries(self.noise_files),
                "reverb": entries(self.rir_files)}

    def _noise_segment(self, path: Path, n: int, rng: np.random.Generator) -> np.ndarray:
        """[n] float64: a random segment of the noise file, or the whole file tiled if shorter.

        Cached and uncached files draw the same way, so caching never changes the output.
        """
        x = self._audio.get(path)
        if x is None and path not in self._long:
            info = _info(path)
            if info.samplerate == SAMPLE_RATE and info.frames > CACHE_MAX_SAMPLES:
                self._long[path] = info.frames
            else:
                x = self._audio[path] = _load(path)
        length = len(x) if x is not None else self._long[path]
        if length < n:
            return tile(x if x is not None else _load(path), n).astype(np.float64)
        start = int(rng.integers(0, length - n + 1))
        seg = x[start:start + n] if x is not None else _load(path, start, n)
        return seg.astype(np.float64)

    def _rir(self, path: Path) -> np.ndarray:
        h = self._rirs.get(path)
        if h is None:
            h = _load(path).astype(np.float64)
            norm = np.sqrt(np.sum(h**2))
            if norm == 0:
                raise KdcacheError(f"{path}: RIR is silent")
            h = self._rirs[path] = h / norm
        return h

    def apply(self, wave: np.ndarray, seed: int) -> np.ndarray:
        """Augment ``wave`` ([N] float in [-1, 1]) as drawn from ``seed``; [N] float32.

        Returns the input unchanged (same object) when the draw says no augmentation.
        """
        rng = np.random.default_rng(int(seed))
        if not self.kinds or not rng.random() < self.config.prob:
            return wave
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        audio = np.asarray(wave, dtype=np.float64)
        n = len(audio)
        if kind == "reverb":
            _, path = self.rir_files[int(rng.integers(len(self.rir_files)))]
            out = convolve_full(audio, self._rir(path))[:n]
        else:
            name, path = self.noise_files[int(rng.integers(len(self.noise_files)))]
            noise = self._noise_segment(path, n, rng)
            lo, hi = _SNR_DB.get(name.split("/", 1)[0], _DEFAULT_SNR_DB)
            snr = rng.uniform(lo, hi)
            noise = np.sqrt(10.0 ** ((_db(audio) - _db(noise) - snr) / 10.0)) * noise
            out = audio + noise
        peak_in, peak_out = np.max(np.abs(audio)), np.max(np.abs(out))
        if peak_out > 0 and peak_in > 0:
            out = out * (peak_in / peak_out)
        return out.astype(np.float32)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
