"""Cache utterance ids are relative paths that cannot escape the corpus root; links out of it are refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import zarr

from kdcache.cache import CacheWriter, TeacherCache, verify_cache
from kdcache.cache.reader import unsafe_utterance_id
from kdcache.data.corpus import load_corpus
from kdcache.errors import IntegrityError, KdcacheError
from tests.cache.helpers import make_inputs, small_layout
from tests.data.wavs import write_wav
from tests.faults.conftest import one_line_error, run_cli

UNSAFE = ["../../etc/passwd", "id1/../../x.wav", "/etc/passwd", "C:/x.wav", "id1\\..\\x.wav", ""]


@pytest.mark.parametrize("utt", UNSAFE)
def test_unsafe_ids_are_named(utt):
    assert unsafe_utterance_id(utt)


@pytest.mark.parametrize("utt", ["id10001/1zcIwhmdeo4/00001.wav", "spk-utt1", "a/./b.wav", "x..y/z.wav"])
def test_ordinary_ids_are_safe(utt):
    assert unsafe_utterance_id(utt) is None


def plant_id(cache: Path, utt: str, index: int = 3) -> None:
    group = zarr.open_group(str(cache), mode="r+", use_consolidated=False)
    ids = group["utterances/id"][:]
    ids[index] = utt
    group["utterances/id"][:] = ids


@pytest.mark.parametrize("utt", ["../../../etc/passwd", "/etc/passwd"])
def test_a_cache_with_an_escaping_id_is_refused_by_reader_verify_and_train_student(
        fault_cache, tiny_corpus, tmp_path, utt):
    cache = tmp_path / "evil.zarr"
    shutil.copytree(fault_cache, cache)
    plant_id(cache, utt)
    with pytest.raises(IntegrityError, match="utterance id .* refusing the cache"):
        TeacherCache.open(cache).utterances()
    report = verify_cache(cache)
    assert any("utterances/id" in p and utt in p for p in report.problems), report.problems
    result = run_cli("train-student", "--cache", cache, "--data", tiny_corpus / "train", "--out", tmp_path / "s",
                     "--epochs", "1", "--num-workers", "0", "--device", "cpu")
    assert result.code == 1
    line = one_line_error(result)
    assert utt in line and ("escape" in line or "absolute" in line)


def test_the_writer_refuses_unsafe_ids(tmp_path):
    layout = small_layout()
    inputs = make_inputs(layout)
    inputs["utterance_ids"][0] = "../outside.wav"
    with pytest.raises(ValueError, match="escape the corpus root"):
        CacheWriter.create(tmp_path / "c.zarr", layout, **inputs)


def voxceleb_tree(root: Path) -> Path:
    write_wav(root / "id1" / "v1" / "00001.wav", 1600)
    write_wav(root / "id2" / "v1" / "00001.wav", 1600)
    return root


def test_links_inside_the_root_are_followed(tmp_path):
    root = voxceleb_tree(tmp_path / "vox")
    write_wav(root / ".store" / "a.wav", 800)  # hidden folders are not walked themselves
    os.symlink(root / ".store" / "a.wav", root / "id1" / "v1" / "00002.wav")
    os.symlink("../.store", root / "id1" / "v2")
    corpus = load_corpus(root)
    assert corpus.ids == ["id1/v1/00001.wav", "id1/v1/00002.wav", "id1/v2/a.wav", "id2/v1/00001.wav"]


def test_a_folder_linked_twice_is_refused(tmp_path):
    root = voxceleb_tree(tmp_path / "vox")
    os.symlink("v1", root / "id2" / "v2")  # the same audio under two ids
    with pytest.raises(KdcacheError, match="again"):
        load_corpus(root)


def test_a_file_link_out_of_the_root_is_refused(tmp_path):
    root = voxceleb_tree(tmp_path / "vox")
    write_wav(tmp_path / "secret" / "s.wav", 800)
    os.symlink(tmp_path / "secret" / "s.wav", root / "id1" / "v1" / "00002.wav")
    with pytest.raises(KdcacheError, match=r"00002.wav: links out of the corpus root .*wav.scp"):
        load_corpus(root)


def test_a_folder_link_out_of_the_root_is_refused(tmp_path):
    root = voxceleb_tree(tmp_path / "vox")
    write_wav(tmp_path / "other" / "v9" / "x.wav", 800)
    os.symlink(tmp_path / "other", root / "id3")
    with pytest.raises(KdcacheError, match=r"id3: links out of the corpus root"):
        load_corpus(root)


def test_a_link_loop_is_refused_instead_of_walking_forever(tmp_path):
    root = voxceleb_tree(tmp_path / "vox")
    os.symlink("../..", root / "id1" / "v1" / "loop")
    with pytest.raises(KdcacheError, match="link loop"):
        load_corpus(root)


def test_training_refuses_a_corpus_with_a_link_out_of_the_root(fault_cache, tiny_corpus, tmp_path):
    # A VoxCeleb-tree copy of the tiny training corpus (ids = paths under the root), one file swapped for
    # a link to a file outside the root.
    root = tmp_path / "vox"
    shutil.copytree(tiny_corpus / "wav", root)
    victim = sorted(root.rglob("*.wav"))[0]
    outside = tmp_path / "outside.wav"
    shutil.copy(victim, outside)
    victim.unlink()
    os.symlink(outside, victim)
    result = run_cli("train-student", "--cache", fault_cache, "--data", root, "--out", tmp_path / "s",
                     "--epochs", "1", "--num-workers", "0", "--device", "cpu")
    assert result.code == 2
    assert "links out of the corpus root" in one_line_error(result)
