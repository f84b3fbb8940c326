import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kdcache.data.audio import read_audio
from kdcache.data.corpus import load_corpus
from kdcache.data.features import compute_fbank
from kdcache.data.synthetic import make_synthetic_corpus, synthesize_speaker
from kdcache.data.trials import read_trials
from kdcache.errors import KdcacheError
from tests.data.conftest import TINY


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout(data_corpus: Path) -> None:
    wavs = sorted(p.relative_to(data_corpus / "wav").as_posix()
                  for p in (data_corpus / "wav").rglob("*.wav"))
    assert len(wavs) == (4 + 3) * 3
    assert all(re.fullmatch(r"id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav", w) for w in wavs)
    info = sf.info(str(data_corpus / "wav" / wavs[0]))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert (data_corpus / "README.txt").read_text().startswith("Synthetic speaker corpus")
    assert len(list((data_corpus / "noise").glob("*.wav"))) == 8
    assert len(list((data_corpus / "rir").glob("*.wav"))) == 8
    line = (data_corpus / "train" / "wav.scp").read_text().splitlines()[0]
    utt, path = line.split()
    assert path == f"../wav/{utt}"


def test_train_and_test_corpora(data_corpus: Path) -> None:
    train, test = load_corpus(data_corpus / "train"), load_corpus(data_corpus / "test")
    assert len(train.speakers) == 4 and len(test.speakers) == 3
    assert not set(train.speakers) & set(test.speakers)
    assert len(train) == 12 and len(test) == 9
    assert all(u.speaker == u.id.split("/")[0] for u in train)
    lengths = train.num_samples
    assert lengths.min() >= 0.8 * 16000 and lengths.max() <= 1.2 * 16000
    # The VoxCeleb-tree reader sees the same utterances under wav/.
    tree = load_corpus(data_corpus / "wav")
    assert set(tree.ids) == set(train.ids) | set(test.ids)


def test_trials(data_corpus: Path) -> None:
    test = load_corpus(data_corpus / "test")
    trials = read_trials(data_corpus / "test" / "trials.txt")
    assert len(trials) == 18  # 9 possible target pairs: 9 target + 9 non-target
    assert sum(t.target for t in trials) == 9
    assert len({frozenset((t.enroll, t.test)) for t in trials}) == len(trials)
    for t in trials:
        assert t.enroll != t.test
        same = test.by_id(t.enroll).speaker == test.by_id(t.test).speaker
        assert same == t.target


def test_deterministic(data_corpus: Path, tmp_path: Path) -> None:
    calls: list[int] = []
    again = make_synthetic_corpus(tmp_path / "again", progress=calls.append, workers=2, **TINY)
    assert _digests(again) == _digests(data_corpus)
    assert calls == [3] * 7  # utterances written per speaker
    other = make_synthetic_corpus(tmp_path / "other", **{**TINY, "seed": 1})
    a, b = _digests(data_corpus), _digests(other)
    assert not set(a.values()) & {v for k, v in b.items() if k.startswith("wav/")}


def test_same_bytes_with_more_threads() -> None:
    one = synthesize_speaker(0, 5, [0, 1], [12000, 15000])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = synthesize_speaker(0, 5, [0, 1], [12000, 15000])
    finally:
        torch.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def _log_pitch(x: np.ndarray) -> float:
    """Median autocorrelation pitch (log Hz, 70-400 Hz) over the loudest 40 ms frames."""
    frames = np.lib.stride_tricks.sliding_window_view(x, 640)[::320]
    energy = (frames**2).mean(1)
    frames = frames[energy > np.percentile(energy, 60)]
    frames = frames - frames.mean(1, keepdims=True)
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 1280)) ** 2)[:, :640]
    lo, hi = 16000 // 400, 16000 // 70
    return float(np.median(np.log(16000 / (lo + np.argmax(ac[:, lo:hi], axis=1)))))


def _vowel_spectrum(x: np.ndarray) -> np.ndarray:
    """Mean CMN'd fbank of the loudest frames: a static channel cancels out."""
    fb = compute_fbank(x).numpy()
    energy = fb.sum(1)
    return fb[energy > np.percentile(energy, 70)].mean(0)


def test_speakers_differ(tmp_path: Path) -> None:
    """Weak check: utterances of one speaker from *different sessions* (so no shared channel) are
    closer in pitch and vowel spectrum than utterances of different speakers."""
    root = make_synthetic_corpus(tmp_path / "c", speakers=6, utterances_per_speaker=4, seconds=1.0,
                                 test_speakers=2, num_trials=10, speaker_spread=1.0,
                                 session_variability=0.7)
    corpus = load_corpus(root / "train")
    waves = [read_audio(u.path) for u in corpus]
    session = np.array([u.id.split("/")[1] for u in corpus])
    same = corpus.labels[:, None] == corpus.labels[None]
    pairs = same & (session[:, None] != session[None])
    assert pairs.sum() >= 20
    pitch = np.array([_log_pitch(x) for x in waves])
    d = np.abs(pitch[:, None] - pitch[None])
    assert d[pairs].mean() < 0.5 * d[~same].mean()
    spec = np.array([_vowel_spectrum(x) for x in waves])
    d = np.linalg.norm(spec[:, None] - spec[None], axis=-1)
    assert d[pairs].mean() < 0.95 * d[~same].mean()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(KdcacheError):
        make_synthetic_corpus(tmp_path / "x", test_speakers=1)
    with pytest.raises(KdcacheError):
        make_synthetic_corpus(tmp_path / "x", noise_snr_db=(20.0, 10.0))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.wav").write_bytes(b"")
    with pytest.raises(KdcacheError, match="full"):
        make_synthetic_corpus(tmp_path / "full")


def test_importing_kdcache_data_does_not_load_the_synthetic_generator():
    """It built its windows at import, in every process that read a corpus (DataLoader workers too)."""
    import subprocess
    import sys

    code = ("import sys, kdcache.data; assert 'kdcache.data.synthetic' not in sys.modules; "
            "f = kdcache.data.make_synthetic_corpus; assert 'kdcache.data.synthetic' in sys.modules; "
            "from kdcache.data import make_synthetic_corpus")
    subprocess.run([sys.executable, "-c", code], check=True)


def _test_set_digests(root: Path) -> dict[str, str]:
    """Digests of test/ (lists, trials) and of the test speakers' audio."""
    test_ids = [line.split()[0] for line in (root / "test" / "wav.scp").read_text().splitlines()]
    digests = {f"test/{k}": v for k, v in _digests(root / "test").items()}
    digests.update({f"wav/{u}": hashlib.sha256((root / "wav" / u).read_bytes()).hexdigest() for u in test_ids})
    return digests


def test_same_test_set_for_any_training_speaker_count(tmp_path: Path) -> None:
    """ENSKD's speaker-count experiment: 2x6 and 4x3 training utterances, one held-out test set."""
    common = dict(seconds=0.6, test_speakers=3, seed=5, num_trials=12, workers=1,
                  test_speaker_offset=50, test_utterances_per_speaker=3)
    few = make_synthetic_corpus(tmp_path / "few", speakers=2, utterances_per_speaker=6, **common)
    many = make_synthetic_corpus(tmp_path / "many", speakers=4, utterances_per_speaker=3, **common)
    assert _test_set_digests(few) == _test_set_digests(many)
    assert len(_test_set_digests(few)) == 3 + 9  # wav.scp, utt2spk, trials.txt + 9 test wavs
    assert len(load_corpus(few / "train")) == len(load_corpus(many / "train")) == 12
    assert len(load_corpus(few / "train").speakers) == 2 and len(load_corpus(many / "train").speakers) == 4
    assert set(load_corpus(many / "test").speakers) == {"id10050", "id10051", "id10052"}
    # Without the offset the test speakers follow the training ones, so the test set changes.
    plain = dict(common, test_speaker_offset=None, test_utterances_per_speaker=None)
    a = make_synthetic_corpus(tmp_path / "a", speakers=2, utterances_per_speaker=3, **plain)
    b = make_synthetic_corpus(tmp_path / "b", speakers=3, utterances_per_speaker=3, **plain)
    assert _test_set_digests(a) != _test_set_digests(b)


def test_test_speaker_offset_must_not_overlap_training(tmp_path: Path) -> None:
    with pytest.raises(KdcacheError, match="test_speaker_offset 3"):
        make_synthetic_corpus(tmp_path / "x", speakers=4, test_speaker_offset=3)
    with pytest.raises(KdcacheError, match="test_utterances_per_speaker"):
        make_synthetic_corpus(tmp_path / "y", speakers=4, test_utterances_per_speaker=1)


def test_a_corpus_larger_than_the_free_disk_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from kdcache.errors import KdcacheError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))  # 1 MB free
    with pytest.raises(KdcacheError, match=r"the corpus needs about .* GiB .* free; choose fewer"):
        make_synthetic_corpus(tmp_path / "big", speakers=10, utterances_per_speaker=5, seconds=2.0, test_speakers=2)
    assert not (tmp_path / "big").exists()
