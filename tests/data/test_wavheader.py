"""wav_header gives what libsndfile gives for every plain WAV it answers, and None for what it does not know."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from kdcache.data.corpus import audio_info
from kdcache.data.wavheader import wav_header


def _sf(path) -> tuple[int, int, int]:
    info = sf.info(str(path))
    return info.samplerate, info.channels, info.frames


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "PCM_U8", "FLOAT", "DOUBLE"])
@pytest.mark.parametrize("fmt", ["WAV", "WAVEX"])
@pytest.mark.parametrize("channels, rate, frames", [(1, 16000, 12345), (2, 8000, 7), (1, 16000, 1)])
def test_wav_header_equals_libsndfile(tmp_path, subtype, fmt, channels, rate, frames):
    path = tmp_path / "a.wav"
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (frames, channels))
    sf.write(path, data, rate, subtype=subtype, format=fmt)
    assert wav_header(path) == _sf(path)


def test_chunks_after_data_odd_lengths_and_a_truncated_file(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(1001, dtype=np.int16), 16000, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    # a LIST chunk of odd length (padded) after the data, and the RIFF size fixed up
    raw += b"LIST" + struct.pack("<I", 5) + b"abcde\0"
    raw[4:8] = struct.pack("<I", len(raw) - 8)
    path.write_bytes(bytes(raw))
    assert wav_header(path) == _sf(path) == (16000, 1, 1001)
    cut = tmp_path / "cut.wav"
    sf.write(cut, np.zeros(1001, dtype=np.int16), 16000, subtype="PCM_16")
    cut.write_bytes(cut.read_bytes()[:-101])  # 50.5 samples short
    assert wav_header(cut) == _sf(cut)


@pytest.mark.parametrize("content", [b"", b"RIFF", b"RIFX\0\0\0\0WAVE", b"not audio at all, just text",
                                     b"RIFF\x24\0\0\0WAVEdata\0\0\0\0"])
def test_what_it_does_not_know_is_left_to_libsndfile(tmp_path, content):
    path = tmp_path / "x.wav"
    path.write_bytes(content)
    assert wav_header(path) is None


def test_other_formats_are_left_to_libsndfile(tmp_path):
    flac = tmp_path / "a.flac"
    sf.write(flac, np.zeros(100), 16000, subtype="PCM_16", format="FLAC")
    assert wav_header(flac) is None
    assert audio_info(flac) == 100
    ulaw = tmp_path / "u.wav"
    sf.write(ulaw, np.zeros(100), 16000, subtype="ULAW", format="WAV")
    assert wav_header(ulaw) is None
    assert audio_info(ulaw) == 100
