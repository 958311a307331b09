"""One capacity trial: the study cells for n facts (every seed, with its control) and their harms.

A trial is an ordinary study grid run into the capacity folder, so its cells are content-addressed
like any study's: a trial an earlier search already ran (overlapping ranks, seeds, n) is read back
instead of retrained, and a killed search resumes inside the cell it stopped in.

Harms are per seed. The negative shift is counted *beyond the control*: the control adapter of the
same seed saw as many examples and steps of known facts only, so what it degrades is what
fine-tuning itself costs, not what the new facts cost. Controls are trained when that budget is
checked (or asked for); the other harms compare the adapted model with its own base.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from knowpack.capacity.search import TrialResult
from knowpack.capacity.spec import arm_label
from knowpack.errors import KnowpackError

if TYPE_CHECKING:
    from knowpack.capacity.spec import CapacityRun
    from knowpack.study.runner import Stages
    from knowpack.study.spec import Study

logger = logging.getLogger(__name__)

# Per-cell values a trial reads from results columns (knowpack.report.aggregate.METRIC_PATHS).
CELL_COLUMNS = ("reliability", "negative_shift", "mmlu_base", "mmlu", "refusal_rate", "refusal_rate_base",
                "trainable_parameters", "bits_written", "bits_destroyed", "bits_per_parameter",
                "em_bits_per_parameter", "facts_learned", "facts_per_parameter")


def trial_study(run: CapacityRun, n: int, *, method: str, rank: int | None) -> Study:
    """The study of one trial: n Unknown facts with the spec's (k, kind) and its control, every seed.

    The full fine-tuning arm (rank None) trains at the section's ``full_lr``.
    """
    from knowpack.study.plan import parse_study

    section = run.section
    raw = copy.deepcopy({k: v for k, v in run.raw.items() if k != "capacity"})
    raw.setdefault("name", run.spec.name)
    raw.setdefault("claims", None)
    raw["out"] = str(run.out_dir)
    kinds = [section.kind, "control"] if section.with_controls() else [section.kind]
    raw["grid"] = {"unknown": [n], "extra": [section.extra], "kind": kinds,
                   "seed": list(section.seeds), "method": [method]}
    if rank is not None:
        raw["grid"]["rank"] = [rank]
    if method == "full":
        raw["grid"]["lr"] = [section.full_lr]
    return parse_study(raw, source=run.source)


def harms_of(cell: dict[str, float], control: dict[str, float] | None) -> dict[str, float]:
    """The harms of one seed's cell, given its control cell (NaN where a measure or the control is missing)."""
    return {
        "negative_shift": cell["negative_shift"] - control["negative_shift"] if control else math.nan,
        "mmlu_drop": cell["mmlu_base"] - cell["mmlu"],
        "refusal_change": cell["refusal_rate"] - cell["refusal_rate_base"],
    }


@dataclass
class TrialDetails:
    """What one trial ran and measured, per seed (kept for capacity.json and capacity.csv)."""

    n: int
    cells: dict[int, str]  # seed -> cell key
    controls: dict[int, str]  # seed -> control cell key
    values: dict[int, dict[str, float]]  # seed -> the cell's CELL_COLUMNS
    harms: dict[int, dict[str, float]]  # seed -> harm name -> value
    seconds: float = 0.0  # compute spent on the trial's cells (their stage timings)

    def result(self, budgets: dict[str, float]) -> TrialResult:
        """Per-seed lists for the search; a budgeted harm that is missing for a seed is an error."""
        seeds = sorted(self.values)
        for name in budgets:
            missing = [s for s in seeds if not math.isfinite(self.harms[s][name])]
            if missing:
                raise KnowpackError(
                    f"capacity trial n={self.n}: {name} could not be measured for seed(s) {missing}",
                    hint=_MISSING_HINT.get(name, "check the evaluation settings of the spec"))
        reliability = [self.values[s]["reliability"] for s in seeds]
        return TrialResult(reliability=[v for v in reliability if math.isfinite(v)],
                           harms={name: [self.harms[s][name] for s in seeds] for name in budgets})


_MISSING_HINT = {
    "mmlu_drop": "add mmlu to eval.benchmarks, or drop --max-mmlu-drop",
    "negative_shift": "keep held-out facts (mix.heldout_per_category > 0), or drop --max-negative-shift",
}


def _cell_values(store, key: str) -> dict[str, float]:
    from knowpack.evaluate.artifacts import EvalMetrics
    from knowpack.report.aggregate import metric_values

    values = metric_values(EvalMetrics.read(store.cell(key).eval_dir))
    return {column: float(values.get(column, math.nan)) for column in CELL_COLUMNS}


def _failed(run, n: int) -> KnowpackError:
    lines = "\n".join(f"  {key}: {message}" for key, message in run.failed.items())
    return KnowpackError(f"capacity trial n={n}: {len(run.failed)} cell(s) failed:\n{lines}",
                         hint="see error.log in the cell folders; rerun the same command to retry them "
                              "(finished cells are reused)")


def read_trial(out_dir, cells, n: int) -> TrialDetails:
    """Pair every seed's cell with its control and read both evaluations."""
    from knowpack.study.store import StudyStore

    store = StudyStore(out_dir)
    treated = {c.axes["seed"]: c.key for c in cells if c.axes["kind"] != "control"}
    controls = {c.axes["seed"]: c.key for c in cells if c.axes["kind"] == "control"}
    values, harms, seconds = {}, {}, 0.0
    for seed, key in sorted(treated.items()):
        values[seed] = _cell_values(store, key)
        harms[seed] = harms_of(values[seed], _cell_values(store, controls[seed]) if seed in controls else None)
        for k in (key, controls.get(seed)):
            if k is not None:
                seconds += sum(store.cell(k).status().timings.values())
    return TrialDetails(n=n, cells=treated, controls=controls, values=values, harms=harms,
                        seconds=round(seconds, 3))


@dataclass
class ArmTrials:
    """The trial function of one arm (method × rank), with every trial it ran kept by n."""

    run: CapacityRun
    method: str
    rank: int | None
    stages: Stages | None = None
    progress: bool = True
    details: dict[int, TrialDetails] = field(default_factory=dict)
    cell_keys: list[str] = field(default_factory=list)

    def details_for(self, n: int) -> TrialDetails:
        """Run (or read back) the trial's cells; the runner skips cells that are already done."""
        from knowpack.study.runner import run_study

        if n not in self.details:
            logger.info("capacity %s: trial n=%d", arm_label(self.method, self.rank), n)
            study = trial_study(self.run, n, method=self.method, rank=self.rank)
            result = run_study(study, stages=self.stages, progress=self.progress)
            if result.failed:
                raise _failed(result, n)
            self.details[n] = read_trial(result.out_dir, result.cells, n)
            self.cell_keys += [c.key for c in result.cells if c.key not in self.cell_keys]
        return self.details[n]

    def trial(self, budgets: dict[str, float]) -> Callable[[int], TrialResult]:
        """``trial(n)`` for :func:`knowpack.capacity.search.search_capacity`."""
        return lambda n: self.details_for(n).result(budgets)

    def trainable_parameters(self) -> int | None:
        """The arm's trainable parameter count (the same for every n), from any evaluated cell."""
        for details in self.details.values():
            for values in details.values.values():
                if math.isfinite(values["trainable_parameters"]):
                    return int(values["trainable_parameters"])
        return None


def as_json(details: TrialDetails) -> dict[str, Any]:
    """A trial for capacity.json (seeds as strings: JSON object keys)."""
    def clean(table: dict[int, dict[str, float]]) -> dict[str, dict[str, float | None]]:
        return {str(s): {k: (v if math.isfinite(v) else None) for k, v in row.items()} for s, row in table.items()}

    return {"n": details.n, "cells": {str(s): k for s, k in details.cells.items()},
            "controls": {str(s): k for s, k in details.controls.items()},
            "values": clean(details.values), "harms": clean(details.harms), "seconds": details.seconds}
