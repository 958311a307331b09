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
from knowpack.capacity.search import RELIABILITY, CapacitySearchResult, keeps_limit
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
    command: str = ""  # how to rerun this search (spec file, CLI options, --set overrides); "" in older files


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


def trial_bits(trial: dict[str, Any] | None, suffix: str = "") -> dict[str, float]:
    """Bits and facts of one trial (an ``ArmResult.trials`` entry), means over its seeds; NaN without the
    trial or the measure. ``suffix`` is appended to every column name."""
    trial = trial or {"values": {}}
    seeds = list(trial["values"])
    row = {f"{column}{suffix}": _mean([trial["values"][s].get(column) for s in seeds]) for column in BITS_COLUMNS}
    row[f"net_bits{suffix}"] = row[f"bits_written{suffix}"] - row[f"bits_destroyed{suffix}"]
    return row


def arm_row(arm: ArmResult, results: CapacityResults) -> dict[str, Any]:
    """One capacity.csv row (values at n found are NaN when no n passed).

    The bits of the first failing trial are columns too (``*_at_failure``): they say what the adapter
    wrote and destroyed just past its limit, so an arm that failed already at n_min has numbers as well.
    """
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
    row.update(trial_bits(trial))
    row["n_per_parameter"] = search.n_found / params if params else math.nan
    row["limits_failed"] = failed_limits(arm)  # why it stopped, even when no n passed
    row.update(trial_bits(arm.trial(search.first_failure), "_at_failure"))
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
    words = f"{what} {bound} {check['bound']:.4g} {relation} {check['limit']:.4g}"
    mean_keeps = keeps_limit(check["mean"], check["kind"], check["limit"])
    if not check["passed"] and mean_keeps and not check["bound_is_value"]:
        # The mean alone would pass: the seeds disagree too much to show the limit is kept.
        words += f" (mean {check['mean']:.4g} within it: the spread over seeds decided)"
    return words


def failed_limits(arm: ArmResult) -> str:
    """The limits that failed at the arm's first failure, in words with their bounds ("" if none failed)."""
    search = arm.search
    failure = next((t for t in search.trials if t.n == search.first_failure), None)
    return "; ".join(_check_words(c) for c in failure.checks if not c.passed) if failure else ""


def _bits_words(arm: ArmResult, n: int | None) -> str:
    """" At n = 8 the adapters wrote … bits and destroyed …" (mean over seeds), or "" without the measure."""
    bits = trial_bits(arm.trial(n))
    if n is None or not math.isfinite(bits["net_bits"]):
        return ""
    per = (f" = {bits['net_bits'] / arm.trainable_parameters:.2g} bits per trainable parameter"
           if arm.trainable_parameters else "")
    return (f" At n = {n} the adapters wrote {bits['bits_written']:.1f} likelihood bits and destroyed "
            f"{bits['bits_destroyed']:.1f} (mean over seeds; net {bits['net_bits']:.1f}{per}).")


def describe_arm(arm: ArmResult) -> str:
    """One paragraph in words: how many facts the arm holds, which limit stopped it, and the bits there
    (at n found, else at the first failure)."""
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
    bits = _bits_words(arm, search.n_found if search.n_found else search.first_failure)
    return head + text + f"; {search.trials_used} trial(s)." + bits + "".join(f" Note: {n}." for n in notes)


def harm_legend() -> str:
    """What each harm measures, for the report's note."""
    return "; ".join(f"{name.replace('_', ' ')}: {meaning}" for name, meaning in HARM_MEANINGS.items())


REFERENCE_NOTE = (f"The dotted line on the bits-per-parameter plot is {ALLEN_ZHU_LI_BITS_PER_PARAMETER:g} bits per "
                  "parameter, the knowledge capacity Allen-Zhu & Li measured for fully trained language models.")
