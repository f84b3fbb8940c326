from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kdcache.data.audio import read_audio, read_crop
from kdcache.errors import KdcacheError
from tests.data.wavs import write_wav


def test_read_audio(tmp_path: Path) -> None:
    x = write_wav(tmp_path / "a.wav", 5000)
    y = read_audio(tmp_path / "a.wav")
    assert y.dtype == np.float32 and np.array_equal(x, y)
    assert np.abs(y).max() <= 1.0


@pytest.mark.parametrize("start, n", [(0, 5000), (0, 1), (123, 4000), (4999, 1), (1000, 3999)])
def test_read_crop_matches_full_read(tmp_path: Path, start: int, n: int) -> None:
    x = write_wav(tmp_path / "a.wav", 5000)
    y = read_crop(tmp_path / "a.wav", start, n)
    assert y.dtype == np.float32 and y.shape == (n,)
    assert np.array_equal(y, x[start:start + n])


def test_read_crop_reads_only_the_crop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_wav(tmp_path / "a.wav", 50000)
    requested = []
    original = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    read_crop(tmp_path / "a.wav", 40000, 3000)
    assert requested == [3000]


def test_short_audio_is_tiled(tmp_path: Path) -> None:
    x = write_wav(tmp_path / "short.wav", 1000)
    y = read_crop(tmp_path / "short.wav", 0, 2500)
    assert np.array_equal(y, np.concatenate([x, x, x[:500]]))
    assert np.array_equal(read_crop(tmp_path / "short.wav", 0, 1000), x)
    with pytest.raises(KdcacheError, match="short.wav"):
        read_crop(tmp_path / "short.wav", 10, 2500)


def test_read_errors(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", 1000)
    with pytest.raises(KdcacheError, match="a.wav"):
        read_crop(tmp_path / "a.wav", 500, 600)  # past the end
    with pytest.raises(KdcacheError, match="missing.wav"):
        read_audio(tmp_path / "missing.wav")
    write_wav(tmp_path / "r.wav", 1000, sr=8000)
    with pytest.raises(KdcacheError, match="r.wav"):
        read_crop(tmp_path / "r.wav", 0, 100)
