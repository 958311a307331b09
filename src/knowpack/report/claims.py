"""Decide claims on a study's results: every claim gets an estimate, a CI and one verdict.

Input is plain data: the results frame (one row per cell = one seed of one grid point), the
stacked per-epoch curves and, for claims paired by fact, a callable giving a cell's per-fact
outcomes. The claim file (:mod:`knowpack.report.claims_schema`) fixes how each claim is decided.

Rule for every check: **supported** when its CI lies entirely on the claimed side (of 0, of the
threshold, or of a zero slope), **contradicted** when it lies entirely on the other side,
**undecided** otherwise. A claim is supported when all its checks are, contradicted when any is.
A claim the grid cannot decide (a group without cells, too few seeds or facts) is an error, or,
with ``missing="report"``, an undecided row that says "not decidable with this grid" and why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from knowpack.errors import KnowpackError
from knowpack.report.aggregate import AXIS_COLUMNS
from knowpack.report.claims_schema import (GRID_EXTREMES, Check, Claim, ColumnMetric, Condition, DifferenceMetric,
                                           DropMetric, EpochsTo, EpochsToMetric, OutcomeMetric, Threshold, Trend,
                                           load_claims, paper_claims, parse_claims)
from knowpack.report.stats import Interval, mcnemar_exact, paired_bootstrap, t_interval

__all__ = ["Decision", "Part", "Verdict", "evaluate_claims", "load_claims", "paper_claims", "parse_claims", "render_markdown",
           "verdict_frame"]

log = logging.getLogger(__name__)

VERDICTS = ("supported", "contradicted", "undecided")
NOT_DECIDABLE = "not decidable with this grid"
Outcomes = Callable[[str], "pd.DataFrame | None"]


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What was estimated, the estimate with its CI, and the verdict it gives."""

    statistic: str
    estimate: float
    low: float
    high: float
    confidence: float
    n_pairs: int
    unit: str  # what n_pairs counts: "seeds" or "facts"
    verdict: str  # one of VERDICTS
    decidable: bool  # False: the grid lacks cells, seeds or facts (the verdict is then "undecided")
    reason: str
    p_value: float | None = None  # exact McNemar p beside a per-fact bootstrap


@dataclass(frozen=True, kw_only=True)
class Part(Decision):
    """The decision of one check of a claim (for one ``for_each`` level when it has several)."""

    check: str
    level: str
    n_seeds: int
    # How far the CI's near bound lies on the claimed side (negative: on or past the boundary);
    # the part with the smallest margin is the one that decides and is shown for its claim.
    margin: float = math.nan


@dataclass(frozen=True, kw_only=True)
class Verdict(Decision):
    """One claim's decision: the deciding part's statistic, estimate and CI, and every part."""

    claim_id: str
    title: str
    source: str | None
    parts: tuple[Part, ...] = field(default_factory=tuple)


class _NotDecidable(Exception):
    """The grid lacks what a check needs (cells, seeds, facts, a measured column)."""


# ---------------------------------------------------------------------------------------------
# The study's data, prepared once.

class _Study:
    """Finished cells, curves and per-fact outcomes, with the lookups the checks need."""

    def __init__(self, cells: pd.DataFrame, curves: pd.DataFrame | None, outcomes: Outcomes | None):
        missing = [c for c in ("key", "seed") if c not in cells.columns]
        if missing:
            raise KnowpackError(f"the results frame has no column(s) {missing}",
                                hint="pass results.csv as written by `knowpack study run` / `knowpack report`")
        self.grid = cells
        self.done = cells[cells["state"] == "done"] if "state" in cells.columns else cells
        self.curves = curves if curves is not None else pd.DataFrame()
        self.outcomes = outcomes
        self._outcome_cache: dict[str, pd.DataFrame | None] = {}
        self._epochs_cache: dict[tuple[str, float], tuple[pd.Series, set[str]]] = {}

    def extreme(self, column: str, which: str) -> float:
        """Largest / smallest value of ``column`` over the whole grid (unfinished cells too).

        The whole grid, so that "n = max" names the largest n the study planned: if those cells
        failed, the claim is not decidable rather than silently tested at a smaller n.
        """
        values = pd.to_numeric(self.grid[column], errors="coerce").dropna()
        if values.empty:
            raise KnowpackError(f"`{which}` needs a numeric column, but {column!r} has no numbers",
                                hint=f"compare {column} with a value or a list of values instead")
        return float(values.max() if which == "max" else values.min())

    def select(self, selector: Mapping[str, Any], role: str) -> pd.DataFrame:
        """Finished cells matching every column condition of ``selector``."""
        for column in selector:
            if column not in self.done.columns:
                raise _NotDecidable(f"group {role} {describe_selector(selector)} uses column {column!r}, "
                                    "which the results do not have")
        chosen = self.done[self._mask(self.done, selector)]
        if chosen.empty:
            # Tell "the grid has no such cells" apart from "they are planned but failed or still run".
            planned = self.grid[self._mask(self.grid, selector)]
            states = sorted(set(planned["state"].astype(str))) if "state" in planned else []
            note = f"; {len(planned)} such cell(s) are in the grid but not done ({', '.join(states)})" \
                if len(planned) else ""
            raise _NotDecidable(f"group {role} {describe_selector(selector)} matches no finished cell "
                                f"(the study's finished cells have {self._values_text(selector)}){note}")
        return chosen

    def _mask(self, frame: pd.DataFrame, selector: Mapping[str, Any]) -> pd.Series:
        mask = pd.Series(True, index=frame.index)
        for column, condition in selector.items():
            mask &= self._matches(frame[column], condition)
        return mask

    def _matches(self, values: pd.Series, condition: Any) -> pd.Series:
        column = str(values.name)
        if isinstance(condition, list):
            return values.isin(condition)
        if not isinstance(condition, Condition):
            return values == self._resolve(column, condition, numeric_only=True)
        mask = pd.Series(True, index=values.index)
        for op, target in condition.operators().items():
            if op in ("in", "not_in"):
                mask &= values.isin(target) if op == "in" else ~values.isin(target)
            elif op in ("eq", "ne"):
                target = self._resolve(column, target, numeric_only=True)
                mask &= (values == target) if op == "eq" else (values != target)
            else:
                mask &= _compare(pd.to_numeric(values, errors="coerce"), op, self._resolve(column, target))
        return mask

    def _resolve(self, column: str, value: Any, *, numeric_only: bool = False) -> Any:
        """``max`` / ``min`` become the grid's extreme of ``column``.

        For equality they do so only on a numeric column, so a kind literally named "max" can
        still be selected; an order comparison always needs the number.
        """
        if not (isinstance(value, str) and value in GRID_EXTREMES):
            return value
        if numeric_only and not pd.api.types.is_numeric_dtype(self.grid[column]):
            return value
        return self.extreme(column, value)

    def _values_text(self, selector: Mapping[str, Any]) -> str:
        parts = []
        for column in selector:
            values = sorted({v for v in self.done[column].tolist() if v == v}, key=str)
            parts.append(f"{column} ∈ {values}")
        return ", ".join(parts) if parts else "no cells"

    def outcome(self, key: str) -> pd.DataFrame | None:
        """A cell's per-fact outcomes (id, positive, negative), read once."""
        if key not in self._outcome_cache:
            frame = self.outcomes(key) if self.outcomes is not None else None
            if frame is not None:
                missing = [c for c in ("id", "positive", "negative") if c not in frame.columns]
                if missing:
                    raise KnowpackError(f"per-fact outcomes of cell {key} have no column(s) {missing}",
                                        hint="outcomes(key) must return a frame with id, positive, negative")
            self._outcome_cache[key] = frame
        return self._outcome_cache[key]

    def epochs_to(self, spec: EpochsTo) -> tuple[pd.Series, set[str]]:
        """Per cell key: first epoch reaching ``spec``; and the keys that never reached it."""
        cache_key = (spec.column, spec.at_least)
        if cache_key not in self._epochs_cache:
            self._epochs_cache[cache_key] = _epochs_to(self.curves, spec)
        return self._epochs_cache[cache_key]


def _compare(values: pd.Series, op: str, target: float) -> pd.Series:
    return {"gt": values > target, "ge": values >= target, "lt": values < target, "le": values <= target}[op]


def _epochs_to(curves: pd.DataFrame, spec: EpochsTo) -> tuple[pd.Series, set[str]]:
    """First epoch whose ``spec.column`` reaches ``spec.at_least``, per cell key.

    A cell that never reaches it gets its last epoch + 1 (a lower bound on the true value, so
    slow cells still count against their mixture) and is listed as censored. A curve that never
    measured the column gives no value at all.
    """
    needed = ["key", "epoch", spec.column]
    if curves.empty or any(c not in curves.columns for c in needed):
        raise _NotDecidable(f"epochs to {spec.column} ≥ {spec.at_least:g} needs learning curves with "
                            f"columns {needed}; none were given")
    values, censored = {}, set()
    for key, curve in curves.sort_values("epoch").groupby("key", sort=False):
        measured = curve.dropna(subset=[spec.column])
        if measured.empty:
            continue
        reached = measured.loc[measured[spec.column] >= spec.at_least, "epoch"]
        if len(reached):
            values[key] = float(reached.iloc[0])
        else:
            values[key] = float(curve["epoch"].max()) + 1.0
            censored.add(key)
    return pd.Series(values, dtype=float), censored


def _plain(value: Any) -> Any:
    """2.0 → 2: a YAML ``gt: 2`` reads back as a float, but people wrote an integer."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def describe_selector(selector: Mapping[str, Any]) -> str:
    """A selector in words for messages: ``{kind: paraphrase, extra > 0}``."""
    symbols = {"eq": "=", "ne": "≠", "gt": ">", "ge": "≥", "lt": "<", "le": "≤", "in": "∈", "not_in": "∉"}
    items = []
    for column, condition in selector.items():
        if isinstance(condition, Condition):
            items += [f"{column} {symbols[op]} {_plain(value)}" for op, value in condition.operators().items()]
        elif isinstance(condition, list):
            items.append(f"{column} ∈ {condition}")
        else:
            items.append(f"{column}: {condition}")
    return "{" + ", ".join(items) + "}" if items else "{all cells}"


# ---------------------------------------------------------------------------------------------
# Metric values and the units a check's statistic is computed on.

def _cell_values(metric, frame: pd.DataFrame, study: _Study) -> pd.Series:
    """The metric for every row of ``frame`` (one cell each), NaN where a cell lacks it."""
    missing = [c for c in metric.columns() if c not in frame.columns]
    if missing:
        raise _NotDecidable(f"{metric.label()} needs results column(s) {missing}, which the study did not produce")

    def num(column: str) -> pd.Series:
        return pd.to_numeric(frame[column], errors="coerce")

    if isinstance(metric, ColumnMetric):
        return num(metric.column)
    if isinstance(metric, DropMetric):
        return num(f"{metric.drop}_base") - num(metric.drop)
    if isinstance(metric, DifferenceMetric):
        return num(metric.difference[0]) - num(metric.difference[1])
    if isinstance(metric, EpochsToMetric):
        values, _ = study.epochs_to(metric.epochs_to)
        return frame["key"].map(values).astype(float)
    raise TypeError(f"no per-cell value for {type(metric).__name__}")


def _measured(metric, study: _Study) -> bool:
    """Whether the study produced the metric at all (an optional check is skipped when not)."""
    if isinstance(metric, OutcomeMetric):
        return study.outcomes is not None
    if isinstance(metric, EpochsToMetric):
        return not study.curves.empty and metric.epochs_to.column in study.curves.columns
    return all(c in study.done.columns and study.done[c].notna().any() for c in metric.columns())


def _units(check: Check, study: _Study) -> pd.DataFrame:
    """Group A's cells with their value, or matched (A, B) pairs with the difference A − B.

    Pairs keep A's columns under their own names and B's with a ``_b`` suffix; every A cell is
    paired with every B cell sharing the ``pair_on`` values (a cell is never paired with itself).
    """
    a = study.select(check.cells, "cells")
    if check.baseline is None:
        values = _cell_values(check.metric, a, study)
        if values.isna().all():
            raise _NotDecidable(f"no cell of group cells {describe_selector(check.cells)} has a value of "
                                f"{check.metric.label()}")
        return a.assign(value=values)
    b = study.select(check.baseline, "baseline")
    absent = [c for c in check.pair_on if c not in study.done.columns]
    if absent:
        raise _NotDecidable(f"pair_on column(s) {absent} are not in the results")
    pairs = a.merge(b, on=check.pair_on, suffixes=("", "_b"))
    pairs = pairs[pairs["key"] != pairs["key_b"]].reset_index(drop=True)
    if pairs.empty:
        raise _NotDecidable(f"no cell of group cells {describe_selector(check.cells)} shares "
                            f"{check.pair_on} with a cell of baseline {describe_selector(check.baseline)}")
    if isinstance(check.metric, OutcomeMetric):
        return pairs
    both = pd.concat([a, b]).drop_duplicates("key")
    values = pd.Series(_cell_values(check.metric, both, study).to_numpy(), index=both["key"].to_numpy())
    pairs["value"] = pairs["key"].map(values) - pairs["key_b"].map(values)
    if pairs["value"].isna().all():
        raise _NotDecidable(f"no matched pair has a value of {check.metric.label()} on both sides")
    return pairs


# ---------------------------------------------------------------------------------------------
# Statistics: each turns a check's units into an _Estimate (interval, evidence counted, words).

@dataclass(frozen=True)
class _Estimate:
    interval: Interval
    n_pairs: int
    unit: str
    n_seeds: int
    detail: str
    p_value: float | None = None


def _per_seed_level(units: pd.DataFrame, check: Check) -> _Estimate:
    """Student-t interval over seeds of the seed's mean value (its cells' or its pairs')."""
    valued = units.dropna(subset=["value"])
    per_seed = valued.groupby("seed")["value"].mean()
    _need_seeds(per_seed.index, check)
    interval = t_interval(per_seed.tolist(), confidence=check.rule.confidence)
    what = "pairs" if check.baseline is not None else "cells"
    return _Estimate(interval, len(per_seed), "seeds", len(per_seed),
                     f"over {len(per_seed)} seeds ({len(valued)} {what})")


def _need_seeds(seeds, check: Check, why: str = "with a value") -> None:
    seeds = sorted(seeds)
    if len(seeds) < check.rule.min_seeds:
        raise _NotDecidable(f"{len(seeds)} seed(s) {why} ({seeds}); the rule needs at least {check.rule.min_seeds}")


def _trend_x(values: pd.Series, trend: Trend) -> np.ndarray:
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if trend.scale == "log":
        if np.any(x <= 0):
            raise KnowpackError(f"a log-scale trend needs {trend.axis} > 0, got {sorted(set(x.tolist()))}",
                                hint="select cells with positive values or use scale: linear")
        return np.log2(x)
    return x


def _series_statistic(x: np.ndarray, y: np.ndarray, trend: Trend) -> float:
    """Slope of y per doubling of x (log scale) or per unit, or Spearman's ρ; NaN if undefined."""
    if len(np.unique(x)) < 2:
        return math.nan
    if trend.measure == "spearman":
        from scipy.stats import spearmanr

        if len(np.unique(y)) < 2:
            return math.nan
        return float(spearmanr(x, y).statistic)
    return float(np.polyfit(x, y, 1)[0])


def _per_seed_trend(units: pd.DataFrame, check: Check) -> _Estimate:
    """Per seed, the trend within each series (the other axes fixed), averaged; t over seeds.

    Within a seed the comparison is between cells trained alike except for the trend axis, so
    the slope is not confounded by which mixtures happen to exist at which n.
    """
    trend: Trend = check.expect  # type: ignore[assignment]
    series_axes = [c for c in AXIS_COLUMNS if c in units.columns and c not in ("seed", trend.axis, *check.for_each)
                   and units[c].notna().any()]
    valued = units.dropna(subset=["value"])
    per_seed, n_series = {}, 0
    for seed, seed_units in valued.groupby("seed"):
        groups = seed_units.groupby(series_axes, dropna=False) if series_axes else [((), seed_units)]
        stats = [_series_statistic(_trend_x(g[trend.axis], trend), g["value"].to_numpy(dtype=float), trend)
                 for _, g in groups]
        stats = [s for s in stats if not math.isnan(s)]
        if stats:
            per_seed[seed] = float(np.mean(stats))
            n_series += len(stats)
    _need_seeds(per_seed, check, why=f"with two or more values of {trend.axis} in one series")
    interval = t_interval(list(per_seed.values()), confidence=check.rule.confidence)
    return _Estimate(interval, len(per_seed), "seeds", len(per_seed),
                     f"over {len(per_seed)} seeds ({n_series} series of {', '.join(series_axes) or 'all cells'})")


def _per_fact(units: pd.DataFrame, check: Check, study: _Study) -> _Estimate:
    """Paired bootstrap over the held-out facts each matched pair of cells shares, pooled.

    Pairing by fact removes the variation between fact samples, so the difference left is the
    mixture's; the exact McNemar p-value on the same pairs is given beside the interval.
    """
    side = check.metric.outcome  # type: ignore[union-attr]
    if study.outcomes is None:
        raise _NotDecidable("the check pairs held-out facts, but no per-fact outcomes were given")
    a_values: list[bool] = []
    b_values: list[bool] = []
    used, without, seeds = 0, 0, set()
    for key_a, key_b, seed in units[["key", "key_b", "seed"]].drop_duplicates().itertuples(index=False):
        a, b = study.outcome(key_a), study.outcome(key_b)
        if a is None or b is None:
            without += 1
            continue
        joined = a[["id", side]].merge(b[["id", side]], on="id", suffixes=("_a", "_b"))
        a_values += joined[f"{side}_a"].astype(bool).tolist()
        b_values += joined[f"{side}_b"].astype(bool).tolist()
        used, seeds = used + 1, seeds | {seed}
    note = f", {without} without a per-fact file" if without else ""
    if len(a_values) < check.rule.min_facts:
        raise _NotDecidable(f"{len(a_values)} shared held-out facts over {used} pair(s) of cells{note}; "
                            f"the rule needs at least {check.rule.min_facts}")
    diff = paired_bootstrap(a_values, b_values, n_boot=check.rule.n_boot, confidence=check.rule.confidence,
                            seed=check.rule.bootstrap_seed)
    test = mcnemar_exact(a_values, b_values)
    interval = Interval(diff.diff, diff.low, diff.high, diff.n)
    return _Estimate(interval, diff.n, "facts", len(seeds),
                     f"over {diff.n} shared facts ({used} cell pairs, {len(seeds)} seeds{note}; "
                     f"McNemar p = {test.pvalue:.3g})", p_value=test.pvalue)


# ---------------------------------------------------------------------------------------------
# Decisions.

def decide(threshold: Threshold, low: float, high: float) -> tuple[str, float]:
    """(verdict, margin) of a CI [low, high] against a claimed side of ``threshold``.

    Strict claims (``greater_than``) need the whole CI strictly past the value and are refuted
    by a CI at or below it; inclusive ones (``at_least``) accept a bound equal to the value.
    """
    t = threshold.value
    if math.isnan(low) or math.isnan(high):
        return "undecided", -math.inf
    # The CI's bound nearest the claimed side decides support, the farthest decides refutation.
    upward = threshold.operator in ("greater_than", "at_least")
    near, far = (low, high) if upward else (high, low)
    supported, contradicted = threshold.holds(near), not threshold.holds(far)
    verdict = "supported" if supported else "contradicted" if contradicted else "undecided"
    return verdict, float(near - t if upward else t - near)


def _threshold(check: Check) -> Threshold:
    return check.expect.threshold() if isinstance(check.expect, Trend) else check.expect


def _statistic_name(check: Check) -> str:
    """What was estimated, in words: the statistic, over what, of which metric."""
    level = f"{check.rule.confidence:.0%} CI"
    metric = check.metric.label()
    if isinstance(check.expect, Trend):
        trend = check.expect
        if trend.measure == "spearman":
            return f"Spearman ρ of {metric} vs {trend.axis}, per seed; t {level} over seeds"
        per = f"per doubling of {trend.axis}" if trend.scale == "log" else f"per unit of {trend.axis}"
        return f"slope of {metric} {per}, per seed; t {level} over seeds"
    if check.rule.statistic == "fact_bootstrap":
        return f"difference A − B in {metric}; paired bootstrap {level} over facts, exact McNemar p"
    if check.baseline is not None:
        return f"paired difference A − B in {metric}, mean per seed; t {level} over seeds"
    return f"{metric}, mean per seed; t {level} over seeds"


def _estimate(check: Check, units: pd.DataFrame, study: _Study) -> _Estimate:
    if check.rule.statistic == "fact_bootstrap":
        return _per_fact(units, check, study)
    if isinstance(check.expect, Trend):
        return _per_seed_trend(units, check)
    return _per_seed_level(units, check)


def _groups_text(check: Check) -> str:
    if check.baseline is None:
        return describe_selector(check.cells)
    return (f"A {describe_selector(check.cells)} − B {describe_selector(check.baseline)} "
            f"at the same {', '.join(check.pair_on)}")


def _censored_note(check: Check, units: pd.DataFrame, study: _Study) -> str:
    if not isinstance(check.metric, EpochsToMetric):
        return ""
    _, censored = study.epochs_to(check.metric.epochs_to)
    keys = set(units["key"]) | (set(units["key_b"]) if "key_b" in units else set())
    hit = len(keys & censored)
    if not hit:
        return ""
    return f"; {hit} cell(s) never reached {check.metric.epochs_to.at_least:g} (counted as last epoch + 1)"


def _decided_part(check: Check, name: str, level: str, units: pd.DataFrame, study: _Study) -> Part:
    est = _estimate(check, units, study)
    threshold = _threshold(check)
    iv = est.interval
    verdict, margin = decide(threshold, iv.low, iv.high)
    where = f" at {level}" if level else ""
    reason = (f"{name}: {_groups_text(check)}{where}: {_fmt(iv.mean)} [{_fmt(iv.low)}, {_fmt(iv.high)}] "
              f"{est.detail}, claimed {threshold.text()} → {verdict}{_censored_note(check, units, study)}")
    return Part(check=name, level=level, statistic=_statistic_name(check), estimate=iv.mean, low=iv.low,
                high=iv.high, confidence=check.rule.confidence, n_pairs=est.n_pairs, unit=est.unit,
                n_seeds=est.n_seeds, verdict=verdict, decidable=True, reason=reason, p_value=est.p_value,
                margin=margin)


def _undecidable_part(check: Check, name: str, why: str) -> Part:
    return Part(check=name, level="", statistic=_statistic_name(check), estimate=math.nan, low=math.nan,
                high=math.nan, confidence=check.rule.confidence, n_pairs=0,
                unit="facts" if check.rule.statistic == "fact_bootstrap" else "seeds", n_seeds=0,
                verdict="undecided", decidable=False, reason=f"{name}: {NOT_DECIDABLE}: {why}")


def _level_text(columns: list[str], values: Any) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{c}={v}" for c, v in zip(columns, values))


def _check_requirements(check: Check, study: _Study) -> None:
    """Raise not-decidable when a precondition of the check fails on its cells (a floor effect)."""
    if not check.requires:
        return
    cells = study.select(check.cells, "cells")
    for requirement in check.requires:
        if requirement.column not in cells.columns:
            raise _NotDecidable(f"its precondition needs results column {requirement.column!r}, "
                                f"which the study did not produce")
        mean = float(pd.to_numeric(cells[requirement.column], errors="coerce").mean())
        if math.isnan(mean) or not requirement.expect.holds(mean):
            raise _NotDecidable(f"{requirement.reason} (mean {requirement.column} = {_fmt(mean)}, "
                                f"needs {requirement.expect.text()})")


def _check_parts(check: Check, name: str, study: _Study) -> list[Part]:
    """Every part of one check: one, or one per ``for_each`` level (an optional check may give none)."""
    if check.optional and not _measured(check.metric, study):
        log.info("skipping optional %s: %s was not measured", name, check.metric.label())
        return []
    _check_requirements(check, study)
    units = _units(check, study)
    if not check.for_each:
        return [_decided_part(check, name, "", units, study)]
    absent = [c for c in check.for_each if c not in units.columns]
    if absent:
        raise _NotDecidable(f"for_each column(s) {absent} are not in the results")
    parts = []
    for values, group in units.groupby(check.for_each, sort=True, dropna=False):
        level = _level_text(check.for_each, values)
        try:
            parts.append(_decided_part(check, name, level, group, study))
        except _NotDecidable as exc:
            raise _NotDecidable(f"at {level}: {exc}") from None
    return parts


def _combine(claim: Claim, parts: list[Part]) -> Verdict:
    """All parts supported → supported; any contradicted → contradicted; otherwise undecided.

    The part shown for the claim is the one that decides it: the most contradicted part, else the
    first part the grid cannot decide, else the weakest part (smallest margin).
    """
    contradicted = [p for p in parts if p.verdict == "contradicted"]
    undecidable = [p for p in parts if not p.decidable]
    undecided = [p for p in parts if p.decidable and p.verdict == "undecided"]
    if contradicted:
        verdict, shown = "contradicted", min(contradicted, key=lambda p: p.margin)
    elif undecidable:
        verdict, shown = "undecided", undecidable[0]
    elif undecided:
        verdict, shown = "undecided", min(undecided, key=lambda p: p.margin)
    else:
        verdict, shown = "supported", min(parts, key=lambda p: p.margin)
    reason = shown.reason
    if len(parts) > 1:
        counts = {v: sum(p.verdict == v for p in parts if p.decidable) for v in VERDICTS}
        counts[NOT_DECIDABLE] = len(undecidable)
        reason += f" (of {len(parts)} parts: {', '.join(f'{n} {v}' for v, n in counts.items() if n)})"
    numbers = {f.name: getattr(shown, f.name) for f in fields(Decision)}
    # A contradicted part refutes the claim whatever the parts the grid cannot decide say.
    numbers.update(verdict=verdict, decidable=verdict == "contradicted" or not undecidable, reason=reason)
    return Verdict(claim_id=claim.id, title=claim.title, source=claim.source, parts=tuple(parts), **numbers)


def _evaluate_claim(claim: Claim, study: _Study, missing: str) -> Verdict:
    parts: list[Part] = []
    for position, check in enumerate(claim.checks, 1):
        name = check.name(position)
        try:
            parts += _check_parts(check, name, study)
        except _NotDecidable as exc:
            if missing == "raise":
                raise KnowpackError(
                    f"claim {claim.id} ({name}) is {NOT_DECIDABLE}: {exc}",
                    hint="add the missing cells or seeds to the study grid, or evaluate with "
                         "missing='report' to list the claim as not decidable") from None
            parts.append(_undecidable_part(check, name, str(exc)))
    if not parts:
        why = "none of its optional checks was measured by this study"
        if missing == "raise":
            raise KnowpackError(f"claim {claim.id} is {NOT_DECIDABLE}: {why}",
                                hint="measure the metrics it names, or evaluate with missing='report'")
        parts = [_undecidable_part(claim.checks[0], claim.checks[0].name(1), why)]
    return _combine(claim, parts)


def evaluate_claims(claims: Sequence[Claim] | str | Path, cells: pd.DataFrame, curves: pd.DataFrame | None = None,
                    outcomes: Outcomes | None = None, *,
                    missing: Literal["raise", "report"] = "raise") -> list[Verdict]:
    """Decide every claim on a study's results; one :class:`Verdict` per claim, in file order.

    ``cells``: results.csv as a frame (unfinished cells are ignored); ``curves``: the stacked
    per-epoch curves (key, epoch, reliability, …), needed by ``epochs_to`` metrics; ``outcomes``:
    ``key -> DataFrame[id, positive, negative]`` (or None for a cell without a per-fact file),
    needed by checks paired by fact. ``claims`` may be parsed claims or a claim-file path.
    ``missing="raise"`` makes a claim the grid cannot decide an error that names the claim and the
    missing group; ``"report"`` returns it as an undecided, not-decidable row instead.
    """
    if missing not in ("raise", "report"):
        raise KnowpackError(f"missing must be 'raise' or 'report', got {missing!r}")
    if isinstance(claims, (str, Path)):
        claims = load_claims(claims)
    study = _Study(cells, curves, outcomes)
    return [_evaluate_claim(claim, study, missing) for claim in claims]


# ---------------------------------------------------------------------------------------------
# Output.

def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.3g}"


def _decision_columns(decision: Decision) -> dict[str, Any]:
    row = {f.name: getattr(decision, f.name) for f in fields(Decision)}
    row["ci_low"], row["ci_high"] = row.pop("low"), row.pop("high")
    return row


def verdict_frame(verdicts: Sequence[Verdict], *, parts: bool = False) -> pd.DataFrame:
    """One row per claim (or, with ``parts=True``, per claim part) with every number of the decision."""
    rows = []
    for v in verdicts:
        if not parts:
            rows.append({"claim": v.claim_id, "title": v.title, "source": v.source, **_decision_columns(v)})
            continue
        rows += [{"claim": v.claim_id, "check": p.check, "level": p.level, "n_seeds": p.n_seeds,
                  **_decision_columns(p)} for p in v.parts]
    return pd.DataFrame(rows)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(verdicts: Sequence[Verdict], *, reproduce: str | None = None,
                    figures: Mapping[str, str] | None = None) -> str:
    """A Markdown table of the verdicts, then each claim's one-line reason.

    ``reproduce``: the command that recomputes the table (``{claim}`` is replaced by the claim id);
    ``figures``: claim id → the report figure or table that shows the evidence.
    """
    header = ["Claim", "Statistic", "Estimate [CI]", "n", "Verdict", "Source"]
    header += ["Evidence"] if figures else []
    header += ["Reproduce"] if reproduce else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for v in verdicts:
        verdict = v.verdict if v.decidable else f"{v.verdict} ({NOT_DECIDABLE})"
        ci = f"{_fmt(v.estimate)} [{_fmt(v.low)}, {_fmt(v.high)}] ({v.confidence:.0%})"
        p = f", p = {v.p_value:.3g}" if v.p_value is not None else ""
        row = [f"**{v.claim_id}** {v.title}", v.statistic, ci + p, f"{v.n_pairs} {v.unit}", verdict, v.source or ""]
        row += [(figures or {}).get(v.claim_id, "")] if figures else []
        row += [f"`{reproduce.replace('{claim}', v.claim_id)}`"] if reproduce else []
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    lines.append("")
    lines += [f"- **{v.claim_id}** ({v.verdict}): {_cell(v.reason)}" for v in verdicts]
    return "\n".join(lines) + "\n"
