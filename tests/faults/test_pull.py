"""`kdcache cache pull`: copies over HTTP and from paths, resumes after the server dies, verifies the copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import kdcache.cache.pull as pull_module
from kdcache.cache import TeacherCache
from kdcache.cache.pull import STATE_FILE, pull_cache
from kdcache.errors import KdcacheError
from tests.cache.helpers import set_done
from tests.faults.conftest import one_line_error, run_cli
from tests.faults.flaky_server import flaky_server

ARRAYS = ["rows/utterance", "rows/start", "rows/label", "rows/aug_seed", "rows/input_crc", "teacher/logits",
          "teacher/embedding", "teacher/embedding_norm", "utterances/id", "speakers", "progress/done"]


def assert_same_cache(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    for name in ARRAYS:
        np.testing.assert_array_equal(ga[name][:], gb[name][:], err_msg=name)
    assert ga.attrs["kdcache"] == gb.attrs["kdcache"]


def data_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def test_pull_over_http_copies_every_file_and_verifies(fault_cache, tmp_path):
    with flaky_server(fault_cache.parent) as server:
        url = f"{server.url}/{fault_cache.name}"
        result = run_cli("cache", "pull", url, tmp_path / "copy.zarr", "--no-progress")
        assert result.code == 0, result.stderr
        assert "shards verified: ok" in result.stdout and "0 already complete" in result.stdout
        assert data_files(tmp_path / "copy.zarr") == data_files(fault_cache)  # byte for byte
        assert not (tmp_path / "copy.zarr" / STATE_FILE).exists()
        # A second pull fetches only the metadata and progress entries again.
        again = pull_cache(url, tmp_path / "copy.zarr")
        assert again.files_skipped > 0 and again.damage == []
        assert again.files_copied == again.files_total - again.files_skipped
    assert_same_cache(tmp_path / "copy.zarr", fault_cache)
    info = json.loads(run_cli("cache", "info", "--json", tmp_path / "copy.zarr").stdout)
    assert info["fingerprint"] == json.loads(run_cli("cache", "info", "--json", fault_cache).stdout)["fingerprint"]


def test_pull_from_a_path_and_a_file_url(fault_cache, tmp_path):
    assert run_cli("cache", "pull", fault_cache, tmp_path / "a.zarr", "--no-progress").code == 0
    assert run_cli("cache", "pull", f"file://{fault_cache}", tmp_path / "b.zarr", "--no-progress").code == 0
    assert_same_cache(tmp_path / "a.zarr", fault_cache)
    assert_same_cache(tmp_path / "b.zarr", fault_cache)


def test_server_dying_mid_pull_is_one_line_and_a_rerun_resumes(fault_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(pull_module, "PIECE_BYTES", 512)  # several ranged requests per shard file
    dest = tmp_path / "copy.zarr"
    with flaky_server(fault_cache.parent) as server:
        url = f"{server.url}/{fault_cache.name}"
        server.fail_after(20)  # the server dies after 20 more requests
        result = run_cli("cache", "pull", url, dest, "--no-progress", "--workers", "2")
        assert result.code == 2
        line = one_line_error(result)
        assert url in line and "rerun the pull to resume" in line
        assert not (dest / "zarr.json").exists()  # an unfinished copy does not open as a cache
        with pytest.raises(KdcacheError, match="no zarr.json"):
            TeacherCache.open(dest)
        partial = [p for p in dest.rglob("*.part")]
        kept = [p for p in dest.rglob("*") if p.is_file() and not p.name.endswith(".part")]
        assert kept, "some files were complete before the server died"

        server.heal()
        report = pull_cache(url, dest, workers=2)
        assert report.damage == [] and report.files_skipped >= 1  # complete files are not fetched again
    assert data_files(dest) == data_files(fault_cache)
    assert not list(dest.rglob("*.part")), partial


def test_a_damaged_source_fails_naming_the_shard_and_a_fixed_source_pulls_again(fault_cache, tmp_path):
    source = tmp_path / "src.zarr"
    shutil.copytree(fault_cache, source)
    shard = source / "teacher" / "logits" / "c" / "2" / "0"
    good = shard.read_bytes()
    bad = bytearray(good)
    bad[40] ^= 0x01
    shard.write_bytes(bytes(bad))
    dest = tmp_path / "copy.zarr"
    result = run_cli("cache", "pull", source, dest, "--no-progress")
    assert result.code == 1
    assert "teacher/logits shard 2" in one_line_error(result)
    assert "problem: teacher/logits: shard 2 (rows 32-47)" in result.stderr
    assert not (dest / "teacher" / "logits" / "c" / "2" / "0").exists()  # removed: a rerun fetches it
    shard.write_bytes(good)
    result = run_cli("cache", "pull", source, dest, "--no-progress")
    assert result.code == 0, result.stderr
    assert_same_cache(dest, fault_cache)


def test_an_incomplete_source_gives_its_finished_shards_then_the_rest(fault_cache, tmp_path):
    source = tmp_path / "src.zarr"
    shutil.copytree(fault_cache, source)
    set_done(source, 1, False)
    dest = tmp_path / "copy.zarr"
    result = run_cli("cache", "pull", source, dest, "--no-progress")
    assert result.code == 0, result.stderr
    assert "1 unfinished shard(s)" in result.stdout
    assert not (dest / "teacher" / "logits" / "c" / "1").exists()  # a shard in progress is not copied
    assert TeacherCache.open(dest).missing_shards() == [1]
    set_done(source, 1, True)
    report = pull_cache(source, dest)
    assert report.damage == [] and report.shards_not_done == []
    assert_same_cache(dest, fault_cache)


def test_pull_refuses_a_destination_holding_something_else(fault_cache, tmp_path):
    other = tmp_path / "other.zarr"
    shutil.copytree(fault_cache, other)
    meta = json.loads((other / "zarr.json").read_text())
    meta["attributes"]["kdcache"]["created"] = "2000-01-01T00:00:00+00:00"  # a rebuild of the same cache
    (other / "zarr.json").write_text(json.dumps(meta))
    cases = {
        other: "holds another cache",
        tmp_path / "notes": "not empty and is not a kdcache cache",
        fault_cache: "is the source itself",
    }
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep")
    for dest, message in cases.items():
        result = run_cli("cache", "pull", fault_cache, dest, "--no-progress")
        assert result.code == 2 and message in one_line_error(result), result.stderr
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep"


def test_a_server_without_range_support_is_named(fault_cache, tmp_path, monkeypatch):
    """Python's http.server ignores Range: whole small files still copy, a ranged piece is refused clearly."""
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Plain(SimpleHTTPRequestHandler):
        disable_nagle_algorithm = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(fault_cache.parent), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{fault_cache.name}"
        report = pull_cache(url, tmp_path / "whole.zarr")  # every file fits one request
        assert report.damage == []
        monkeypatch.setattr(pull_module, "PIECE_BYTES", 512)
        with pytest.raises(KdcacheError, match="without HTTP Range support"):
            pull_cache(url, tmp_path / "pieces.zarr")
    finally:
        server.shutdown()
        server.server_close()
