"""Smoke tests of benchmarks/: the cheap scripts run end to end on tiny sizes and write their JSON, and the
reader fast paths the benchmarks measure return exactly what plain numpy gives. (The full measurements
are benchmarks/*.py --quick: minutes, not a test.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"


def _run(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "results"
    cmd = [sys.executable, str(BENCH / script), "--out", str(out), "--workdir", str(tmp_path / "work"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "|" in proc.stdout  # a table was printed
    files = list(out.glob("*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["settings"]["torch_threads"] == 1
    assert doc["machine"]["cpu_count"] >= 1
    return doc


def test_common_helpers(capsys):
    sys.path.insert(0, str(BENCH))
    try:
        import common as C
    finally:
        sys.path.remove(str(BENCH))
    calls = []
    times = C.interleaved({"a": lambda: calls.append("a"), "b": lambda: 0.5}, repeats=3, warmup=1)
    assert calls == ["a"] * 4 and times["b"] == [0.5, 0.5, 0.5] and len(times["a"]) == 3
    assert C.verdict(1.04, "<= 1.05") == "met" and C.verdict(0.8, ">= 0.90") == "MISSED"
    text = C.print_table("t", ["x", "y"], [["a", 1.23456], ["b", 12345678.0]])
    assert "| a " in text and "1.23" in text and capsys.readouterr().out


def test_losses_benchmark_tiny(tmp_path):
    doc = _run("losses.py", tmp_path, "--batch-size", "16", "--classes", "200", "--repeats", "1")
    assert doc["goals"][0]["measure"].startswith("class_level_loss")
    assert doc["values"]["class_rel_error_vs_float64"] < 1e-4


def test_storage_benchmark_tiny(tmp_path):
    doc = _run("storage.py", tmp_path, "--rows", "128", "--repeats", "1")
    modes = doc["modes"]
    assert modes["dense"]["bytes_per_row"] > modes["uint8"]["bytes_per_row"] > modes["factorized"]["bytes_per_row"]
    assert modes["factorized"]["kl"]["T=4"]["max"] < 1e-6


def test_reader_benchmark_tiny(tmp_path):
    doc = _run("reader.py", tmp_path, "--rows", "512", "--batch-size", "64", "--repeats", "1", "--quick")
    assert {"local block f16 1 proc", "local random f16 1 proc", "http block f16 1 proc"} <= set(doc["rows_per_s"])


def test_reader_fast_paths_are_exact(tmp_path):
    """The scatter assembly (shuffled block batches) and the torch float16 -> float32 cast equal numpy."""
    sys.path.insert(0, str(BENCH))
    try:
        import fixtures as F
    finally:
        sys.path.remove(str(BENCH))
    from kdcache.cache import schema as sc
    from kdcache.cache.reader import TeacherCache, as_dtype
    from kdcache.cache.sampler import BlockSampler

    data = F.make_corpus(tmp_path / "corpus", speakers=4, utterances_per_speaker=2)
    cache = TeacherCache.open(F.write_cache(tmp_path / "c.zarr", data, F.CacheSpec(num_classes=300, embed_dim=16,
                                                                                  crops_per_utt=40, chunk_rows=16)))
    whole = cache.read([sc.LOGITS], slice(None))[sc.LOGITS]
    for rows in BlockSampler(len(cache), 64, block_rows=16, seed=3):
        got = cache.read([sc.LOGITS], rows)[sc.LOGITS]
        np.testing.assert_array_equal(got, whole[rows])
        f32 = cache.logits(rows)
        assert f32.dtype == np.float32
        np.testing.assert_array_equal(f32, whole[rows].astype(np.float32))
    dup = np.array([5, 3, 5, 40, 3])
    np.testing.assert_array_equal(cache.read([sc.LOGITS], dup)[sc.LOGITS], whole[dup])
    x = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float16)
    x[0, :3] = [np.nan, np.inf, -0.0]
    np.testing.assert_array_equal(as_dtype(x, np.float32), x.astype(np.float32))
    assert as_dtype(x, np.float16) is x


@pytest.mark.parametrize("script", ["train_step.py", "build.py", "reader.py", "storage.py", "losses.py", "memory.py"])
def test_every_benchmark_has_quick_and_writes_json(script):
    """Static: each script parses the shared options (--quick, --repeats, --threads, --out) and writes JSON
    (running the heavy ones is the benchmark itself, not a test)."""
    text = (BENCH / script).read_text()
    assert "C.base_parser(" in text and "C.write_json(" in text and "C.set_threads(" in text


def test_scale_benchmark_tiny(tmp_path):
    doc = _run("scale.py", tmp_path, "--sizes", "640,1280", "--modes", "factorized", "--batches", "2",
               "--repeats", "1", "--steps", "2")
    res = doc["results"]["factorized"]
    assert set(res) == {"640", "1280"}
    for n, r in res.items():
        assert r["verify_rows_per_s"] > 0 and r["reader_rows_per_s"] > 0 and r["bytes"] > 0
        assert r["train"]["batches"] == 2 and r["train"]["main_kb"] > 0  # train-student cut to 2 steps
    assert res["1280"]["bytes"] > res["640"]["bytes"]
    assert any(g["measure"] == "reader rows/s" for g in doc["goals"])
