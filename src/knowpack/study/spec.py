"""Study spec: one YAML file that nests the stage configs and names the grid to sweep.

The top level is validated here; each section is then validated by the stage's own config class
(ProbeConfig, MixConfig, TrainConfig, EvalConfig) so the study never duplicates stage defaults.
Every problem is reported as ``key.path: message`` in one KnowpackError, never a traceback.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from knowpack.errors import KnowpackError

KINDS = ("highly_known", "maybe_known", "paraphrase")
_MINIMUM = {"unknown": 1, "extra": 0}  # n >= 1 Unknown facts; k = 0 extra items is the plain mixture


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GridSpec(_Strict):
    """Axes of the sweep; every combination is one cell (``seed`` repeats a cell)."""

    unknown: list[int] = Field(description="numbers of Unknown facts to pack (n)")
    extra: list[int] = Field(default_factory=lambda: [0], description="extra items per Unknown fact (k)")
    kind: list[str] = Field(default_factory=lambda: ["paraphrase"], description="kind of extra items")
    seed: list[int] = Field(default_factory=lambda: [42])
    rank: list[int] | None = None
    lr: list[float] | None = None
    loss: list[str] | None = None
    preset: list[str] | None = None

    @field_validator("unknown", "extra", "kind", "seed", "rank", "lr", "loss", "preset")
    @classmethod
    def _non_empty_unique(cls, value: list | None) -> list | None:
        if value is None:
            return value
        if not value:
            raise ValueError("must not be empty")
        if len(set(value)) != len(value):
            raise ValueError(f"has repeated values: {value}")
        return value

    @field_validator("unknown", "extra")
    @classmethod
    def _at_least(cls, value: list[int], info: ValidationInfo) -> list[int]:
        least = _MINIMUM[info.field_name]
        if any(v < least for v in value):
            raise ValueError(f"every value must be >= {least}")
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in KINDS]
        if bad:
            raise ValueError(f"unknown kind(s) {bad}; choose from {list(KINDS)}")
        return value


class StudySpec(_Strict):
    """Top level of a study YAML. Stage sections stay dicts here and are validated by their stage."""

    name: str = Field(min_length=1)
    model: str = "default"
    facts: str = "default"
    facts_sample: int | None = Field(default=None, ge=1)
    paraphrases: str | None = Field(default=None, description="fact file from `knowpack paraphrase` (k > 2 paraphrases)")
    probe: dict[str, Any] = Field(default_factory=dict)
    mix: dict[str, Any] = Field(default_factory=dict)
    grid: GridSpec
    train: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)
    out: str | None = None


@dataclass
class Study:
    """A validated study: the raw spec plus the stage configs shared by every cell."""

    spec: StudySpec
    probe: Any  # knowpack.probe.config.ProbeConfig
    eval: Any  # knowpack.evaluate.config.EvalConfig
    source: Path | None = None
    overrides: list[str] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        """Study folder: ``out`` from the spec (relative to the working directory) or runs/<name>."""
        return Path(self.spec.out) if self.spec.out else Path("runs") / self.spec.name

    @property
    def train_preset(self) -> str:
        return str(self.spec.train.get("preset", "smollm2"))

    @property
    def train_overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.spec.train.items() if k != "preset"}


def format_errors(error: ValidationError, prefix: str = "") -> list[str]:
    """Turn a pydantic error into ``key.path: message`` lines (prefix = the section's own path)."""
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in (prefix.split(".") if prefix else []) + list(item["loc"]))
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def _raise(problems: list[str], source: Path | None) -> None:
    where = f" in {source}" if source else ""
    raise KnowpackError(
        f"invalid study spec{where}:\n" + "\n".join(f"  {p}" for p in problems),
        hint="fix the keys named above (see configs/demo.yaml for a complete example)")


def validate_section(cls: type[BaseModel], data: dict[str, Any], path: str) -> tuple[Any, list[str]]:
    """Validate one stage section; returns (config or None, problem lines named by full key path)."""
    try:
        return cls.model_validate(data), []
    except ValidationError as exc:
        return None, format_errors(exc, path)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a copy of the raw spec."""
    data = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise KnowpackError(f"bad override {item!r}", hint="write --set key.path=value, e.g. --set train.epochs=3")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise KnowpackError(f"bad override value for {key}: {exc}", hint="quote lists as '[1, 2]'") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise KnowpackError(f"override {key}: {part} is not a section", hint="override a leaf key")
            node = child
        node[parts[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a study YAML file into a dict (a clear error when missing or malformed)."""
    path = Path(path)
    if not path.is_file():
        raise KnowpackError(f"study file not found: {path}", hint="pass a YAML file such as configs/demo.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise KnowpackError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise KnowpackError(f"{path} must hold a mapping at the top level (name, model, grid, ...)")
    return data


def parse_study(raw: dict[str, Any], *, source: Path | None = None, overrides: list[str] | None = None) -> Study:
    """Validate a raw study dict (after overrides) and every stage section; one error lists all problems."""
    from knowpack.evaluate.config import EvalConfig
    from knowpack.probe.config import ProbeConfig

    overrides = list(overrides or [])
    data = apply_overrides(raw, overrides)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        _raise(format_errors(exc), source)
    probe, problems = validate_section(ProbeConfig, spec.probe, "probe")
    evaluation, more = validate_section(EvalConfig, spec.eval, "eval")
    problems += more
    study = Study(spec=spec, probe=probe, eval=evaluation, source=source, overrides=overrides)
    if not problems:
        # Cell configs (mix, train per grid point) are validated now so a typo fails before hours of work.
        from knowpack.study.grid import expand_grid

        try:
            expand_grid(study)
        except KnowpackError as exc:
            problems.append(exc.message)
    if problems:
        _raise(problems, source)
    return study


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read, override and validate a study YAML file."""
    return parse_study(read_yaml(path), source=Path(path), overrides=overrides)
