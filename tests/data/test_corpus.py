import shutil
from pathlib import Path

import numpy as np
import pytest

from kdcache.data.corpus import Corpus, Utterance, load_corpus
from kdcache.errors import KdcacheError
from tests.data.wavs import write_wav


def make_kaldi(folder: Path) -> Path:
    """wav.scp with a relative and an absolute path; lines deliberately unsorted."""
    write_wav(folder / "audio" / "b.wav", 1600)
    write_wav(folder / "audio" / "a.wav", 3200)
    write_wav(folder / "elsewhere" / "c.wav", 800)
    (folder / "wav.scp").write_text(
        "spkB-utt1 audio/b.wav\n"
        "spkA-utt1 audio/a.wav\n"
        f"spkA-utt2 {(folder / 'elsewhere' / 'c.wav').resolve()}\n")
    (folder / "utt2spk").write_text("spkA-utt1 spkA\nspkA-utt2 spkA\nspkB-utt1 spkB\n")
    return folder


def test_kaldi_corpus(tmp_path: Path) -> None:
    corpus = load_corpus(make_kaldi(tmp_path / "data"))
    assert [u.id for u in corpus] == ["spkA-utt1", "spkA-utt2", "spkB-utt1"]
    assert [u.num_samples for u in corpus] == [3200, 800, 1600]
    assert corpus.speakers == ["spkA", "spkB"]
    assert corpus.labels.tolist() == [0, 0, 1]
    assert corpus.num_samples.dtype == np.int64
    assert corpus.index("spkB-utt1") == 2
    assert corpus.by_id("spkA-utt2").path.name == "c.wav"
    assert corpus.speaker_index("spkB") == 1
    assert len(corpus) == 3 and "spkA-utt1" in corpus
    # The wav.scp file itself is accepted too.
    assert load_corpus(tmp_path / "data" / "wav.scp").ids == corpus.ids


def test_voxceleb_tree(tmp_path: Path) -> None:
    write_wav(tmp_path / "id10002" / "vidA" / "00001.wav", 1000)
    write_wav(tmp_path / "id10001" / "vidB" / "00002.wav", 2000)
    write_wav(tmp_path / "id10001" / "vidB" / "00001.wav", 3000)
    (tmp_path / "id10001" / "notes.txt").write_text("ignored")
    corpus = load_corpus(tmp_path)
    assert corpus.ids == ["id10001/vidB/00001.wav", "id10001/vidB/00002.wav",
                          "id10002/vidA/00001.wav"]
    assert [u.speaker for u in corpus] == ["id10001", "id10001", "id10002"]
    assert [u.num_samples for u in corpus] == [3000, 2000, 1000]
    assert corpus.speakers == ["id10001", "id10002"]


def test_manifest_hash_ignores_location(tmp_path: Path) -> None:
    a = load_corpus(make_kaldi(tmp_path / "one"))
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    # The absolute path in wav.scp still points into "one"; make "two" fully relative.
    (tmp_path / "two" / "wav.scp").write_text(
        "spkB-utt1 audio/b.wav\nspkA-utt1 audio/a.wav\nspkA-utt2 elsewhere/c.wav\n")
    b = load_corpus(tmp_path / "two")
    assert a.manifest_sha256() == b.manifest_sha256()
    assert len(a.manifest_sha256()) == 64
    changed = Corpus(b.root, [Utterance(u.id, u.path, u.speaker, u.num_samples + 1) for u in b])
    assert changed.manifest_sha256() != a.manifest_sha256()


def test_subset(tmp_path: Path) -> None:
    corpus = load_corpus(make_kaldi(tmp_path))
    sub = corpus.subset(["spkB-utt1", "spkA-utt1"])
    assert sub.ids == ["spkA-utt1", "spkB-utt1"]
    assert corpus.subset(lambda u: u.speaker == "spkA").ids == ["spkA-utt1", "spkA-utt2"]
    with pytest.raises(KdcacheError, match="nope"):
        corpus.subset(["nope"])
    with pytest.raises(KdcacheError, match="nope"):
        corpus.index("nope")


def _expect_error(path: Path, *fragments: str) -> None:
    with pytest.raises(KdcacheError) as err:
        load_corpus(path)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("scp, u2s, where", [
    ("a audio/a.wav\nb audio/missing.wav\n", "a s\nb s\n", "wav.scp:2"),  # missing file
    ("", "a s\n", "wav.scp"),  # empty list
    ("a audio/a.wav\nb\n", "a s\nb s\n", "wav.scp:2"),  # malformed line
    ("a audio/a.wav\na audio/a.wav\n", "a s\n", "wav.scp:2"),  # duplicate id
    ("a audio/a.wav\nb audio/a.wav\n", "a s\n", "wav.scp:2"),  # not in utt2spk
    ("a audio/a.wav\nb sox x.flac -t wav - |\n", "a s\nb s\n", "wav.scp:2"),  # pipe
    ("a audio/a.wav\n/abs/b audio/a.wav\n", "a s\n/abs/b s\n", "wav.scp:2"),  # absolute id
    ("a audio/a.wav\nx/../b audio/a.wav\n", "a s\nx/../b s\n", "wav.scp:2"),  # '..' id
    ("a audio/a.wav\n", "a s\na t\n", "utt2spk:2"),  # duplicate in utt2spk
    ("a audio/a.wav\n", "a s extra\n", "utt2spk:1"),  # malformed utt2spk
    ("a audio/rate.wav\n", "a s\n", "wav.scp:1"),  # 8 kHz
    ("a audio/stereo.wav\n", "a s\n", "wav.scp:1"),  # two channels
    ("a audio/garbage.wav\n", "a s\n", "wav.scp:1"),  # not audio
])
def test_kaldi_errors(tmp_path: Path, scp: str, u2s: str, where: str) -> None:
    write_wav(tmp_path / "audio" / "a.wav", 1000)
    write_wav(tmp_path / "audio" / "rate.wav", 1000, sr=8000)
    write_wav(tmp_path / "audio" / "stereo.wav", 1000, channels=2)
    (tmp_path / "audio" / "garbage.wav").write_bytes(b"not a wav file at all")
    (tmp_path / "wav.scp").write_text(scp)
    (tmp_path / "utt2spk").write_text(u2s)
    _expect_error(tmp_path, str(tmp_path / where))


def test_error_names_the_audio_file(tmp_path: Path) -> None:
    write_wav(tmp_path / "audio" / "rate.wav", 1000, sr=8000)
    (tmp_path / "wav.scp").write_text("a audio/rate.wav\n")
    (tmp_path / "utt2spk").write_text("a s\n")
    _expect_error(tmp_path, "rate.wav", "8000")


def test_missing_utt2spk(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", 100)
    (tmp_path / "wav.scp").write_text("a a.wav\n")
    _expect_error(tmp_path, str(tmp_path / "utt2spk"), "not found")


def test_voxceleb_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _expect_error(tmp_path / "empty", str(tmp_path / "empty"), "no wav.scp")
    _expect_error(tmp_path / "absent", str(tmp_path / "absent"), "not found")
    write_wav(tmp_path / "rate" / "spk" / "v" / "u.wav", 100, sr=22050)
    _expect_error(tmp_path / "rate", "u.wav", "22050")
    write_wav(tmp_path / "flat" / "u.wav", 100)
    _expect_error(tmp_path / "flat", "u.wav")


def test_corpus_rejects_duplicate_ids(tmp_path: Path) -> None:
    u = Utterance("a", tmp_path / "a.wav", "s", 10)
    with pytest.raises(KdcacheError, match="duplicate"):
        Corpus(tmp_path, [u, u])


def test_a_corpus_holds_no_python_object_per_utterance(tmp_path: Path) -> None:
    """A forked DataLoader worker copies every page its garbage collector walks: a corpus of a million
    Utterance objects cost each worker its own ~1 GB. The columns leave nothing for the collector."""
    import gc

    n = 5000
    utts = [Utterance(f"spk{i % 7}/v/{i:05d}.wav", Path(f"/data/spk{i % 7}/v/{i:05d}.wav"), f"spk{i % 7}", 1000 + i)
            for i in range(n)]
    gc.collect()
    before = len(gc.get_objects())
    corpus = Corpus(tmp_path, utts)
    del utts
    gc.collect()
    assert len(gc.get_objects()) - before < 50 - n  # the Utterance values are gone; the corpus adds ~nothing
    assert len(corpus) == n and corpus[1234] == Utterance("spk2/v/01234.wav", Path("/data/spk2/v/01234.wav"),
                                                           "spk2", 2234)
    assert corpus.index("spk1/v/04999.wav") == 4999 and "spk1/v/05000.wav" not in corpus and 3 not in corpus
    assert corpus[-1].id == "spk1/v/04999.wav" and corpus.path(7) == Path("/data/spk0/v/00007.wav")
    with pytest.raises(IndexError):
        corpus[n]
    with pytest.raises(KdcacheError, match="no utterance 'x'"):
        corpus.index("x")
    unsorted = Corpus(tmp_path, [Utterance(i, Path(i), "s", 1) for i in ("b", "c", "a", "é")])
    assert [unsorted.index(i) for i in ("a", "b", "c", "é")] == [2, 0, 1, 3]
