"""capacity.csv rows, the words of the report and the figures, on hand-made search results."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from knowpack.capacity import plots
from knowpack.capacity.artifacts import ArmResult, CapacityResults, capacity_frame, describe_arm, failed_limits
from knowpack.capacity.search import CapacitySearchConfig, TrialResult, search_capacity


def _trial_json(n: int, written: list[float], destroyed: list[float]) -> dict:
    values = {str(seed): {"reliability": 1.0, "bits_written": w, "bits_destroyed": d, "trainable_parameters": 1000.0}
              for seed, (w, d) in enumerate(zip(written, destroyed), start=1)}
    harms = {s: {"negative_shift": 0.0, "mmlu_drop": 0.0, "refusal_change": 0.0} for s in values}
    return {"n": n, "cells": {}, "controls": {}, "values": values, "harms": harms, "seconds": 1.0}


def _arm(rank: int, trials: dict[int, tuple[list[float], list[float]]], boundary: int) -> ArmResult:
    """An arm whose search passed every n up to ``boundary`` (reliability 1.0 there, 0.0 above)."""
    config = CapacitySearchConfig(reliability=0.9, n_min=2, n_max=8, growth=2)
    search = search_capacity(lambda n: TrialResult(reliability=[1.0 if n <= boundary else 0.0] * 2), config)
    ran = [t.n for t in search.trials]
    assert sorted(ran) == sorted(trials), ran  # the hand-made bits cover exactly the trials the search ran
    return ArmResult(method="lora", rank=rank, trainable_parameters=1000 * rank, n_max_searched=8, search=search,
                     trials=[_trial_json(n, *trials[n]) for n in ran])


def _results(*arms: ArmResult) -> CapacityResults:
    return CapacityResults(name="t", model="m", spec={}, reliability=0.9, budgets={}, confidence=0.9, arms=list(arms))


def test_trial_bits_are_means_over_seeds_with_pass_or_fail():
    arm = _arm(1, {2: ([10.0, 20.0], [1.0, 3.0]), 4: ([30.0, 50.0], [5.0, 7.0]), 3: ([20.0, 20.0], [2.0, 2.0])},
               boundary=3)
    table = plots.arm_trial_bits(arm)
    assert table["n"].tolist() == [2, 3, 4]
    assert table["passed"].tolist() == [True, True, False]
    assert table["written"].tolist() == [15.0, 20.0, 40.0] and table["destroyed"].tolist() == [2.0, 2.0, 6.0]


def test_bits_per_trial_draws_every_arm_and_skips_empty_measures(tmp_path):
    drawn = _arm(1, {2: ([10.0, 20.0], [0.0, 0.0]), 4: ([30.0, 50.0], [5.0, 7.0]), 3: ([20.0, 20.0], [2.0, 2.0])},
                 boundary=3)
    assert plots.bits_per_trial(_results(drawn), tmp_path / "t.png").stat().st_size > 0
    # No positive bits anywhere (a run without the bits metric): nothing to draw, no file.
    empty = _arm(4, {2: ([math.nan] * 2, [math.nan] * 2), 4: ([0.0] * 2, [0.0] * 2),
                     3: ([math.nan] * 2, [math.nan] * 2)}, boundary=3)
    assert plots.bits_per_trial(_results(empty), tmp_path / "e.png") is None
    assert not (tmp_path / "e.png").exists()


@pytest.mark.parametrize("written, expect_file", [(64.0, True), (math.nan, False)])
def test_bits_vs_parameters_uses_a_log_axis_and_needs_positive_bits(tmp_path, written, expect_file):
    arm = _arm(2, {2: ([written] * 2, [written] * 2), 4: ([written] * 2, [written] * 2),
                   8: ([written] * 2, [written] * 2)}, boundary=8)
    frame = capacity_frame(_results(arm))
    assert frame["n_found"].tolist() == [8]
    path = plots.bits_vs_parameters(frame, tmp_path / "b.png")
    assert (path is not None) == expect_file


def test_bits_vs_parameters_drops_arms_without_a_parameter_count(tmp_path):
    frame = pd.DataFrame([{"method": "lora", "rank": 1, "trainable_parameters": math.nan, "n_found": 2,
                           "bits_written": 10.0, "bits_destroyed": 1.0}])
    assert plots.bits_vs_parameters(frame, tmp_path / "b.png") is None


def test_failure_columns_and_words_give_bits_where_no_n_passed():
    # n = 2 passes, 4 fails, 3 passes: n found 3, first failure 4.
    arm = _arm(1, {2: ([10.0, 20.0], [1.0, 3.0]), 4: ([30.0, 50.0], [5.0, 7.0]), 3: ([20.0, 22.0], [2.0, 2.0])},
               boundary=3)
    row = capacity_frame(_results(arm)).iloc[0]
    assert (row["n_found"], row["first_failure"]) == (3, 4)
    assert (row["bits_written"], row["bits_destroyed"], row["net_bits"]) == (21.0, 2.0, 19.0)
    assert (row["bits_written_at_failure"], row["bits_destroyed_at_failure"], row["net_bits_at_failure"]) == (
        40.0, 6.0, 34.0)
    assert "At n = 3 the adapters wrote 21.0 likelihood bits and destroyed 2.0" in describe_arm(arm)
    # Nothing passed: the words give the bits of the failing trial instead.
    none = _arm(1, {2: ([10.0, 20.0], [1.0, 3.0])}, boundary=1)
    row = capacity_frame(_results(none)).iloc[0]
    assert row["n_found"] == 0 and math.isnan(row["bits_written"]) and row["bits_written_at_failure"] == 15.0
    words = describe_arm(none)
    assert "fails already at n = 2" in words and "At n = 2 the adapters wrote 15.0 likelihood bits" in words


def _harm_arm(values: list[float]) -> ArmResult:
    config = CapacitySearchConfig(reliability=None, budgets={"negative_shift": 0.15}, n_min=2, n_max=2,
                                  confidence=0.9)
    search = search_capacity(lambda n: TrialResult(harms={"negative_shift": values}), config)
    return ArmResult(method="lora", rank=4, trainable_parameters=None, n_max_searched=2, search=search, trials=[])


def test_words_say_when_the_spread_over_seeds_not_the_mean_failed_a_limit():
    spread = failed_limits(_harm_arm([0.0, 0.2, -0.05]))  # mean 0.05: inside the budget, bound far above
    assert spread.startswith("negative shift upper bound") and "(mean 0.05 within it: the spread over seeds" in spread
    harmful = failed_limits(_harm_arm([0.3, 0.35, 0.4]))  # the mean itself is over the budget
    assert harmful.startswith("negative shift upper bound") and "within it" not in harmful


def test_capacity_figures_draw_brackets_and_open_ended_arms(tmp_path):
    bracketed = _arm(1, {2: ([1.0] * 2, [1.0] * 2), 4: ([1.0] * 2, [1.0] * 2), 3: ([1.0] * 2, [1.0] * 2)}, boundary=3)
    open_ended = _arm(4, {2: ([1.0] * 2, [1.0] * 2), 4: ([1.0] * 2, [1.0] * 2), 8: ([1.0] * 2, [1.0] * 2)},
                      boundary=8)
    frame = capacity_frame(_results(bracketed, open_ended))
    assert frame["first_failure"].isna().tolist() == [False, True]
    assert plots.capacity_vs_rank(frame, tmp_path / "r.png").stat().st_size > 0
    assert plots.capacity_vs_parameters(frame, tmp_path / "p.png").stat().st_size > 0
