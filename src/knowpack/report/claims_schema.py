"""The claim file language: hypotheses about a study, written down before the study runs.

A claim file is YAML::

    claims:
      - id: C2
        title: Paraphrases make learning faster than no augmentation
        source: Fig. 2
        checks:
          - metric: {epochs_to: {column: reliability, at_least: 0.9}}
            cells: {kind: paraphrase, extra: {gt: 0}}     # group A
            baseline: {extra: 0}                          # group B, paired with A ...
            pair_on: [unknown, seed]                      # ... at the same n and seed
            expect: {less_than: 0}                        # A − B < 0
            rule: {statistic: seed_t, alpha: 0.05, min_seeds: 3}

Every part of the decision — metric, groups, pairing, claimed side or trend, statistic, alpha and
the least evidence accepted — is in the file, so a verdict cannot be tuned after seeing results.
A claim holds when every one of its checks holds; ``for_each`` makes a check hold for every
level of some columns (e.g. every n), not only on average. ``requires`` states what the data must
show for a check to be able to tell at all (e.g. ``refusal_rate_base > 0`` before "refuses less"):
when it fails, the check is undecided with that reason rather than decided by a floor effect.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from knowpack.errors import KnowpackError
from knowpack.io import load_yaml
from knowpack.schema import StrictModel, invalid, validation_problems

# "max" / "min" stand for the largest / smallest value of a numeric column in the study grid,
# so one claim file fits grids of any size ("n = max" is "the largest n this study ran").
GridNumber = Union[float, Literal["max", "min"]]
GRID_EXTREMES = ("max", "min")
CLAIM_FILE_HINT = "fix the claim file (see knowpack/report/claims/paper.yaml for a complete example)"


def _scalar(column: str, value: Any) -> Any:
    """A value a cell's column can equal; YAML's ``true`` is refused (it would match k = 1)."""
    ok = isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                     and math.isfinite(value))
    if not ok:
        raise ValueError(f"{column}: expected a value, a list of values or a condition such as "
                         f"{{gt: 0}}, got {value!r}")
    return value


class Condition(StrictModel):
    """Conditions on one column; every operator given must hold (``{gt: 0, le: 100}`` is a range)."""

    eq: str | float | None = None
    ne: str | float | None = None
    gt: GridNumber | None = None
    ge: GridNumber | None = None
    lt: GridNumber | None = None
    le: GridNumber | None = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Condition:
        if not self.operators():
            raise ValueError("a condition needs an operator: eq, ne, gt, ge, lt, le, in or not_in")
        for name in ("in", "not_in"):
            for value in self.operators().get(name, []):
                _scalar(name, value)
        return self

    def operators(self) -> dict[str, Any]:
        """The operators that are set, by their YAML name."""
        return {("in" if name == "in_" else name): value
                for name, value in self.__dict__.items() if value is not None}


# A selector maps a results column to a value (equality), a list (membership) or a Condition.
Selector = dict[str, Any]


def _selector(selector: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate each column's value; conditions become :class:`Condition` objects."""
    if selector is None:
        return None
    out: dict[str, Any] = {}
    for column, value in selector.items():
        if isinstance(value, dict):
            try:
                out[column] = Condition.model_validate(value)
            except ValidationError as exc:
                raise ValueError("; ".join(validation_problems(exc, column))) from None
        elif isinstance(value, list):
            out[column] = [_scalar(column, v) for v in value]
        else:
            out[column] = _scalar(column, value)
    return out


# ---------------------------------------------------------------------------------------------
# Metrics: what one cell (or one pair of cells) contributes.

class ColumnMetric(StrictModel):
    """A results column as it is, e.g. ``reliability``."""

    column: str

    def columns(self) -> list[str]:
        return [self.column]

    def label(self) -> str:
        return self.column


class DropMetric(StrictModel):
    """``<name>_base − <name>``: how much fine-tuning lowered a score (positive = a loss)."""

    drop: str

    def columns(self) -> list[str]:
        return [f"{self.drop}_base", self.drop]

    def label(self) -> str:
        return f"{self.drop} drop (base − adapted)"


class DifferenceMetric(StrictModel):
    """Within-cell difference of two columns, first − second (e.g. adapted − base refusal rate)."""

    difference: tuple[str, str]

    def columns(self) -> list[str]:
        return list(self.difference)

    def label(self) -> str:
        return f"{self.difference[0]} − {self.difference[1]}"


class EpochsTo(StrictModel):
    column: str = "reliability"
    at_least: float


class EpochsToMetric(StrictModel):
    """First epoch whose curve value reaches ``at_least`` (from the per-epoch learning curves).

    A cell that never reaches it counts as its last epoch + 1: a lower bound on the true value,
    so a slow mixture is never dropped from the comparison for being too slow.
    """

    epochs_to: EpochsTo

    def columns(self) -> list[str]:
        return []

    def label(self) -> str:
        return f"epochs to {self.epochs_to.column} ≥ {self.epochs_to.at_least:g}"


class OutcomeMetric(StrictModel):
    """Per held-out fact: did it shift (``positive`` / ``negative``)? Paired by fact between cells."""

    outcome: Literal["positive", "negative"]

    def columns(self) -> list[str]:
        return []

    def label(self) -> str:
        return f"{self.outcome} shift rate of shared held-out facts"


_METRIC_KEYS = ("column", "drop", "difference", "epochs_to", "outcome")


def _metric_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((k for k in _METRIC_KEYS if k in value), None)
    return next((k for k in _METRIC_KEYS if hasattr(value, k)), None)


Metric = Annotated[
    Union[Annotated[ColumnMetric, Tag("column")], Annotated[DropMetric, Tag("drop")],
          Annotated[DifferenceMetric, Tag("difference")], Annotated[EpochsToMetric, Tag("epochs_to")],
          Annotated[OutcomeMetric, Tag("outcome")]],
    Discriminator(_metric_tag, custom_error_type="metric_kind",
                  custom_error_message="a metric is a column name or one of {column: …}, {drop: …}, "
                                       "{difference: [a, b]}, {epochs_to: {…}}, {outcome: …}"),
]


# ---------------------------------------------------------------------------------------------
# What is claimed: a side of a threshold, or a trend.

class Threshold(StrictModel):
    """The estimate lies on one side of a number (exactly one of the four keys)."""

    greater_than: float | None = None
    at_least: float | None = None
    less_than: float | None = None
    at_most: float | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Threshold:
        given = [k for k, v in self.__dict__.items() if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of greater_than, at_least, less_than, at_most")
        return self

    @property
    def operator(self) -> str:
        return next(k for k, v in self.__dict__.items() if v is not None)

    @property
    def value(self) -> float:
        return float(getattr(self, self.operator))

    def holds(self, value: float) -> bool:
        """Whether one number lies on the stated side (a point, not an interval: see claims.decide)."""
        t = self.value
        return {"greater_than": value > t, "at_least": value >= t, "less_than": value < t,
                "at_most": value <= t}[self.operator]

    def text(self) -> str:
        symbol = {"greater_than": ">", "at_least": "≥", "less_than": "<", "at_most": "≤"}[self.operator]
        return f"{symbol} {self.value:g}"


class Trend(StrictModel):
    """The metric rises (or falls) with an axis, measured within each seed (exactly one direction)."""

    increases_with: str | None = None
    decreases_with: str | None = None
    scale: Literal["log", "linear"] = "log"
    measure: Literal["slope", "spearman"] = "slope"

    @model_validator(mode="after")
    def _one_direction(self) -> Trend:
        if (self.increases_with is None) == (self.decreases_with is None):
            raise ValueError("give exactly one of increases_with, decreases_with")
        return self

    @property
    def axis(self) -> str:
        return self.increases_with or self.decreases_with  # type: ignore[return-value]

    def threshold(self) -> Threshold:
        """A trend claim is a claim on the sign of its slope or rank correlation."""
        return Threshold(greater_than=0.0) if self.increases_with else Threshold(less_than=0.0)


def _expect_tag(value: Any) -> str:
    keys = value.keys() if isinstance(value, dict) else vars(value).keys()
    return "trend" if {"increases_with", "decreases_with"} & set(keys) else "threshold"


Expect = Annotated[Union[Annotated[Threshold, Tag("threshold")], Annotated[Trend, Tag("trend")]],
                   Discriminator(_expect_tag)]


class Rule(StrictModel):
    """How a check is decided: the statistic, its CI level (1 − alpha) and the least evidence.

    ``seed_t``: a Student-t interval over seeds of the per-seed value (the mean over the seed's
    cells or matched pairs, or the seed's slope for a trend). ``fact_bootstrap``: a percentile
    bootstrap over held-out facts that paired cells share, pooled over seeds, with the exact
    McNemar p-value beside it.
    """

    statistic: Literal["seed_t", "fact_bootstrap"] = "seed_t"
    alpha: float = Field(0.05, gt=0, lt=0.5)
    min_seeds: int = Field(3, ge=2, description="fewest seeds a seed_t check accepts")
    min_facts: int = Field(20, ge=1, description="fewest shared facts a fact_bootstrap check accepts")
    n_boot: int = Field(10_000, ge=100)
    bootstrap_seed: int = 0

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha


class Requirement(StrictModel):
    """A condition on the data without which a check cannot tell its answer, e.g. "the base model
    refuses at all" for "fine-tuned models refuse less": a floor effect is not evidence either way.

    ``column``'s mean over the check's ``cells`` must satisfy ``expect``; otherwise the check is
    undecided and says ``reason`` (not contradicted by a difference that could not have been negative).
    """

    column: str
    expect: Threshold
    reason: str = Field(min_length=1)


class Check(StrictModel):
    """One test of a claim: a metric on group A (``cells``), optionally minus a paired group B."""

    label: str | None = None
    metric: Metric
    cells: Selector = Field(default_factory=dict)
    baseline: Selector | None = None
    pair_on: list[str] = Field(default_factory=lambda: ["unknown", "seed"])
    for_each: list[str] = Field(default_factory=list)
    expect: Expect
    rule: Rule = Field(default_factory=Rule)
    optional: bool = Field(False, description="skip (not fail) when the study did not measure the metric")
    requires: list[Requirement] = Field(default_factory=list,
                                        description="conditions on the data without which the check is undecided")

    @field_validator("metric", mode="before")
    @classmethod
    def _column_shorthand(cls, value: Any) -> Any:
        return {"column": value} if isinstance(value, str) else value

    @field_validator("cells", "baseline", mode="before")
    @classmethod
    def _valid_selector(cls, value: Any) -> Any:
        return _selector(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _consistent(self) -> Check:
        for problem in _check_problems(self):
            raise ValueError(problem)
        return self

    def name(self, position: int) -> str:
        return self.label or f"check {position}"


def _check_problems(check: Check) -> list[str]:
    """Combinations that have no meaning, found before any data is read."""
    per_fact = isinstance(check.metric, OutcomeMetric)
    problems = []
    if per_fact != (check.rule.statistic == "fact_bootstrap"):
        problems.append("per-fact outcome metrics go with rule.statistic: fact_bootstrap, and only they")
    if per_fact and check.baseline is None:
        problems.append("a per-fact outcome check compares two groups: give a baseline")
    if isinstance(check.expect, Trend):
        if per_fact:
            problems.append("a trend is measured over seeds; it cannot use per-fact outcomes")
        if check.expect.axis in check.for_each:
            problems.append(f"the trend axis {check.expect.axis!r} cannot also be in for_each")
    if check.baseline is not None and not per_fact and "seed" not in check.pair_on:
        problems.append("seed_t pairs cells within a seed: pair_on must include seed")
    if "key" in check.pair_on:
        problems.append("pair_on names what two different cells share; a cell's key is its own")
    if len(set(check.pair_on)) != len(check.pair_on) or len(set(check.for_each)) != len(check.for_each):
        problems.append("pair_on and for_each must not repeat a column")
    return problems


class Claim(StrictModel):
    """A hypothesis in words (``title``), where it comes from, and the checks that decide it."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    title: str = Field(min_length=1)
    source: str | None = Field(None, description="where the claim is shown, e.g. 'Table 2'")
    checks: list[Check] = Field(min_length=1)


class ClaimFile(StrictModel):
    claims: list[Claim] = Field(min_length=1)

    @field_validator("claims")
    @classmethod
    def _unique_ids(cls, claims: list[Claim]) -> list[Claim]:
        seen: set[str] = set()
        repeated = sorted({c.id for c in claims if c.id in seen or seen.add(c.id)})
        if repeated:
            raise ValueError(f"claim ids must be unique; repeated: {repeated}")
        return claims


# ---------------------------------------------------------------------------------------------
# Loading.

def parse_claims(text: str, *, source: str = "claim file") -> list[Claim]:
    """Validate claim-file YAML text; every problem is one KnowpackError naming ``source``."""
    try:
        data = load_yaml(text)  # duplicate keys refused: plain YAML keeps the last one without a word
    except yaml.YAMLError as exc:
        raise KnowpackError(f"{source} is not valid YAML: {exc}", hint=CLAIM_FILE_HINT) from None
    if not isinstance(data, dict):
        raise KnowpackError(f"{source} must hold a mapping with a `claims:` list", hint=CLAIM_FILE_HINT)
    try:
        return ClaimFile.model_validate(data).claims
    except ValidationError as exc:
        raise invalid(source, exc, hint=CLAIM_FILE_HINT) from None


def load_claims(path: str | Path) -> list[Claim]:
    """Read and validate a claim file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KnowpackError(f"claim file not found: {path}", hint="pass a YAML claim file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowpackError(f"cannot read claim file {path}: {exc}", hint="pass a UTF-8 YAML file") from None
    return parse_claims(text, source=f"claim file {path}")


def paper_claims() -> list[Claim]:
    """The paper's six headline claims as shipped with knowpack (``claims/paper.yaml``)."""
    from importlib import resources

    text = resources.files("knowpack.report").joinpath("claims", "paper.yaml").read_text(encoding="utf-8")
    return parse_claims(text, source="knowpack's claims/paper.yaml")
