"""Adding a method is one file: the example of docs/extending.md, saved as a module outside the package
and named in KDCACHE_METHODS, trains a student through the CLI with no other code changed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LEGACY = ROOT / "tests" / "fixtures" / "legacy"


def example_source() -> str:
    text = (ROOT / "docs" / "extending.md").read_text()
    return re.search(r"<!-- example -->\n```python\n(.*?)```\n<!-- /example -->", text, re.S).group(1)


@pytest.fixture(scope="module")
def legacy_corpus(tmp_path_factory) -> Path:
    sys.path.insert(0, str(LEGACY))
    try:
        import make_legacy
    finally:
        sys.path.remove(str(LEGACY))
    return make_legacy.make_corpus(tmp_path_factory.mktemp("legacy") / "corpus")


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_a_method_in_a_temporary_module_trains_a_student_via_the_cli(legacy_corpus, tmp_path):
    module_dir = tmp_path / "plugins"
    module_dir.mkdir()
    (module_dir / "toy_kd_method.py").write_text(example_source())
    env = dict(os.environ, OMP_NUM_THREADS="1", KDCACHE_METHODS="toy_kd_method",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(module_dir)]))
    cache = tmp_path / "cache.zarr"
    shutil.copytree(LEGACY / "cache.zarr", cache)

    help_text = cli("train-student", "--help", env=env).stdout
    assert "cosine_match" in help_text and "weight w of the cosine term" in help_text
    info = cli("cache", "info", str(cache), "--json", env=env)
    assert json.loads(info.stdout)["methods"]["cosine_match"] == ""

    out = tmp_path / "student"
    result = cli("train-student", "--cache", str(cache), "--data", str(legacy_corpus / "train"), "--student", "xvector",
                 "--model-args", json.dumps({"hid_dim": 16, "stats_dim": 24, "embed_dim": 12}),
                 "--loss", "cosine_match", "--loss-args", '{"weight": 4}', "--epochs", "2", "--batch-size", "8",
                 "--num-workers", "0", "--device", "cpu", "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(r["cos"] > 0 and r["loss"] == pytest.approx(r["ce"] + r["cos"]) for r in log)
    config = json.loads((out / "config.json").read_text())
    assert config["extra"]["training"]["loss_options"] == {"weight": 4.0}
    import torch

    state = torch.load(out / "method.pt", weights_only=True)
    assert set(state) == {"log_tau"} and state["log_tau"].item() != 0.0  # the learnable part trained

    bad = cli("train-student", "--cache", str(cache), "--data", str(legacy_corpus / "train"), "--loss",
              "cosine_match", "--loss-args", '{"weight": -1}', "--out", str(tmp_path / "bad"), env=env)
    assert bad.returncode == 2 and "--loss-args weight must be a non-negative number" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_without_the_module_the_method_is_unknown(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("KDCACHE_METHODS", None)
    result = cli("train-student", "--cache", "c", "--data", "d", "--loss", "cosine_match", "--out", str(tmp_path / "s"),
                 env=env)
    assert result.returncode == 2 and "cosine_match" in result.stderr
