"""The capacity search on synthetic trial functions (no training: each trial is a formula of n)."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError
from scipy import stats

from knowpack.capacity.search import CapacitySearchConfig, TrialResult, check_trial, search_capacity
from knowpack.errors import KnowpackError


class Recorder:
    """Wrap a trial function, remembering every n it was called with."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[int] = []

    def __call__(self, n: int):
        self.calls.append(n)
        return self.fn(n)


def reliability_trial(boundary: int, seeds: int = 3):
    """Reliability 1.0 up to ``boundary`` and 0.5 above it, identical across seeds."""
    return Recorder(lambda n: TrialResult(reliability=[1.0 if n <= boundary else 0.5] * seeds))


def config(**kwargs) -> CapacitySearchConfig:
    return CapacitySearchConfig(**{"n_max": 1000, **kwargs})


@pytest.mark.parametrize("boundary", [1, 2, 3, 37, 64, 65, 500, 999])
def test_monotone_boundary_found_exactly(boundary):
    trial = reliability_trial(boundary)
    result = search_capacity(trial, config())
    assert result.n_found == boundary
    assert result.status == "bracketed"
    assert result.first_failure == boundary + 1 and result.gap == 1
    assert result.bound_by == ["reliability"]
    assert not result.non_monotone
    assert len(trial.calls) == len(set(trial.calls)) == result.trials_used
    assert [r.n for r in result.trials] == trial.calls


@pytest.mark.parametrize("boundary", [37, 200, 777])
def test_absolute_resolution_stops_early(boundary):
    coarse = search_capacity(reliability_trial(boundary), config(resolution=16))
    fine = search_capacity(reliability_trial(boundary), config())
    assert coarse.n_found <= boundary < coarse.first_failure
    assert coarse.first_failure - coarse.n_found <= 16
    assert coarse.trials_used < fine.trials_used


def test_relative_resolution_scales_with_n():
    result = search_capacity(reliability_trial(700), config(relative_resolution=0.1))
    assert result.n_found <= 700 < result.first_failure
    assert result.gap <= 0.1 * result.n_found
    assert result.gap > 1  # the relative tolerance, not the absolute one, stopped the bisection


def test_decision_uses_lower_bound_not_mean():
    cfg = config(reliability=0.95)
    values = [0.99, 0.91, 0.98]  # mean 0.96 clears the target, the lower bound does not
    record = check_trial(10, TrialResult(reliability=values), cfg)
    check = record.checks[0]
    sd = stats.tstd(values)
    expected_low = sum(values) / 3 - stats.t.ppf(0.975, df=2) * sd / math.sqrt(3)
    assert check.mean == pytest.approx(0.96)
    assert check.bound == pytest.approx(expected_low)
    assert not check.passed and not record.passed and record.failed == ["reliability"]
    assert check_trial(10, TrialResult(reliability=[0.97, 0.96, 0.97]), cfg).passed


def test_harm_decision_uses_upper_bound():
    cfg = config(reliability=None, budgets={"mmlu_drop": 0.04})
    values = [0.01, 0.03, 0.05]  # mean 0.03 inside the budget, the upper bound is not
    check = check_trial(5, TrialResult(harms={"mmlu_drop": values}), cfg).checks[0]
    expected_high = 0.03 + stats.t.ppf(0.975, df=2) * stats.tstd(values) / math.sqrt(3)
    assert check.kind == "budget" and check.bound == pytest.approx(expected_high)
    assert not check.passed


def test_confidence_level_changes_the_bound():
    values = [0.96, 0.98, 0.97, 0.99]
    loose = check_trial(1, TrialResult(reliability=values), config(reliability=0.955, confidence=0.5))
    strict = check_trial(1, TrialResult(reliability=values), config(reliability=0.955, confidence=0.99))
    assert loose.checks[0].bound > strict.checks[0].bound
    assert loose.passed and not strict.passed


def test_single_seed_bound_is_the_value_and_is_flagged():
    result = search_capacity(reliability_trial(20, seeds=1), config())
    assert result.n_found == 20
    assert result.single_seed
    assert all(c.bound_is_value and c.bound == c.mean for r in result.trials for c in r.checks)
    assert any("one seed" in note for note in result.notes)
    several = search_capacity(reliability_trial(20, seeds=2), config())
    assert not several.single_seed and not any(c.bound_is_value for r in several.trials for c in r.checks)


def test_noisy_seeds_make_the_search_conservative():
    """Per-seed noise around a falling mean: the bound-based answer sits below the mean-based one."""

    def trial(n):
        rng = random.Random(n)  # the same n always gives the same seeds (as cached cells would)
        mean = 1.0 - n / 2000  # mean reliability crosses 0.95 at n = 100
        return TrialResult(reliability=[mean + rng.gauss(0, 0.01) for _ in range(3)])

    recorder = Recorder(trial)
    result = search_capacity(recorder, config())
    assert 0 < result.n_found < 100
    passing = {r.n for r in result.trials if r.passed}
    assert result.n_found in passing
    assert all(n < result.first_failure for n in passing)
    assert len(recorder.calls) == len(set(recorder.calls))


def test_pass_above_a_failure_is_flagged_and_never_raises_n():
    # Passes up to 40, a noisy dip from 41 to 69, passes again from 70 to 150.
    trial = Recorder(lambda n: TrialResult(reliability=[1.0 if n <= 40 or 70 <= n <= 150 else 0.0] * 2))
    result = search_capacity(trial, config(check_above_failure=1))
    assert result.n_found == 40
    assert result.first_failure == 41
    assert result.non_monotone and result.passes_above_failure == [128]
    assert any("non-monotone" in note and "128" in note for note in result.notes)
    assert len(trial.calls) == len(set(trial.calls))


def test_checks_above_a_failure_that_also_fail_leave_the_result_monotone():
    plain = search_capacity(reliability_trial(40), config())
    checked = search_capacity(reliability_trial(40), config(check_above_failure=2))
    assert checked.n_found == plain.n_found == 40
    assert not checked.non_monotone
    assert checked.trials_used == plain.trials_used + 2
    assert {128, 256} <= {r.n for r in checked.trials}


def test_checks_above_a_failure_stop_at_n_max():
    trial = reliability_trial(600)
    result = search_capacity(trial, config(n_max=1000, check_above_failure=5))
    assert max(trial.calls) == 1000 and trial.calls.count(1000) == 1
    assert result.n_found == 600


def test_n_min_failing_gives_zero_bound_by_that_limit():
    trial = reliability_trial(3)
    result = search_capacity(trial, config(n_min=8))
    assert result.n_found == 0 and result.status == "n_min_failed"
    assert result.bound_by == ["reliability"] and result.first_failure == 8
    assert trial.calls == [8]


def test_unreachable_harm_budget_at_n_min():
    trial = Recorder(lambda n: {"reliability": [1.0, 1.0], "harms": {"mmlu_drop": [0.1, 0.12]}})
    result = search_capacity(trial, config(budgets={"mmlu_drop": 0.02}))
    assert result.n_found == 0 and result.bound_by == ["mmlu_drop"]
    assert result.trials_used == 1


def test_never_failing_reaches_n_max():
    trial = reliability_trial(10**9)
    result = search_capacity(trial, config(n_max=1000))
    assert result.n_found == 1000 and result.status == "n_max_reached"
    assert result.bound_by == ["n_max"] and result.first_failure is None and result.gap is None
    assert trial.calls == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert any("n_max=1000" in note for note in result.notes)


HARM_BOUNDARIES = {"negative_shift": 300, "mmlu_drop": 120, "refusal_change": 45}


@pytest.mark.parametrize("binding", sorted(HARM_BOUNDARIES))
def test_each_harm_can_bind(binding):
    boundaries = {**{name: 900 for name in HARM_BOUNDARIES}, binding: HARM_BOUNDARIES[binding]}

    def trial(n):
        harms = {name: [0.0 if n <= b else 1.0] * 3 for name, b in boundaries.items()}
        return TrialResult(reliability=[1.0] * 3, harms=harms)

    budgets = {"negative_shift": 0.05, "mmlu_drop": 0.02, "refusal_change": 0.1}
    result = search_capacity(trial, config(budgets=budgets))
    assert result.n_found == HARM_BOUNDARIES[binding]
    assert result.bound_by == [binding]
    assert {c.name for c in result.trials[0].checks} == {"reliability", *budgets}


def test_several_limits_failing_together_are_all_named():
    trial = lambda n: TrialResult(reliability=[1.0 if n <= 50 else 0.0] * 2,  # noqa: E731
                                  harms={"mmlu_drop": [0.0 if n <= 50 else 0.5] * 2})
    result = search_capacity(trial, config(budgets={"mmlu_drop": 0.02}))
    assert result.n_found == 50 and result.bound_by == ["reliability", "mmlu_drop"]


def test_a_limit_not_given_is_not_checked():
    # No reliability target: a trial without reliability values is fine, harms alone decide.
    trial = lambda n: TrialResult(harms={"mmlu_drop": [0.0 if n <= 70 else 0.5]})  # noqa: E731
    result = search_capacity(trial, config(reliability=None, budgets={"mmlu_drop": 0.02}))
    assert result.n_found == 70
    assert [c.name for c in result.trials[0].checks] == ["mmlu_drop"]
    # A harm measured but not budgeted is ignored.
    trial = lambda n: TrialResult(reliability=[1.0 if n <= 70 else 0.0], harms={"mmlu_drop": [9.0]})  # noqa: E731
    assert search_capacity(trial, config()).n_found == 70


@pytest.mark.parametrize("boundary", [1, 5, 1234, 77_777, 523_456, 999_999])
def test_number_of_trials_is_logarithmic(boundary):
    n_max = 1_000_000
    trial = reliability_trial(boundary)
    result = search_capacity(trial, config(n_max=n_max))
    assert result.n_found == boundary
    # Growth doubles up to ~log2(n_max) times, bisection halves a gap below the boundary.
    assert result.trials_used <= 2 * math.ceil(math.log2(n_max)) + 2
    assert len(trial.calls) == len(set(trial.calls))


def test_growth_factor_and_minimum_step():
    trial = reliability_trial(10**9)
    search_capacity(trial, config(n_max=30, growth=3))
    assert trial.calls == [1, 3, 9, 27, 30]
    slow = reliability_trial(10**9)
    search_capacity(slow, config(n_max=10, growth=1.2))
    # ceil(n * 1.2) would stay put for small n; every step still moves by at least one.
    assert slow.calls == [1, 2, 3, 4, 5, 6, 8, 10]


def test_same_results_every_run():
    first = search_capacity(reliability_trial(321), config(check_above_failure=1))
    second = search_capacity(reliability_trial(321), config(check_above_failure=1))
    assert first.model_dump() == second.model_dump()


def test_missing_values_for_a_checked_limit_is_a_clear_error():
    with pytest.raises(KnowpackError, match="n=1 returned no values for 'mmlu_drop'"):
        search_capacity(lambda n: TrialResult(reliability=[1.0]), config(budgets={"mmlu_drop": 0.02}))
    with pytest.raises(KnowpackError, match="n=1 returned no values for 'reliability'"):
        search_capacity(lambda n: TrialResult(), config())


def test_malformed_trial_result_is_a_clear_error():
    with pytest.raises(KnowpackError, match="n=1 returned a malformed result.*reliability"):
        search_capacity(lambda n: {"reliability": [float("nan")]}, config())
    with pytest.raises(KnowpackError, match="malformed.*unknown key"):
        search_capacity(lambda n: {"reliabilty": [1.0]}, config())


@pytest.mark.parametrize("kwargs, message", [
    ({"n_min": 50, "n_max": 10}, "n_min"),
    ({"reliability": None}, "no limit"),
    ({"budgets": {"mmlu_drop": True}}, "number"),
    ({"budgets": {"reliability": 0.1}}, "reserved"),
    ({"budgets": {" ": 0.1}}, "empty"),
    ({"growth": 1.0}, "greater than 1"),
    ({"confidence": 1.0}, "less than 1"),
    ({"reliability": 1.5}, "less than or equal to 1"),
    ({"resolutoin": 2}, "Extra inputs"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        config(**kwargs)
