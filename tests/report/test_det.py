"""DET points and their normal-deviate axes, against rates counted by hand."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from kdcache.evaluate.compare import read_scores
from kdcache.report.figures import det_points, plot_det, probit

SCORES = [0.1, 0.4, 0.35, 0.8, 0.7, 0.2]
LABELS = [False, False, True, True, True, False]  # targets 0.35, 0.7, 0.8; non-targets 0.1, 0.2, 0.4


def test_det_points_equal_hand_counted_miss_and_false_alarm_rates():
    miss, fa = det_points(np.array(SCORES), np.array(LABELS))
    # accept score >= threshold, thresholds 0.1, 0.2, 0.35, 0.4, 0.7, 0.8, +inf:
    # misses (targets below): 0, 0, 0, 1 (0.35), 1, 2 (0.35, 0.7), 3
    # false alarms (non-targets at or above): 3, 2 (0.2, 0.4), 1 (0.4), 1, 0, 0, 0
    assert miss.tolist() == pytest.approx([0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert fa.tolist() == pytest.approx([1, 2 / 3, 1 / 3, 1 / 3, 0, 0, 0])


def test_probit_axes_are_normal_deviates():
    assert probit(0.5) == pytest.approx(0.0)
    assert probit(0.1) == pytest.approx(-1.2815516, abs=1e-6)  # the printed z table value
    assert probit(np.array([1 / 3]))[0] == pytest.approx(NormalDist().inv_cdf(1 / 3))
    assert np.isfinite(probit(np.array([0.0, 1.0]))).all()  # 0 and 1 stay on the plot


def test_scores_file_round_trip_and_plot(tmp_path):
    path = tmp_path / "scores.txt"
    path.write_text("".join(f"e t{i} {s} {'target' if y else 'nontarget'}\n" for i, (s, y) in enumerate(zip(SCORES, LABELS))))
    trials = read_scores(path)  # the one WeSpeaker score-file reader (kdcache.evaluate.compare)
    scores, labels = trials.scores, trials.labels
    assert scores.tolist() == SCORES and labels.tolist() == LABELS
    png = plot_det([("system", scores, labels), ("other", -scores, labels)], tmp_path / "det.png", "DET")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
