"""kdcache demo: refuses a foreign OUT, skips complete stages, and resumes a killed run to the same table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdcache.errors import KdcacheError
from kdcache.workflows.demo import DEMO_STUDENTS, MARKER, DemoSettings, run_demo

# The demo's chain at test size: 8 speakers x 4 utterances, 4 crops each (128 cache rows, 2 batches).
TINY = DemoSettings(
    speakers=8, utterances_per_speaker=4, seconds=1.5, test_speakers=4,
    teacher_args={"m_channels": 2, "embed_dim": 16}, teacher_epochs=2, teacher_batch=8, crops_per_utt=4,
    student_args={"hid_dim": 16, "stats_dim": 32, "embed_dim": 16}, student_epochs=2, student_batch=64,
    students=DEMO_STUDENTS, seed=3,
)
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))


def _table(out: Path) -> list[tuple]:
    data = json.loads((out / "report" / "report.json").read_text())
    return [(r["model"], r["loss"], r["settings"], r["eer"], r["min_dcf"]) for t in data["tables"] for r in t["rows"]]


def test_out_holding_other_files_is_refused_and_named(tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(KdcacheError, match=r"out: holds something other than a kdcache demo \(data, notes.txt\)"):
        run_demo(out, settings=TINY, say=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == ["data", "notes.txt"]  # nothing written
    result = subprocess.run([sys.executable, "-m", "cli.main", "demo", str(out), "--fast"],
                            capture_output=True, text=True, env=ENV)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data, notes.txt" in result.stderr


def test_out_of_a_demo_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"preset": "--fast", "settings": DemoSettings.fast().to_json()}))
    with pytest.raises(KdcacheError, match=r"other settings \(--fast, this run: full\)"):
        run_demo(out, say=lambda _: None)


def test_a_later_stage_without_its_inputs_names_the_stage_to_run(tmp_path):
    with pytest.raises(KdcacheError, match=r"stage 4 \(cache\) needs stage 1 \(corpus\).*--stage 1"):
        run_demo(tmp_path / "out", settings=TINY, stage=4, say=lambda _: None)


def test_settings_round_trip_through_the_marker():
    assert DemoSettings.from_json(json.loads(json.dumps(TINY.to_json()))) == TINY


@pytest.mark.timeout(600)  # 17 s on a quiet machine; 157 s measured with the 2 cores loaded 4x by other jobs
def test_killed_run_resumes_to_the_same_table(tmp_path):
    lines: list[str] = []
    reference = tmp_path / "reference"
    run_demo(reference, settings=TINY, say=lines.append)
    assert [line for line in lines if line.startswith("[stage")] == [
        f"[stage {n}/6] {name}" for n, name in enumerate(("corpus", "teacher", "evaluate", "cache", "students", "report"), 1)
    ]
    expected = _table(reference)
    assert [row[1] for row in expected] == ["teacher", "ce", "dkd", "kd"]

    # Same run in a child process, killed (SIGKILL) once the kd student has checkpointed its first epoch.
    out = tmp_path / "killed"
    code = ("import json, sys; from kdcache.workflows.demo import DemoSettings, run_demo; "
            "run_demo(sys.argv[1], settings=DemoSettings.from_json(json.loads(sys.argv[2])))")
    child = subprocess.Popen([sys.executable, "-c", code, str(out), json.dumps(TINY.to_json())], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "students" / "kd" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 200
    while not checkpoint.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert checkpoint.exists() and not (out / "students" / "kd" / "metrics.json").exists()
    assert not (out / "report").exists()

    lines.clear()
    run_demo(out, settings=TINY, say=lines.append)
    assert "[stage 4/6] cache: complete, skipped" in lines
    assert "  student ce: done, skipped" in lines
    assert _table(out) == expected

    lines.clear()
    run_demo(out, settings=TINY, say=lines.append)  # a third run has nothing left to do
    assert all(line.endswith("complete, skipped") for line in lines), lines
