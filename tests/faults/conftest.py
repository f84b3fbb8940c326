"""Fixtures of the fault and bad-input tests: one tiny cache, a CLI runner, a server that can fail."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdcache.teacher.build import BuildConfig, build_teacher_cache

REPO = Path(__file__).resolve().parents[2]
# 32 utterances x 2 crops = 64 rows in 4 shards of 16 rows (chunks of 8).
BUILD = dict(crops_per_utt=2, crop_seconds=1.0, shard_rows=16, chunk_rows=8, batch_size=16, num_workers=0,
             device="cpu", show_progress=False)
BUILD_ARGS = ["--crops-per-utt", "2", "--crop-seconds", "1.0", "--shard-rows", "16", "--chunk-rows", "8",
              "--batch-size", "16", "--num-workers", "0", "--device", "cpu"]
STUDENT_ARGS = {"hid_dim": 32, "stats_dim": 48, "embed_dim": 24}


def build_cache(corpus: Path, teacher: Path, out: Path, **overrides) -> Path:
    build_teacher_cache(BuildConfig(data=str(corpus / "train"), teacher=str(teacher), out=str(out),
                                    **(BUILD | overrides)))
    return out


@pytest.fixture(scope="session")
def fault_cache(tiny_corpus, tiny_teacher, tmp_path_factory) -> Path:
    """A complete dense cache of the tiny corpus (read-only: tests that damage it copy it first)."""
    return build_cache(tiny_corpus, tiny_teacher, tmp_path_factory.mktemp("fault_cache") / "cache.zarr")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> Result:
    """Run the kdcache CLI in this process (click's runner): exit status, stdout and stderr."""
    from cli.main import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an uncaught exception is a bug: show it
    return Result(result.exit_code, result.stdout, result.stderr)


def run_cli_process(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m cli.main ARGS`` in a subprocess (what a user sees, tracebacks included)."""
    return subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=REPO, timeout=timeout)


def one_line_error(result: Result) -> str:
    """The error line of a failed command, asserting there is exactly one and no traceback.

    Library errors print ``kdcache: error: ...``; click's own option errors print a usage line, a hint and
    ``Error: ...`` (exit 2), the usual convention of click programs.
    """
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(("kdcache: error:", "Error:"))]
    assert len(lines) == 1, result.stderr
    return lines[0]
