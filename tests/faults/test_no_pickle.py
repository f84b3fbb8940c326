"""Nothing a cache (or a training folder) carries is executed: planted pickles are refused or ignored.

Each payload, if it were unpickled, would create a marker file; every test checks that it does not.
"""

from __future__ import annotations

import builtins
import json
import pickle
import shutil
from pathlib import Path

import numcodecs
import numcodecs.abc
import numcodecs.registry
import numpy as np
import pytest
import zarr
import zarr.registry
from zarr.codecs.numcodecs._codecs import _NumcodecsArrayBytesCodec

from kdcache.cache import TeacherCache, cache_info, verify_cache
from kdcache.cache.pull import pull_cache
from kdcache.errors import IntegrityError
from tests.faults.conftest import STUDENT_ARGS, one_line_error, run_cli


class _Payload:
    """Unpickling this calls open(marker, "w"): harmless, and visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def payload(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def test_the_payload_does_execute_when_unpickled(tmp_path):
    """Control: the payload is live (so the tests below are not vacuous)."""
    pickle.loads(payload(tmp_path / "ran")).close()
    assert (tmp_path / "ran").exists()


def test_a_pickle_in_place_of_a_shard_fails_its_checksum(fault_cache, tmp_path):
    cache = tmp_path / "c.zarr"
    shutil.copytree(fault_cache, cache)
    marker = tmp_path / "executed"
    (cache / "teacher" / "logits" / "c" / "1" / "0").write_bytes(payload(marker))
    c = TeacherCache.open(cache)
    c.logits(np.arange(0, 16))  # other shards still read
    with pytest.raises(IntegrityError, match=r"teacher/logits shard 1 \(rows 16-31.*checksum"):
        c.logits(np.arange(16, 32))
    assert any("teacher/logits: shard 1" in p for p in verify_cache(cache).problems)
    assert not marker.exists()


class _UnsafePickle(numcodecs.abc.Codec):
    """A codec that unpickles chunks, as numcodecs' Pickle did before 0.16 disabled its decode: what any
    installed package could register with zarr."""

    codec_id = "test_unsafe_pickle"

    def encode(self, buf):
        return pickle.dumps(np.asarray(buf))

    def decode(self, buf, out=None):
        return np.asarray(pickle.loads(bytes(buf)))


class _UnsafePickleV3(_NumcodecsArrayBytesCodec, codec_name="test_unsafe_pickle"):
    """Its zarr v3 wrapper (zarr names numcodecs-backed codecs 'numcodecs.<id>')."""


@pytest.fixture()
def pickle_codec_registered():
    key = "numcodecs.test_unsafe_pickle"
    numcodecs.register_codec(_UnsafePickle)
    zarr.registry.register_codec(key, _UnsafePickleV3)
    try:
        yield key
    finally:
        vars(zarr.registry)["__codec_registries"].pop(key, None)
        numcodecs.registry.codec_registry.pop(_UnsafePickle.codec_id, None)


def test_an_array_that_declares_an_unpickling_codec_is_refused_before_decoding(
        fault_cache, tiny_corpus, tmp_path, pickle_codec_registered):
    cache = tmp_path / "c.zarr"
    shutil.copytree(fault_cache, cache)
    marker = tmp_path / "executed"
    codecs = [{"name": pickle_codec_registered, "configuration": {}}]
    meta_path = cache / "teacher" / "logits" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"] = codecs
    meta_path.write_text(json.dumps(meta))
    root = json.loads((cache / "zarr.json").read_text())
    root["consolidated_metadata"]["metadata"]["teacher/logits"]["codecs"] = codecs
    (cache / "zarr.json").write_text(json.dumps(root))
    for s in range(4):
        (cache / "teacher" / "logits" / "c" / str(s) / "0").write_bytes(payload(marker))

    # Control: plain zarr decodes with the declared codec, and so runs the payload.
    with pytest.raises(Exception):
        zarr.open_array(str(cache / "teacher" / "logits"), mode="r")[0:16]
    assert marker.exists()
    marker.unlink()

    with pytest.raises(IntegrityError, match="declares codec.*refusing to decode"):
        TeacherCache.open(cache).logits(np.arange(8))
    assert any("teacher/logits: refused" in p for p in verify_cache(cache).problems)
    result = run_cli("train-student", "--cache", cache, "--data", tiny_corpus / "train", "--out", tmp_path / "s",
                     "--epochs", "1", "--batch-size", "16", "--num-workers", "0", "--device", "cpu")
    assert result.code == 1 and "refusing to decode" in one_line_error(result)
    assert not marker.exists()


def test_pickle_files_planted_in_a_cache_are_never_read(fault_cache, tiny_corpus, tmp_path):
    cache = tmp_path / "c.zarr"
    shutil.copytree(fault_cache, cache)
    marker = tmp_path / "executed"
    for rel in ("model.pt", "teacher.pkl", "teacher/logits/c/0/0.pkl", "teacher/state.pt", "checkpoints/last.pt"):
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        (cache / rel).write_bytes(payload(marker))
    # JSON metadata can only hold data: a pickle stored there is a string nobody unpickles.
    meta = json.loads((cache / "zarr.json").read_text())
    meta["attributes"]["notes"] = {"py/reduce": payload(marker).hex()}
    (cache / "zarr.json").write_text(json.dumps(meta))

    assert verify_cache(cache).ok
    assert cache_info(cache)["complete"]
    pull_cache(str(cache), tmp_path / "copy.zarr")
    assert not (tmp_path / "copy.zarr" / "model.pt").exists()  # only the cache's own files are copied
    result = run_cli("train-student", "--cache", cache, "--data", tiny_corpus / "train", "--out", tmp_path / "s",
                     "--student", "xvector", "--model-args", json.dumps(STUDENT_ARGS), "--epochs", "1",
                     "--batch-size", "16", "--num-workers", "0", "--device", "cpu")
    assert result.code == 0, result.stderr
    assert not marker.exists()


def test_a_malicious_training_checkpoint_is_refused_on_resume(fault_cache, tiny_corpus, tmp_path):
    out = tmp_path / "s"
    (out / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "executed"
    (out / "checkpoints" / "last.pt").write_bytes(payload(marker))
    result = run_cli("train-student", "--cache", fault_cache, "--data", tiny_corpus / "train", "--out", out,
                     "--student", "xvector", "--model-args", json.dumps(STUDENT_ARGS), "--epochs", "1",
                     "--batch-size", "16", "--num-workers", "0", "--device", "cpu", "--resume")
    assert result.code == 2
    assert "unreadable training checkpoint" in one_line_error(result)
    assert not marker.exists()
