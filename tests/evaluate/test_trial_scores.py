"""Per-trial scores saved beside metrics.json in WeSpeaker's score format."""

from __future__ import annotations

import json

import numpy as np

from kdcache.data.trials import read_trials
from kdcache.evaluate.metrics import compute_eer, compute_min_dcf
from kdcache.evaluate.verification import EvalConfig, evaluate_model, scores_name, write_metrics


def test_scores_file_lists_every_trial_and_reproduces_the_metrics(tiny_corpus, tiny_teacher, tmp_path):
    trials_path = tiny_corpus / "test" / "trials.txt"
    metrics = evaluate_model(EvalConfig(model=str(tiny_teacher), data=str(tiny_corpus / "test"),
                                        trials=str(trials_path), show_progress=False))
    metrics["loss"] = "ce"  # train-student adds keys before writing; the scores must survive that
    write_metrics(metrics, tmp_path / "metrics.json")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["scores"] == "scores.txt" and saved["loss"] == "ce"
    rows = [line.split() for line in (tmp_path / "scores.txt").read_text().splitlines()]
    trials = read_trials(trials_path)
    assert [(r[0], r[1], r[3]) for r in rows] == [
        (t.enroll, t.test, "target" if t.target else "nontarget") for t in trials
    ]
    scores = np.array([float(r[2]) for r in rows])
    labels = np.array([r[3] == "target" for r in rows])
    assert abs(compute_eer(scores, labels) - saved["eer"]) < 1e-6
    assert abs(compute_min_dcf(scores, labels) - saved["min_dcf"]) < 1e-4


def test_scores_name_beside_other_metrics_files():
    assert scores_name("run/metrics.json") == "scores.txt"
    assert scores_name("run/teacher_eval.json") == "teacher_eval.scores.txt"


def test_plain_dict_metrics_write_no_scores(tmp_path):
    write_metrics({"eer": 0.1}, tmp_path / "metrics.json")
    assert not (tmp_path / "scores.txt").exists()
    assert "scores" not in json.loads((tmp_path / "metrics.json").read_text())
