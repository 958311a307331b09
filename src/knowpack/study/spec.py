"""Study spec: one YAML file that nests the stage configs and names the grid to sweep.

The sections are the stage config models themselves: ``probe:`` is a ``ProbeConfig``, ``eval:``
an ``EvalConfig``; ``mix:`` and ``train:`` hold the fields of ``MixConfig`` / ``TrainConfig`` that
every cell shares (the grid sets the rest per cell; ``train.preset`` names the preset the other
``train:`` keys override). Every problem is reported as ``key.path: message`` in one
KnowpackError, never a traceback, before any work starts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import Field, ValidationInfo, create_model, field_validator, model_validator

from knowpack.errors import KnowpackError
from knowpack.evaluate.config import EvalConfig
from knowpack.io import load_yaml
from knowpack.mix.config import KINDS, MixConfig
from knowpack.probe.config import ProbeConfig
from knowpack.schema import StrictModel
from knowpack.train.config import DEFAULT_PRESET, METHODS, TrainConfig

_MINIMUM = {"unknown": 1, "extra": 0}  # n >= 1 Unknown facts; k = 0 extra items is the plain mixture
# MixConfig fields that the grid sets per cell (a study's `mix:` section cannot set them).
MIX_AXES = ("unknown", "extra", "kind", "seed")


def _shared_fields(model: type[StrictModel], name: str, exclude: tuple[str, ...] = ()) -> type[StrictModel]:
    """A section model with ``model``'s fields, all optional: the values every cell shares.

    Types and descriptions come from the stage's config; bounds are checked when each cell's
    full config is built (``expand_grid``), with the same key path.
    """
    fields = {n: (Optional[f.annotation], Field(None, description=f.description))
              for n, f in model.model_fields.items() if n not in exclude}
    return create_model(name, __base__=StrictModel, **fields)


MixSection = _shared_fields(MixConfig, "MixSection", exclude=MIX_AXES)
_TrainFields = _shared_fields(TrainConfig, "_TrainFields")


class TrainSection(_TrainFields):
    """``train:``: a preset and the TrainConfig fields that override it for every cell."""

    preset: str = Field(DEFAULT_PRESET, description="training preset the other keys override")

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude={"preset"}, exclude_none=True)


def non_empty_unique(value: list | None) -> list | None:
    """An axis list must name at least one value and each value once (a repeat would run a cell twice)."""
    if value is None:
        return value
    if not value:
        raise ValueError("must not be empty")
    if len(set(value)) != len(value):
        raise ValueError(f"has repeated values: {value}")
    return value


def known_values(value: list[str] | None, allowed: tuple[str, ...], what: str) -> list[str] | None:
    """Every value must be one of ``allowed`` (the error lists the choices)."""
    bad = [v for v in value or [] if v not in allowed]
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}; choose from {list(allowed)}")
    return value


class GridSpec(StrictModel):
    """Axes of the sweep; every combination is one cell (``seed`` repeats a cell)."""

    unknown: list[int] = Field(description="numbers of Unknown facts to pack (n)")
    extra: list[int] = Field(default_factory=lambda: [0], description="extra items per Unknown fact (k)")
    kind: list[str] = Field(default_factory=lambda: ["paraphrase"], description="kind of extra items")
    seed: list[int] = Field(default_factory=lambda: [42])
    rank: list[int] | None = None
    lr: list[float] | None = None
    loss: list[str] | None = None
    preset: list[str] | None = None
    model: list[str] | None = Field(None, description="models to compare (specs as for `model`); each gets its "
                                                       "own base probe and cells")
    early_stop: list[bool] | None = Field(None, description="train each cell with early stopping, with fixed "
                                                             "epochs, or both ([false, true])")
    method: list[str] | None = Field(None, description="PEFT methods (arms): " + ", ".join(METHODS))

    @field_validator("unknown", "extra", "kind", "seed", "rank", "lr", "loss", "preset", "model", "early_stop",
                     "method")
    @classmethod
    def _non_empty_unique(cls, value: list | None) -> list | None:
        return non_empty_unique(value)

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
        return known_values(value, KINDS, "kind")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: list[str] | None) -> list[str] | None:
        return known_values(value, METHODS, "method")


class StudySpec(StrictModel):
    """Top level of a study YAML."""

    name: str = Field(min_length=1)
    model: str = "default"
    facts: str = "default"
    facts_sample: int | None = Field(default=None, ge=1)
    paraphrases: str | None = Field(default=None, description="fact file from `knowpack paraphrase` (k > 2 paraphrases)")
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    mix: MixSection = Field(default_factory=MixSection)
    grid: GridSpec
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    claims: str | None = Field("paper", description="claims the report decides: `paper` (the paper's C1-C6, "
                                                     "shipped with knowpack), a claim file, or null for none")
    out: str | None = None

    @model_validator(mode="after")
    def _one_place_for_the_model(self) -> "StudySpec":
        if getattr(self.grid, "model", None) and "model" in self.model_fields_set:  # a capacity spec has no grid
            raise ValueError("give the model either as `model` or as the grid axis `grid.model`, not both")
        return self

    @field_validator("claims")
    @classmethod
    def _claims_readable(cls, value: str | None) -> str | None:
        if value not in (None, "paper") and not Path(value).expanduser().is_file():
            raise ValueError(f"claim file not found: {value} (use `paper`, a YAML claim file, or null)")
        return value

    @field_validator("paraphrases")
    @classmethod
    def _paraphrase_file_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().exists():
            raise ValueError(f"file not found: {value} (write it with `knowpack paraphrase --out ...`)")
        return value


@dataclass
class Study:
    """A validated study: the spec plus where it came from."""

    spec: StudySpec
    source: Path | None = None
    overrides: list[str] = field(default_factory=list)

    @property
    def probe(self) -> ProbeConfig:
        return self.spec.probe

    @property
    def eval(self) -> EvalConfig:
        return self.spec.eval

    @property
    def out_dir(self) -> Path:
        """Study folder: ``out`` from the spec (relative to the working directory) or runs/<name>."""
        return Path(self.spec.out) if self.spec.out else Path("runs") / self.spec.name

    @property
    def models(self) -> list[str]:
        """The study's models: the ``grid.model`` axis, else the one ``model``."""
        return list(self.spec.grid.model or [self.spec.model])

    def for_model(self, model: str) -> "Study":
        """This study with one model of ``grid.model`` as its ``model``: what that model's base probe,
        preflight and cells see (and the very study a one-model spec of that model would be)."""
        grid = self.spec.grid.model_copy(update={"model": None})
        spec = self.spec.model_copy(update={"model": model, "grid": grid})
        return Study(spec=spec, source=self.source, overrides=self.overrides)

    @property
    def train_preset(self) -> str:
        return self.spec.train.preset

    @property
    def train_overrides(self) -> dict[str, Any]:
        return self.spec.train.overrides()


def raise_invalid(problems: list[str], source: Path | None) -> None:
    where = f" in {source}" if source else ""
    raise KnowpackError(
        f"invalid study spec{where}:\n" + "\n".join(f"  {p}" for p in problems),
        hint="fix the keys named above (see configs/demo.yaml for a complete example)")


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
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise KnowpackError(f"{path} is not valid YAML: {' '.join(str(exc).split())}",
                            hint="fix the line named above") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowpackError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise KnowpackError(f"{path} must hold a mapping at the top level (name, model, grid, ...)")
    return data
