"""Grid expansion: every combination of the study's axes becomes one content-addressed cell."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knowpack.errors import KnowpackError
from knowpack.io import sha256_file, stable_hash
from knowpack.mix.config import MixConfig, mixture_label
from knowpack.schema import validate_config
from knowpack.study.artifacts import CellRecord
from knowpack.train.config import TrainConfig, load_preset

if TYPE_CHECKING:
    from knowpack.study.spec import Study

# Grid axis -> TrainConfig field it sets (the other axes go to MixConfig).
TRAIN_AXES = {"rank": "rank", "lr": "lr", "loss": "loss", "seed": "seed", "early_stop": "early_stop",
              "method": "method"}
AXES = ("unknown", "extra", "kind", "seed", "rank", "lr", "loss", "preset", "early_stop", "method")


@dataclass(frozen=True)
class Cell:
    """One grid point: its axis values, the effective stage configs and their content hash."""

    axes: dict[str, Any]
    mix: MixConfig
    train: TrainConfig
    key: str  # hash of everything that decides the adapter (folder cells/<key>/)
    eval_key: str  # hash of the evaluation settings (folder cells/<key>/eval/<eval_key>/)

    @property
    def mixture(self) -> str:
        """Paper-style mixture label: ``w/o`` for k = 0, else e.g. ``10 Para`` / ``1 HK``."""
        return mixture_label(self.axes["extra"], self.axes["kind"])

    @property
    def model(self) -> str | None:
        """The cell's model when the study compares several (``grid.model``), else None."""
        return self.axes.get("model")

    def title(self) -> str:
        """Short human label used in progress lines and tables."""
        extra = [f"{k}={self.axes[k]}" for k in ("method", "rank", "lr", "loss", "preset") if self.axes.get(k) is not None]
        if self.axes.get("early_stop") is not None:
            extra.append("early-stop" if self.axes["early_stop"] else "fixed-epochs")
        if self.model is not None:
            extra.append(f"model={model_name(self.model)}")
        return " ".join([f"{self.axes['unknown']} UK + {self.mixture}", f"seed={self.axes['seed']}", *extra])

    def record(self, study_identity: dict[str, Any]) -> CellRecord:
        """The cell's full effective config, as written to ``cell.json``."""
        return CellRecord(key=self.key, eval_key=self.eval_key, axes=self.axes, mixture=self.mixture,
                          identity=study_identity, mix=self.mix.model_dump(mode="json"),
                          train=self.train.model_dump(mode="json"))


def model_name(spec: str) -> str:
    """A model spec as short as tables need it: a folder's last part, else the spec itself."""
    return Path(str(spec)).name or str(spec)


def cell_identity(study: Study, cell: Cell) -> dict[str, Any]:
    """What the cell shares with the other cells of its model (:func:`study_identity` of that model)."""
    return study_identity(study.for_model(cell.model) if cell.model is not None else study)


def study_identity(study: Study) -> dict[str, Any]:
    """What every cell shares and depends on: model, facts, base probe and evaluation settings."""
    identity = {
        "model": study.spec.model,
        "facts": study.spec.facts,
        "facts_sample": study.spec.facts_sample,
        "probe": study.probe.model_dump(mode="json"),
        "eval": study.eval.model_dump(mode="json"),
    }
    if study.spec.paraphrases:
        # Content, not path: regenerated paraphrases are a different mixture, hence new cells.
        path = Path(study.spec.paraphrases)
        identity["paraphrases"] = sha256_file(path) if path.is_file() else str(path)
    return identity


def hash_identity(study: Study) -> dict[str, Any]:
    """Like :func:`study_identity`, minus settings that change speed but not results (probe batch size)."""
    identity = study_identity(study)
    identity["probe"] = study.probe.result_key()
    return identity


def _axis_values(study: Study) -> dict[str, list]:
    grid = study.spec.grid
    values = {name: getattr(grid, name) for name in AXES}
    return {name: (vals if vals is not None else [None]) for name, vals in values.items()}


def _combinations(study: Study) -> list[dict[str, Any]]:
    """All axis combinations; k = 0 cells differ only by kind, so only the first kind is kept
    (a control is a mixture of its own at every k)."""
    values = _axis_values(study)
    plain = [k for k in values["kind"] if k != "control"]
    seen, combos = set(), []
    for combo in itertools.product(*(values[a] for a in AXES)):
        axes = dict(zip(AXES, combo))
        if axes["extra"] == 0 and axes["kind"] != "control" and plain:
            # Without extra items the kind changes nothing: one cell, shared by every kind's curve.
            axes["kind"] = plain[0]
        ident = tuple(axes[a] for a in AXES)
        if ident not in seen:
            seen.add(ident)
            combos.append(axes)
    return combos


def _train_config(study: Study, axes: dict[str, Any], cache: dict) -> tuple[TrainConfig | None, list[str]]:
    preset = axes.get("preset") or study.train_preset
    if preset not in cache:
        try:
            cache[preset] = load_preset(preset).model_dump(mode="json")
        except KnowpackError as exc:
            cache[preset] = exc
    base = cache[preset]
    if isinstance(base, KnowpackError):
        return None, [f"train.preset: {base.message}"]
    data = {**base, **study.train_overrides}
    data.update({TRAIN_AXES[a]: axes[a] for a in TRAIN_AXES if axes.get(a) is not None})
    return validate_config(TrainConfig, data, "train")


def expand_grid(study: Study) -> list[Cell]:
    """Expand the grid into cells with validated MixConfig/TrainConfig and content hashes.

    The key covers everything the adapter depends on (model, facts, probe, mix, train), so
    identical settings map to the same folder and any change gets a new one; the evaluation
    settings get their own key, so changing them re-evaluates existing adapters.
    """
    if study.spec.grid.model:
        # One sub-grid per model, keyed exactly as a one-model study of it: adding a model to a
        # study keeps the finished cells of the others.
        return [replace(cell, axes={**cell.axes, "model": model})
                for model in study.spec.grid.model for cell in expand_grid(study.for_model(model))]
    identity = hash_identity(study)
    # Evaluation settings address a sub-folder, not the cell: re-evaluating never retrains.
    eval_key = stable_hash(identity.pop("eval"), length=10)
    cells, problems, presets = [], [], {}
    for axes in _combinations(study):
        mix_data = {**study.spec.mix.model_dump(exclude_none=True), "unknown": axes["unknown"],
                    "extra": axes["extra"], "kind": axes["kind"], "seed": axes["seed"]}
        mix, mix_problems = validate_config(MixConfig, mix_data, "mix")
        train, train_problems = _train_config(study, axes, presets)
        for p in mix_problems + train_problems:
            if p not in problems:
                problems.append(p)
        if mix is None or train is None:
            continue
        payload = {**identity, "mix": mix.model_dump(mode="json"), "train": train.model_dump(mode="json")}
        cells.append(Cell(axes=axes, mix=mix, train=train, key=stable_hash(payload, length=16), eval_key=eval_key))
    if problems:
        raise KnowpackError("\n  ".join(problems))
    return cells
