"""Capacity search: the largest number of new facts n an adapter takes in before it fails a limit.

The caller supplies ``trial(n)``, which trains and evaluates the cells for n facts (one per seed)
and returns their per-seed reliability and harms. The search grows n geometrically from ``n_min``
while trials pass, then bisects between the last pass and the first failure until the gap is
within the resolution. Every n is tried at most once.

Decisions use confidence bounds over the trial's seeds, never the mean, so a lucky average over
noisy seeds does not pass: reliability passes when its lower bound reaches the target, each harm
when its upper bound stays inside its budget. The bounds are the ends of the two-sided Student-t
interval the study report draws as error bars (so a decision can be read off the report); each
one-sided decision therefore holds at level (1 + confidence) / 2. A single seed has no spread to
estimate, so its bound is the value itself, and the result says so.

Noisy outcomes need not be monotone in n: a trial may pass above a failed one. The rule is
conservative and fixed: n found is the largest passing n *below the smallest failing n*; passes
above that failure never raise it, they only flag the result as non-monotone. Geometric growth
and bisection alone never look above a failure, so ``check_above_failure`` buys extra trials
above the first failure whose only purpose is to detect such non-monotonicity.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictFloat, ValidationError, field_validator, model_validator

from knowpack.errors import KnowpackError
from knowpack.report.stats import t_interval
from knowpack.schema import StrictModel, validation_problems

logger = logging.getLogger(__name__)

RELIABILITY = "reliability"
N_MAX = "n_max"
_RESERVED = frozenset({RELIABILITY, N_MAX})


class CapacitySearchConfig(StrictModel):
    """Limits and search grid. A limit that is not given is not checked; at least one must be."""

    reliability: float | None = Field(0.95, ge=0, le=1,
                                      description="target for the lower bound of reliability; None = not checked")
    budgets: dict[str, StrictFloat] = Field(
        default_factory=dict, description="harm name -> largest allowed upper bound (e.g. mmlu_drop: 0.02)")
    n_min: int = Field(1, ge=1, description="first n tried")
    n_max: int = Field(ge=1, description="n is never tried above this")
    growth: float = Field(2.0, gt=1, description="factor between successive n while trials pass")
    resolution: int = Field(1, ge=1, description="stop bisecting when first failure - last pass <= this")
    relative_resolution: float | None = Field(
        None, gt=0, lt=1, description="also stop when the gap <= this share of the last pass")
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the two-sided interval over seeds")
    check_above_failure: int = Field(
        0, ge=0, description="extra growth steps tried above the first failure to detect non-monotone outcomes")

    @field_validator("budgets")
    @classmethod
    def _harm_names(cls, budgets: dict[str, float]) -> dict[str, float]:
        for name in budgets:
            if not name.strip():
                raise ValueError("a harm name must not be empty")
            if name in _RESERVED:
                raise ValueError(f"{name!r} is not a harm name (reserved)")
        return budgets

    @model_validator(mode="after")
    def _consistent(self) -> "CapacitySearchConfig":
        if self.n_min > self.n_max:
            raise ValueError(f"n_min ({self.n_min}) is above n_max ({self.n_max})")
        if self.reliability is None and not self.budgets:
            raise ValueError("no limit given: set a reliability target or at least one harm budget")
        return self


class TrialResult(StrictModel):
    """What one trial (all seeds of one n) measured: one value per seed for each quantity."""

    reliability: list[StrictFloat] = Field(default_factory=list)
    harms: dict[str, list[StrictFloat]] = Field(default_factory=dict)


class LimitCheck(BaseModel):
    """One limit checked on one trial: the bound that decided it and whether it passed."""

    name: str
    kind: Literal["target", "budget"]  # target: lower bound >= limit; budget: upper bound <= limit
    limit: float
    mean: float
    bound: float
    seeds: int
    bound_is_value: bool  # one seed: no spread to estimate, the bound is the value itself
    passed: bool


class TrialRecord(BaseModel):
    """One trial as the search saw it."""

    n: int
    passed: bool
    failed: list[str]
    checks: list[LimitCheck]


class CapacitySearchResult(BaseModel):
    """The outcome of one search (one adapter size and method)."""

    n_found: int  # largest passing n below the first failure; 0 when n_min fails
    status: Literal["bracketed", "n_max_reached", "n_min_failed"]
    bound_by: list[str]  # failed limits at the first failure, or ["n_max"]
    first_failure: int | None
    gap: int | None  # first_failure - n_found: how far the true boundary may lie above n_found
    non_monotone: bool
    passes_above_failure: list[int]
    single_seed: bool  # some bound was a single value, not an interval
    trials_used: int
    trials: list[TrialRecord]  # in the order they were run
    notes: list[str]


def _bound(values: list[float], kind: str, confidence: float) -> tuple[float, float, bool]:
    """(mean, decisive bound, bound is the value itself) for one quantity over seeds."""
    interval = t_interval(values, confidence)
    if interval.n == 1:
        return interval.mean, interval.mean, True
    return interval.mean, (interval.low if kind == "target" else interval.high), False


def _limits(config: CapacitySearchConfig) -> list[tuple[str, str, float]]:
    limits = [(RELIABILITY, "target", config.reliability)] if config.reliability is not None else []
    return limits + [(name, "budget", budget) for name, budget in config.budgets.items()]


def keeps_limit(value: float, kind: str, limit: float) -> bool:
    """Whether ``value`` keeps a limit: a target from below (value >= limit), a budget from above (<=)."""
    return value >= limit if kind == "target" else value <= limit


def check_trial(n: int, result: TrialResult, config: CapacitySearchConfig) -> TrialRecord:
    """Decide every configured limit for one trial; a checked quantity without values is an error."""
    checks = []
    for name, kind, limit in _limits(config):
        values = result.reliability if name == RELIABILITY else result.harms.get(name, [])
        if not values:
            raise KnowpackError(f"capacity trial n={n} returned no values for {name!r}",
                                hint=f"the trial must measure {name} for every seed, or drop its limit")
        mean, bound, is_value = _bound(list(values), kind, config.confidence)
        passed = keeps_limit(bound, kind, limit)
        checks.append(LimitCheck(name=name, kind=kind, limit=limit, mean=mean, bound=bound, seeds=len(values),
                                 bound_is_value=is_value, passed=passed))
    failed = [c.name for c in checks if not c.passed]
    return TrialRecord(n=n, passed=not failed, failed=failed, checks=checks)


class _Trials:
    """Runs trials through a cache keyed by n, keeping the records in the order they were run."""

    def __init__(self, trial: Callable[[int], TrialResult | dict[str, Any]], config: CapacitySearchConfig):
        self.trial = trial
        self.config = config
        self.by_n: dict[int, TrialRecord] = {}
        self.order: list[TrialRecord] = []

    def run(self, n: int) -> TrialRecord:
        if n in self.by_n:
            return self.by_n[n]
        raw = self.trial(n)
        try:
            result = raw if isinstance(raw, TrialResult) else TrialResult.model_validate(raw)
        except ValidationError as exc:
            raise KnowpackError(f"capacity trial n={n} returned a malformed result: "
                                + "; ".join(validation_problems(exc)),
                                hint="return per-seed lists of finite numbers: reliability and harms") from None
        record = check_trial(n, result, self.config)
        outcome = "pass" if record.passed else "fail (" + ", ".join(record.failed) + ")"
        logger.info("capacity trial n=%d: %s", n, outcome)
        self.by_n[n] = record
        self.order.append(record)
        return record

    def bracket(self) -> tuple[int, int | None]:
        """(largest pass below the first failure or 0, smallest failing n or None)."""
        fails = [n for n, r in self.by_n.items() if not r.passed]
        first_fail = min(fails) if fails else None
        passes = [n for n, r in self.by_n.items() if r.passed and (first_fail is None or n < first_fail)]
        return max(passes, default=0), first_fail


def _next_up(n: int, config: CapacitySearchConfig) -> int:
    # At least +1 so a small n with a small factor still moves (ceil(1 * 1.2) would stay at 2 forever).
    return min(config.n_max, max(n + 1, math.ceil(n * config.growth)))


def _grow(trials: _Trials) -> None:
    """Try n_min, then geometrically larger n while trials pass, up to n_max."""
    config = trials.config
    n = config.n_min
    while trials.run(n).passed and n < config.n_max:
        n = _next_up(n, config)


def _look_above(trials: _Trials, first_fail: int) -> None:
    """Extra growth steps above the first failure: they can only reveal non-monotone outcomes."""
    n = first_fail
    for _ in range(trials.config.check_above_failure):
        if n >= trials.config.n_max:
            return
        n = _next_up(n, trials.config)
        trials.run(n)


def _resolved(low: int, high: int, config: CapacitySearchConfig) -> bool:
    tolerance = config.resolution
    if config.relative_resolution is not None:
        tolerance = max(tolerance, math.floor(config.relative_resolution * low))
    return high - low <= tolerance


def _bisect(trials: _Trials) -> None:
    """Halve the bracket (last pass, first failure) until it is within the resolution."""
    low, high = trials.bracket()
    while high is not None and low > 0 and not _resolved(low, high, trials.config):
        trials.run((low + high) // 2)
        low, high = trials.bracket()


def _summarize(trials: _Trials) -> CapacitySearchResult:
    """Apply the decision rule to every trial run (see the module docstring)."""
    n_found, first_fail = trials.bracket()
    above = sorted(n for n, r in trials.by_n.items() if r.passed and first_fail is not None and n > first_fail)
    if first_fail is None:
        status, bound_by = "n_max_reached", [N_MAX]
    else:
        status = "n_min_failed" if n_found == 0 else "bracketed"
        bound_by = list(trials.by_n[first_fail].failed)
    single = any(c.bound_is_value for r in trials.order for c in r.checks)
    notes = []
    if single:
        notes.append("one seed per trial (for some limits): bounds are the values themselves, not intervals")
    if above:
        notes.append(f"non-monotone: n={', '.join(map(str, above))} passed above the first failure at n={first_fail};"
                     f" n found is the largest passing n below that failure")
    if status == "n_max_reached":
        notes.append(f"every trial passed up to n_max={trials.config.n_max}: the capacity may lie above it")
    return CapacitySearchResult(
        n_found=n_found, status=status, bound_by=bound_by, first_failure=first_fail,
        gap=None if first_fail is None else first_fail - n_found, non_monotone=bool(above),
        passes_above_failure=above, single_seed=single, trials_used=len(trials.order),
        trials=list(trials.order), notes=notes)


def search_capacity(trial: Callable[[int], TrialResult | dict[str, Any]],
                    config: CapacitySearchConfig) -> CapacitySearchResult:
    """Find the largest n whose trial meets the reliability target and stays inside every budget.

    ``trial(n)`` returns a :class:`TrialResult` (or a dict of the same shape) with one value per
    seed. The number of trials is about log_growth(n_max / n_min) + log2(gap / resolution).
    """
    trials = _Trials(trial, config)
    _grow(trials)
    _, first_fail = trials.bracket()
    if first_fail is not None:
        _look_above(trials, first_fail)
    _bisect(trials)
    result = _summarize(trials)
    logger.info("capacity search: n=%d (%s, bound by %s) after %d trials", result.n_found, result.status,
                ", ".join(result.bound_by), result.trials_used)
    return result
