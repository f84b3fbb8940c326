"""kdcache report over fake runs: rows, intervals, relative change, pictures, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from kdcache.errors import KdcacheError
from kdcache.report.build import build_report
from tests.report.helpers import write_run

SCORES = [(0.9, True), (0.8, True), (0.3, True), (0.5, False), (0.2, False), (0.1, False)]


@pytest.fixture
def trials(tmp_path):
    path = tmp_path / "trials.txt"
    path.write_text("1 a b\n0 a c\n")
    return path


def _seeds(tmp_path, trials, name, loss, eers, options=None):
    return [write_run(tmp_path / f"{name}-{seed}", loss=loss, seed=seed, eer=eer, min_dcf=0.5 + eer, trials=trials,
                      options=options, scores=SCORES,
                      log=[{"epoch": e, "loss": 3.0 - e, "ce": 2.0 - e / 2, "lr": 0.1, "seconds": 1.0} for e in (1, 2, 3)])
            for seed, eer in enumerate(eers)]


def test_rows_fold_seeds_with_t_intervals_and_the_change_against_ce(tmp_path, trials):
    teacher = write_run(tmp_path / "teacher", loss=None, seed=0, eer=0.021, min_dcf=0.4, trials=trials, scores=SCORES)
    ce = _seeds(tmp_path, trials, "ce", "ce", [0.040, 0.030, 0.035])
    dkd = _seeds(tmp_path, trials, "dkd", "dkd", [0.025, 0.020, 0.030], {"beta": 8.0, "temperature": 2.0})
    report = build_report([teacher, *ce, *dkd], tmp_path / "report")
    assert len(report.tables) == 1 and not report.skipped
    rows = {row.loss: row for row in report.tables[0].rows}
    assert [r.loss for r in report.tables[0].rows] == ["teacher", "ce", "dkd"]
    assert rows["ce"].seeds == [0, 1, 2] and rows["ce"].eer == pytest.approx(0.035)
    # s = 0.005 for both rows; t(0.975, 2) = 4.3027 from the table
    assert rows["ce"].eer_ci == pytest.approx(4.3027 * 0.005 / math.sqrt(3), rel=1e-4)
    assert rows["dkd"].eer_ci == pytest.approx(4.3027 * 0.005 / math.sqrt(3), rel=1e-4)
    assert rows["teacher"].eer_ci is None  # one seed
    # (0.025 - 0.035) / 0.035 = -28.57%
    assert rows["dkd"].eer_change_vs_ce == pytest.approx(-0.2857142857)
    assert rows["ce"].eer_change_vs_ce is None and rows["teacher"].eer_change_vs_ce is None
    assert rows["dkd"].settings == "alpha 1, beta 8, T 2"
    # the tiny x-vector: parameters counted from the model, FLOPs of a 200-frame crop
    assert rows["ce"].parameters > 0 and rows["ce"].flops_per_2s > 2 * 200 * 80 * 16
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| 3 | 3.50% ± 1.24% |" in md and "-28.6%" in md
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["tables"][0]["rows"][2]["eer_change_vs_ce"] == pytest.approx(-0.2857142857)
    for name in ("det_1.png", "training_1.png"):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"
    assert "det_1.png" in md


def test_settings_are_the_recorded_method_options_without_unset_ones(tmp_path, trials):
    """train-student records its method's options; None (resolved in the run) once showed as 'alpha None'."""
    options = {"loss_options": {"temperature": 2.0, "alpha": 1.0, "beta": 8.0, "kd_warmup_epochs": None,
                                "teacher_margin": None, "logit_stand": False}, "alpha": None, "kd_weight": None}
    plain = _seeds(tmp_path, trials, "dkd", "dkd", [0.02], options)
    stand = _seeds(tmp_path, trials, "dkd-ls", "dkd", [0.03],
                   {**options, "loss_options": {**options["loss_options"], "logit_stand": True}})
    report = build_report([*plain, *stand], tmp_path / "report")
    assert sorted(row.settings for row in report.tables[0].rows) == ["T 2, alpha 1, beta 8",
                                                                      "T 2, alpha 1, beta 8, logit_stand True"]


def test_different_trial_lists_make_separate_tables_that_say_why(tmp_path, trials):
    other = tmp_path / "other_trials.txt"
    other.write_text("1 x y\n0 x z\n")
    a = write_run(tmp_path / "a", loss="ce", seed=0, eer=0.03, min_dcf=0.5, trials=trials)
    b = write_run(tmp_path / "b", loss="ce", seed=1, eer=0.05, min_dcf=0.6, trials=other)
    report = build_report([a, b], tmp_path / "report")
    assert len(report.tables) == 2
    assert all(t.why.startswith("its own trial list") for t in report.tables)
    assert [len(t.rows[0].runs) for t in report.tables] == [1, 1]  # never one mixed row of two seeds


def test_different_training_corpora_make_separate_tables(tmp_path, trials):
    a = write_run(tmp_path / "a", loss="ce", seed=0, eer=0.03, min_dcf=0.5, trials=trials, data="/one")
    b = write_run(tmp_path / "b", loss="ce", seed=1, eer=0.05, min_dcf=0.6, trials=trials, data="/two")
    report = build_report([a, b], tmp_path / "report")
    assert len(report.tables) == 2
    assert all(t.why.startswith("its own training corpus") for t in report.tables)


def test_run_without_metrics_is_named_and_skipped(tmp_path, trials):
    good = write_run(tmp_path / "good", loss="ce", seed=0, eer=0.03, min_dcf=0.5, trials=trials)
    bad = write_run(tmp_path / "unfinished", loss="dkd", seed=0, eer=0, min_dcf=0, trials=trials, with_metrics=False)
    report = build_report([good, bad, tmp_path / "absent"], tmp_path / "report")
    assert len(report.skipped) == 2
    assert "unfinished: no metrics.json" in report.skipped[0]
    assert "absent: not a folder" in report.skipped[1]
    assert "unfinished" in (tmp_path / "report" / "report.md").read_text()


def test_nothing_to_report_is_one_line_error(tmp_path, trials):
    bad = write_run(tmp_path / "unfinished", loss="ce", seed=0, eer=0, min_dcf=0, trials=trials, with_metrics=False)
    with pytest.raises(KdcacheError, match="no run to report.*unfinished"):
        build_report([bad], tmp_path / "report")
    result = subprocess.run([sys.executable, "-m", "cli.main", "report", str(bad), "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("kdcache: error: no run to report")


def test_cache_with_saliency_gets_fbank_ig_and_integrated_pictures(tiny_corpus, tiny_teacher, tmp_path, trials):
    import numpy as np

    from kdcache.cache.reader import TeacherCache
    from kdcache.report.build import _saliency_rows
    from kdcache.teacher.build import BuildConfig, build_teacher_cache

    cache = tmp_path / "sal.zarr"
    build_teacher_cache(BuildConfig(
        data=str(tiny_corpus / "train"), teacher=str(tiny_teacher), out=str(cache), crops_per_utt=1, crop_seconds=1.0,
        saliency=True, ig_steps=4, ig_durations=(1.0, 0.5), shard_rows=32, chunk_rows=8, batch_size=8, num_workers=0,
        device="cpu", show_progress=False,
    ))
    rows = _saliency_rows(str(cache), str(tiny_corpus / "train"), 3)
    assert len(rows) == 3
    label, fbank, ig, integrated = rows[1]
    assert label.startswith("row 1 (") and fbank.shape == ig.shape == integrated.shape == (100, 80)
    np.testing.assert_allclose(ig, TeacherCache.open(cache).saliency([1])[0].mean(0), rtol=1e-6)
    run = write_run(tmp_path / "imlkd", loss="imlkd", seed=0, eer=0.1, min_dcf=0.9, trials=trials,
                    data=str(tiny_corpus / "train"), cache=str(cache))
    report = build_report([run], tmp_path / "report")
    assert (tmp_path / "report" / "saliency_1.png").read_bytes()[:4] == b"\x89PNG"
    assert "saliency_1.png" in report.markdown_path.read_text()
