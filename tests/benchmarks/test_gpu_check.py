"""benchmarks/gpu_check.sh runs on a machine without CUDA, with every GPU part skipped (and says so)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the check is the real thing: run benchmarks/gpu_check.sh")
def test_gpu_check_runs_on_cpu_with_the_gpu_parts_skipped(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path))
    proc = subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                          timeout=200, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "cuda: False" in proc.stdout
    assert "4 skipped" in proc.stdout and "needs a CUDA GPU" in proc.stdout
    assert "GPU measurements are skipped" in proc.stdout
    doc = json.loads((tmp_path / "gpu.quick.json").read_text())
    assert doc["skipped"] == "CUDA not available" and doc["machine"]["cuda"] is None
