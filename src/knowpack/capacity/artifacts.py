"""The capacity folder's own files: ``capacity.json`` (every search in full) and ``capacity.csv``.

``capacity.csv`` has one row per arm (method × rank): the n found, which limit bound it, the
reliability and every harm at n found with the bound that decided it, and the bits the adapter
wrote and destroyed there, per trainable parameter.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from knowpack.capacity.bits import ALLEN_ZHU_LI_BITS_PER_PARAMETER
from knowpack.capacity.search import RELIABILITY, CapacitySearchResult
from knowpack.capacity.spec import HARM_MEANINGS, HARMS, arm_label
from knowpack.report.stats import t_interval
from knowpack.schema import JsonArtifact

WRITER = "knowpack capacity"
CSV_NAME = "capacity.csv"
# Per-seed bits columns averaged at n found (names as in results.csv).
BITS_COLUMNS = ("bits_written", "bits_destroyed", "bits_per_parameter", "em_bits_per_parameter", "facts_learned",
                "facts_per_parameter")


class ArmResult(BaseModel):
    """One arm's search: its settings, the search result and every trial's per-seed values."""

    method: str
    rank: int | None  # None: full fine-tuning, which has no rank
    trainable_parameters: int | None
    n_max_searched: int  # the spec's n_max, lowered when the base probe has fewer facts
    search: CapacitySearchResult
    trials: list[dict[str, Any]]  # knowpack.capacity.trials.as_json, in the order they were run
    cells: list[str] = Field(default_factory=list)
    seconds: float = 0.0  # compute of the arm's cells (trained and evaluated, summed over stages)

    def trial(self, n: int | None) -> dict[str, Any] | None:
        return next((t for t in self.trials if t["n"] == n), None)


class CapacityResults(JsonArtifact):
    """``capacity.json``: the capacity spec as run and every arm's search."""

    file_name = "capacity.json"
    writer = WRITER

    name: str
    model: str
    spec: dict[str, Any]
    reliability: float | None
    budgets: dict[str, float]
    confidence: float
    arms: list[ArmResult]
    started: str = ""
    finished: str = ""
    seconds: float = 0.0


def _bound(values: list[float], kind: str, confidence: float) -> tuple[float, float]:
    """(mean, decisive bound) over seeds, as the search decides: low end for targets, high for budgets."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    iv = t_interval(values, confidence)
    if iv.n == 1:
        return iv.mean, iv.mean
    return iv.mean, iv.low if kind == "target" else iv.high


def _mean(values: list[Any]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def arm_row(arm: ArmResult, results: CapacityResults) -> dict[str, Any]:
    """One capacity.csv row (values at n found are NaN when no n passed)."""
    search, params = arm.search, arm.trainable_parameters
    row: dict[str, Any] = {
        "method": arm.method, "rank": arm.rank, "trainable_parameters": params, "n_found": search.n_found,
        "status": search.status, "bound_by": ";".join(search.bound_by), "first_failure": search.first_failure,
        "n_max_searched": arm.n_max_searched,
    }
    trial = arm.trial(search.n_found) or {"values": {}, "harms": {}}
    seeds = list(trial["values"])
    mean, bound = _bound([trial["values"][s]["reliability"] for s in seeds], "target", results.confidence)
    row.update(reliability_mean=mean, reliability_bound=bound, reliability_target=results.reliability)
    for harm in HARMS:
        mean, bound = _bound([trial["harms"][s][harm] for s in seeds], "budget", results.confidence)
        row.update({f"{harm}_mean": mean, f"{harm}_bound": bound, f"{harm}_budget": results.budgets.get(harm)})
    for column in BITS_COLUMNS:
        row[column] = _mean([trial["values"][s].get(column) for s in seeds])
    row["net_bits"] = row["bits_written"] - row["bits_destroyed"]
    row["n_per_parameter"] = search.n_found / params if params else math.nan
    row["limits_failed"] = failed_limits(arm)  # why it stopped, even when no n passed
    row["trials_used"] = search.trials_used
    row["seconds"] = arm.seconds
    return row


def capacity_frame(results: CapacityResults) -> pd.DataFrame:
    """capacity.csv as a DataFrame, arms in the order they were searched."""
    return pd.DataFrame([arm_row(arm, results) for arm in results.arms])


def _check_words(check: dict[str, Any] | Any) -> str:
    check = check if isinstance(check, dict) else check.model_dump()
    side = "lower bound" if check["kind"] == "target" else "upper bound"
    bound = "value (one seed)" if check["bound_is_value"] else side
    relation = "below the target" if check["kind"] == "target" else "above the budget"
    what = "reliability" if check["name"] == RELIABILITY else check["name"].replace("_", " ")
    return f"{what} {bound} {check['bound']:.4g} {relation} {check['limit']:.4g}"


def failed_limits(arm: ArmResult) -> str:
    """The limits that failed at the arm's first failure, in words with their bounds ("" if none failed)."""
    search = arm.search
    failure = next((t for t in search.trials if t.n == search.first_failure), None)
    return "; ".join(_check_words(c) for c in failure.checks if not c.passed) if failure else ""


def describe_arm(arm: ArmResult) -> str:
    """One paragraph in words: how many facts the arm holds and which limit stopped it."""
    search = arm.search
    params = f"{arm.trainable_parameters:,} trainable parameters" if arm.trainable_parameters else "parameters unknown"
    head = f"{arm_label(arm.method, arm.rank)} ({params}): "
    if search.status == "n_max_reached":
        text = (f"every trial passed up to n = {arm.n_max_searched} (the largest n searched), so it holds at "
                f"least {search.n_found} facts; no limit was reached")
    else:
        reasons = failed_limits(arm)
        held = (f"holds {search.n_found} facts" if search.n_found
                else f"fails already at n = {search.first_failure}, the smallest n tried")
        text = f"{held}; at n = {search.first_failure} {reasons}"
        if search.n_found:
            text += f" (the boundary lies between {search.n_found} and {search.first_failure})"
    notes = [n for n in search.notes if not n.startswith("every trial passed")]
    return head + text + f"; {search.trials_used} trial(s)." + ("".join(f" Note: {n}." for n in notes))


def harm_legend() -> str:
    """What each harm measures, for the report's note."""
    return "; ".join(f"{name.replace('_', ' ')}: {meaning}" for name, meaning in HARM_MEANINGS.items())


REFERENCE_NOTE = (f"The dashed line on the bits plot is {ALLEN_ZHU_LI_BITS_PER_PARAMETER:g} bits per parameter, "
                  "the knowledge capacity Allen-Zhu & Li measured for fully trained language models.")
