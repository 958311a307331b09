"""Statistics on data whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from knowpack.report.stats import mcnemar_exact, paired_bootstrap, t_interval


def test_t_interval_matches_hand_computation():
    # mean 2, sd 1, n 3 -> half width = t(0.975, 2) * 1/sqrt(3) = 4.302653 / 1.732051 = 2.484138
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.mean == pytest.approx(2.0)
    assert iv.high - iv.mean == pytest.approx(2.484138, abs=1e-5)
    assert iv.mean - iv.low == pytest.approx(2.484138, abs=1e-5)
    assert iv.n == 3


def test_t_interval_edge_cases():
    one = t_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.low) and math.isnan(one.high)
    same = t_interval([0.3, 0.3, 0.3])
    assert same.low == pytest.approx(0.3) and same.high == pytest.approx(0.3)
    assert t_interval([float("nan"), 1.0, 3.0]).n == 2
    assert t_interval([]).n == 0


def test_mcnemar_exact_known_p_values():
    # 10 discordant pairs all favouring A: p = 2 * 0.5**10
    a = [True] * 10 + [False] * 5 + [True] * 5
    b = [False] * 10 + [False] * 5 + [True] * 5
    res = mcnemar_exact(a, b)
    assert (res.only_a, res.only_b, res.n) == (10, 0, 20)
    assert res.pvalue == pytest.approx(2 * 0.5 ** 10)
    # 3 vs 1 discordant: two-sided exact p = 2 * P(X <= 1 | n=4) = 2 * 5/16 = 0.625
    res = mcnemar_exact([1, 1, 1, 0, 1, 0], [0, 0, 0, 1, 1, 0])
    assert (res.only_a, res.only_b) == (3, 1)
    assert res.pvalue == pytest.approx(0.625)


def test_mcnemar_identical_outcomes_is_one():
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]).pvalue == 1.0


def test_mcnemar_rejects_unpaired():
    with pytest.raises(ValueError):
        mcnemar_exact([1, 0], [1, 0, 1])


def test_paired_bootstrap_interval_matches_binomial_width():
    # The per-pair difference is 1 on 20 of 100 pairs and 0 elsewhere: mean 0.2, CI clear of 0.
    a = np.array([True] * 20 + [False] * 80)
    b = np.zeros(100, dtype=bool)
    d = paired_bootstrap(a, b, n_boot=4000, seed=1)
    assert d.diff == pytest.approx(0.2)
    assert 0.1 < d.low < 0.2 < d.high < 0.3
    # Binomial sd of the mean is sqrt(.2*.8/100) = 0.04 -> 95% CI about +-0.078
    assert d.high - d.low == pytest.approx(2 * 1.96 * 0.04, abs=0.03)


def test_paired_bootstrap_identical_cells():
    a = np.array([True, False] * 50)
    d = paired_bootstrap(a, a, n_boot=500)
    assert (d.diff, d.low, d.high) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.4, rng.random(200) < 0.3
    assert paired_bootstrap(a, b, n_boot=1000, seed=7) == paired_bootstrap(a, b, n_boot=1000, seed=7)
