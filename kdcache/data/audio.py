"""Audio reading through soundfile: whole files or only the frames of one crop."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from kdcache.errors import KdcacheError, one_line

SAMPLE_RATE = 16000


def unreadable_audio(path: Path, err: BaseException, where: str | None = None) -> KdcacheError:
    """The one-line error for audio soundfile cannot open (``err``): not found, or why not readable.
    ``where`` (default: the path) starts the line."""
    if not path.exists():
        return KdcacheError(f"{where or path}: audio file not found")
    return KdcacheError(f"{where or path}: cannot read audio: {one_line(err)}")


def _open(path: Path) -> sf.SoundFile:
    try:
        f = sf.SoundFile(str(path))
    except (RuntimeError, OSError) as e:  # sf.LibsndfileError is a RuntimeError
        raise unreadable_audio(path, e) from None
    if f.samplerate != SAMPLE_RATE or f.channels != 1:
        f.close()
        raise KdcacheError(f"{path}: {f.samplerate} Hz, {f.channels} channel(s); expected "
                           f"{SAMPLE_RATE} Hz mono")
    return f


def _read(f: sf.SoundFile, path: Path, frames: int) -> np.ndarray:
    try:
        x = f.read(frames, dtype="float32", always_2d=False)
    except (RuntimeError, OSError) as e:
        raise KdcacheError(f"{path}: cannot read audio: {one_line(e)}") from None
    if len(x) != frames:
        raise KdcacheError(f"{path}: expected {frames} samples, read {len(x)} (truncated file?)")
    return x


def read_audio(path: str | os.PathLike) -> np.ndarray:
    """The whole file: [N] float32 in [-1, 1] (int16 PCM / 32768)."""
    path = Path(path)
    with _open(path) as f:
        return _read(f, path, f.frames)


def read_crop(path: str | os.PathLike, start: int, num_samples: int) -> np.ndarray:
    """Samples ``[start, start + num_samples)``: [num_samples] float32 in [-1, 1].

    Only those frames are read. A file shorter than ``num_samples`` is tiled (repeated
    ``len // n + 1`` times and cut, as WeSpeaker does); ``start`` must then be 0.
    """
    path = Path(path)
    start, num_samples = int(start), int(num_samples)
    if num_samples <= 0 or start < 0:
        raise KdcacheError(f"{path}: invalid crop start={start} num_samples={num_samples}")
    with _open(path) as f:
        n = f.frames
        if n >= num_samples:
            if start + num_samples > n:
                raise KdcacheError(f"{path}: crop [{start}, {start + num_samples}) beyond the "
                                   f"{n} samples of the file (audio changed since indexing?)")
            f.seek(start)
            return _read(f, path, num_samples)
        if start != 0:
            raise KdcacheError(f"{path}: crop start {start} on a file of {n} samples, shorter "
                               f"than the crop ({num_samples}); a tiled crop starts at 0")
        if n == 0:
            raise KdcacheError(f"{path}: no samples")
        whole = _read(f, path, n)
    return tile(whole, num_samples)


def tile(x: np.ndarray, num_samples: int) -> np.ndarray:
    """Repeat ``x`` (``len // n + 1`` times) and keep the first ``num_samples``: WeSpeaker's padding."""
    reps = num_samples // len(x) + 1
    return np.tile(x, reps)[:num_samples].copy()
