"""The capacity spec: a study spec whose grid the capacity search sets, plus a ``capacity:`` section.

``knowpack capacity CONFIG.yaml`` reads the same sections as a study (model, facts, probe, mix,
train, eval, out) and a ``capacity:`` section naming the arms (methods × ranks), the limits and
the search range. Every trial of the search is an ordinary study grid over the same folder, so
the spec is validated once here, with every problem listed, before the first training.
"""

from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, StrictFloat, ValidationError, field_validator, model_validator

from knowpack.capacity.search import CapacitySearchConfig
from knowpack.errors import KnowpackError
from knowpack.mix.config import KINDS
from knowpack.schema import StrictModel, validation_problems
from knowpack.study.spec import StudySpec, apply_overrides, known_values, non_empty_unique, read_yaml
from knowpack.train.config import MAX_FULL_LR, METHODS

# Harm name in the search -> the capacity option that sets its budget.
HARMS = {"negative_shift": "max_negative_shift", "mmlu_drop": "max_mmlu_drop", "refusal_change": "max_refusal_change"}
HARM_MEANINGS = {
    "negative_shift": "share of held-out facts that degraded beyond the control adapter (same seed)",
    "mmlu_drop": "MMLU accuracy of the base model minus that of the adapted model",
    "refusal_change": "refusal rate of the adapted model minus that of the base model",
}


def arm_label(method: str, rank: int | None) -> str:
    """How an arm is named in logs and reports: "lora rank 4", or "full" (no rank)."""
    return method if rank is None else f"{method} rank {rank}"


class CapacitySection(StrictModel):
    """``capacity:``: the arms searched, the limits every trial must meet, and the range of n."""

    ranks: list[int] = Field(default_factory=lambda: [1, 4, 16], description="adapter ranks searched")
    methods: list[str] = Field(default_factory=lambda: ["lora"], description="PEFT methods: " + ", ".join(METHODS))
    full_lr: float = Field(5e-5, gt=0, le=MAX_FULL_LR,
                           description="learning rate of the full fine-tuning arm (method full; it has no rank, and "
                                       "the LoRA presets' rates would wreck a whole model)")
    reliability: float | None = Field(0.95, ge=0, le=1, description="target for the lower bound of reliability")
    max_negative_shift: StrictFloat | None = Field(
        None, description="budget: negative shift of held-out facts beyond the control adapter")
    max_mmlu_drop: StrictFloat | None = Field(None, description="budget: MMLU accuracy drop (base - adapted)")
    max_refusal_change: StrictFloat | None = Field(None, description="budget: refusal rate change (adapted - base)")
    kind: str = Field("paraphrase", description="kind of the extra items of every trial cell")
    extra: int = Field(0, ge=0, description="k: extra items per Unknown fact")
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], description="seeds of every trial")
    n_min: int = Field(2, ge=1, description="first n tried")
    n_max: int = Field(256, ge=1, description="n is never tried above this")
    growth: float = Field(2.0, gt=1, description="factor between successive n while trials pass")
    resolution: int = Field(1, ge=1, description="stop bisecting when first failure - last pass <= this")
    relative_resolution: float | None = Field(None, gt=0, lt=1, description="also stop at this share of n")
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the t-interval over seeds")
    check_above_failure: int = Field(0, ge=0, description="extra trials above the first failure")
    controls: bool | None = Field(
        None, description="train a control adapter per seed; default: only when max_negative_shift is given "
                          "(the only harm measured against it), which halves the trainings otherwise")

    @field_validator("ranks", "methods", "seeds")
    @classmethod
    def _non_empty_unique(cls, value: list) -> list:
        return non_empty_unique(value)

    @field_validator("ranks")
    @classmethod
    def _positive_ranks(cls, value: list[int]) -> list[int]:
        if any(r < 1 for r in value):
            raise ValueError(f"every rank must be >= 1, got {value}")
        return value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        return known_values(value, METHODS, "method")

    @field_validator("kind")
    @classmethod
    def _treatment_kind(cls, value: str) -> str:
        choices = [k for k in KINDS if k != "control"]
        if value not in choices:
            raise ValueError(f"unknown kind {value!r}; choose from {choices} (every trial gets its control itself)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "CapacitySection":
        if self.n_min > self.n_max:
            raise ValueError(f"n_max ({self.n_max}) is below n_min ({self.n_min})")
        if self.reliability is None and not self.budgets():
            raise ValueError("no limit given: set reliability or at least one max_* budget")
        if self.controls is False and self.max_negative_shift is not None:
            raise ValueError("max_negative_shift is measured against the control adapters: controls must be on")
        return self

    def with_controls(self) -> bool:
        """Whether every trial cell gets its control cell."""
        return self.controls if self.controls is not None else self.max_negative_shift is not None

    def budgets(self) -> dict[str, float]:
        """Harm name -> budget, for the budgets that were given (only they are checked)."""
        return {harm: getattr(self, option) for harm, option in HARMS.items() if getattr(self, option) is not None}

    def arms(self) -> list[tuple[str, int | None]]:
        """(method, rank) per arm: every rank of a PEFT method; full fine-tuning once, without a rank."""
        return [(method, rank) for method in self.methods for rank in ([None] if method == "full" else self.ranks)]

    def search_config(self, n_max: int | None = None) -> CapacitySearchConfig:
        """The search settings of one arm; ``n_max`` lowers the range (e.g. to what the probe found)."""
        return CapacitySearchConfig(
            reliability=self.reliability, budgets=self.budgets(), n_min=self.n_min,
            n_max=self.n_max if n_max is None else n_max, growth=self.growth, resolution=self.resolution,
            relative_resolution=self.relative_resolution, confidence=self.confidence,
            check_above_failure=self.check_above_failure)


class CapacitySpec(StudySpec):
    """A study spec without ``grid`` (each trial sets it) and with a ``capacity:`` section."""

    name: str = Field("capacity", min_length=1)
    grid: None = Field(None, description="set by the search: one grid per trial")
    claims: str | None = Field(None, description="claims the report decides (capacity runs decide none by default)")
    capacity: CapacitySection = Field(default_factory=CapacitySection)

    @field_validator("grid", mode="before")
    @classmethod
    def _no_grid(cls, value: Any) -> None:
        if value is not None:
            raise ValueError("a capacity spec has no grid: the search sets n, seeds, ranks and methods "
                             "(use the capacity: section)")
        return None


@dataclass
class CapacityRun:
    """A validated capacity spec plus the raw dict every trial's study is built from, and the file,
    CLI options and ``--set`` overrides it was made from (to say how to rerun it)."""

    spec: CapacitySpec
    raw: dict[str, Any]
    source: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    def command(self) -> str:
        """The ``knowpack capacity`` command that makes this run again: the spec file, every option given
        on the command line and every override (a report that dropped them would rerun another search)."""
        parts = ["knowpack", "capacity"] + ([str(self.source)] if self.source is not None else [])
        for key, value in sorted(self.options.items()):  # one order, however the options were given
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            parts += [f"--{key.replace('_', '-')}", text]
        for override in self.overrides:
            parts += ["--set", override]
        return " ".join(shlex.quote(part) for part in parts)

    @property
    def out_dir(self) -> Path:
        return Path(self.spec.out) if self.spec.out else Path("runs") / self.spec.name

    @property
    def section(self) -> CapacitySection:
        return self.spec.capacity


def _raise_invalid(problems: list[str], source: Path | None) -> None:
    where = f" in {source}" if source else ""
    raise KnowpackError(f"invalid capacity spec{where}:\n" + "\n".join(f"  {p}" for p in problems),
                        hint="fix the keys named above (see configs/capacity.yaml for a complete example)")


def parse_capacity(raw: dict[str, Any], *, source: Path | None = None, overrides: list[str] | None = None,
                   options: dict[str, Any] | None = None) -> CapacityRun:
    """Validate a raw capacity spec after ``--set`` overrides and CLI options (which win).

    ``options`` holds top-level keys (model, out, name) and ``capacity:`` keys; only given ones.
    Every cell of the first trial is checked too, so a bad train/mix/eval key fails here.
    """
    data = apply_overrides(raw, list(overrides or []))
    data = copy.deepcopy(data)
    for key, value in (options or {}).items():
        if key in CapacitySpec.model_fields and key != "capacity":
            data[key] = value
        else:
            data.setdefault("capacity", {})
            if not isinstance(data["capacity"], dict):
                _raise_invalid(["capacity: must be a mapping"], source)
            data["capacity"][key] = value
    try:
        spec = CapacitySpec.model_validate(data)
    except ValidationError as exc:
        _raise_invalid(validation_problems(exc), source)
    run = CapacityRun(spec=spec, raw=data, source=source, options=dict(options or {}),
                      overrides=list(overrides or []))
    _check_trial_cells(run)
    return run


def load_capacity(path: str | Path | None, *, overrides: list[str] | None = None,
                  options: dict[str, Any] | None = None) -> CapacityRun:
    """Read a capacity YAML (or start from defaults when ``path`` is None) and validate it."""
    raw = read_yaml(path) if path is not None else {}
    return parse_capacity(raw, source=Path(path) if path is not None else None, overrides=overrides,
                          options=options)


def _check_trial_cells(run: CapacityRun) -> None:
    """Build the first trial's study for every arm: stage configs, metrics and subjects are checked."""
    from knowpack.capacity.trials import trial_study

    problems: list[str] = []
    for method, rank in run.section.arms():
        try:
            trial_study(run, run.section.n_min, method=method, rank=rank)
        except KnowpackError as exc:
            problems += [p for p in exc.message.splitlines()[1:] or [exc.message]
                         if p.strip() and p.strip() not in [q.strip() for q in problems]]
    if problems:
        _raise_invalid([p.strip() for p in problems], run.source)
