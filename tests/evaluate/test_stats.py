"""Student's t interval over seeds, against hand computation with the textbook t values."""

from __future__ import annotations

import math

import pytest

from kdcache.evaluate.stats import mean_ci, t_quantile


@pytest.mark.parametrize("df, table_value", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042)])
def test_t_quantile_matches_the_printed_table(df, table_value):
    assert t_quantile(0.975, df) == pytest.approx(table_value, abs=6e-4)


def test_interval_of_three_seeds_by_hand():
    values = [0.040, 0.030, 0.035]
    # mean 0.035; deviations +0.005, -0.005, 0 -> s = sqrt(0.00005 / 2) = 0.005; t(0.975, 2) = 4.3027
    mean, half = mean_ci(values)
    assert mean == pytest.approx(0.035)
    assert half == pytest.approx(4.3027 * 0.005 / math.sqrt(3), rel=1e-4)  # 0.012421


def test_one_seed_has_no_interval():
    assert mean_ci([0.02]) == (0.02, None)


def test_equal_seeds_have_a_zero_interval():
    mean, half = mean_ci([0.1, 0.1])
    assert mean == pytest.approx(0.1) and half == pytest.approx(0.0, abs=1e-15)
