"""Test helper: write small wav files."""

from pathlib import Path

import numpy as np
import soundfile as sf


def write_wav(path: Path, num_samples: int, sr: int = 16000, channels: int = 1,
              seed: int = 0) -> np.ndarray:
    """Write random PCM16 audio; returns channel 0 as soundfile reads it (float32 in [-1, 1])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).integers(-20000, 20000, (num_samples, channels), dtype=np.int16)
    sf.write(str(path), x if channels > 1 else x[:, 0], sr, subtype="PCM_16")
    return (x[:, 0] / 32768.0).astype(np.float32)
