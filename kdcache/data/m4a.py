"""AAC (``.m4a``) audio through PyAV, which ships FFmpeg in its wheels (``pip install 'kdcache[m4a]'``).

VoxCeleb2 is distributed as AAC in MP4 containers. kdcache reads audio with soundfile, one crop's
frames at a time, and replays every cached crop bit for bit; so the recipe converts each ``.m4a`` once to
16 kHz mono PCM16 (``.wav`` or lossless ``.flac``), as WeSpeaker converts VoxCeleb2 with ffmpeg. Decoding
AAC on every read would cost a decode from the file start (or a pre-rolled seek) per crop, and a float
decoder's output may differ in the last bit between FFmpeg builds, which ``rows/input_crc`` would then
report as changed audio.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from kdcache.errors import KdcacheError

SAMPLE_RATE = 16000


def _av():
    try:
        import av
    except ImportError:
        raise KdcacheError("reading .m4a audio needs PyAV: pip install 'kdcache[m4a]' (or pip install av)") from None
    return av


def decode_m4a(path: str | os.PathLike) -> np.ndarray:
    """The first audio stream of ``path`` as [N] int16, mono, 16 kHz (FFmpeg's resampler downmixes
    and resamples when the file differs). KdcacheError naming the file if it cannot be decoded."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise KdcacheError(f"{path}: audio file not found")
    parts: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise KdcacheError(f"{path}: cannot decode m4a audio: no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(stream):
                parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except KdcacheError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise KdcacheError(f"{path}: cannot decode m4a audio: {' '.join(str(e).split())}") from None
    if not parts or sum(len(p) for p in parts) == 0:
        raise KdcacheError(f"{path}: cannot decode m4a audio: no samples")
    return np.concatenate(parts).astype(np.int16, copy=False)


def encode_m4a(path: str | os.PathLike, samples: np.ndarray, bit_rate: int = 48000) -> None:
    """Write [N] int16 16 kHz mono ``samples`` as AAC-LC in an MP4 (``.m4a``) container, with FFmpeg's
    native ``aac`` encoder (as VoxCeleb2's files are: AAC, 16 kHz, mono)."""
    av = _av()
    x = np.asarray(samples)
    if x.ndim != 1 or x.dtype != np.int16:
        raise ValueError("encode_m4a expects [N] int16 samples")
    with av.open(str(path), "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray((x.astype(np.float32) / 32768.0)[None, :], format="fltp", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = 0  # so the muxer records the encoder delay and decoders trim it
        frame.time_base = Fraction(1, SAMPLE_RATE)
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def convert_m4a(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Decode ``src`` and write ``dst`` (``.wav`` or ``.flac``, PCM16) atomically: a temporary file in the
    same folder, renamed when complete, so an existing ``dst`` is always whole. Returns the samples."""
    dst = Path(dst)
    x = decode_m4a(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".wav": "WAV", ".flac": "FLAC"}[dst.suffix.lower()]
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        sf.write(str(tmp), x, SAMPLE_RATE, subtype="PCM_16", format=fmt)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return len(x)
