"""kdcache --version, and one clear line when a native library cannot load (a broken install)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cli.main import main
from kdcache.environment import installed_version

REPO = Path(__file__).resolve().parents[1]


def test_version_names_every_package_and_the_device():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    import kdcache

    assert lines[0] == f"kdcache {kdcache.__version__}"
    for package in ("torch", "torchaudio", "zarr", "numpy"):
        assert f"{package} {installed_version(package)}" in lines
    assert lines[-1].startswith("device: CPU") or lines[-1].startswith("device: CUDA (")


def _run_with_broken_torchaudio(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # A torchaudio that fails the way PyPI's 2.11.1 does next to torch 2.11.0, shadowing the real one.
    fake = tmp_path / "fake" / "torchaudio"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise OSError("Could not load this library: /x/torchaudio/lib/libtorchaudio.so: '
        'libc10.so: cannot open shared object file")\n'
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), str(REPO)]))
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


def test_a_torchaudio_that_cannot_load_gives_one_line_with_versions_and_the_fix(tmp_path):
    done = _run_with_broken_torchaudio(tmp_path, "cache", "info", str(tmp_path / "none.zarr"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("kdcache: error: torchaudio cannot be loaded (Could not load this library")
    assert f"torch {installed_version('torch')}" in line and f"torchaudio {installed_version('torchaudio')}" in line
    assert "pip install -c constraints.txt" in line


def test_version_still_reports_when_torchaudio_cannot_load(tmp_path):
    done = _run_with_broken_torchaudio(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"torchaudio {installed_version('torchaudio')}" in done.stdout
    assert "device: unknown (torchaudio cannot be loaded" in done.stdout
