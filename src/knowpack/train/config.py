"""TrainConfig (LoRA + optimisation settings) and the presets shipped as YAML data files."""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import (Field, SerializationInfo, SerializerFunctionWrapHandler, ValidationError, model_serializer,
                      model_validator)

from knowpack.errors import KnowpackError
from knowpack.schema import StrictModel, invalid

# The one default of `knowpack train` and of a study's `train:` section. `smollm2` is measured to
# make the default model learn (the paper's rank 1 / lr 1e-3 teaches it nothing on CPU budgets);
# pass `--preset paper` / `train: {preset: paper}` for the paper's settings on 7-8B models.
DEFAULT_PRESET = "smollm2"

# PEFT methods a run can train with. lora: plain LoRA (use_rslora as configured); rslora: LoRA scaled
# by alpha/sqrt(r); dora: weight-decomposed LoRA; pissa: LoRA initialised from the principal singular
# vectors; vera: shared frozen random matrices with trained scaling vectors; full: every weight of
# the model trains (no adapter: the result is a whole model folder; meant for small models).
METHODS: tuple[str, ...] = ("lora", "rslora", "dora", "pissa", "vera", "full")
DEFAULT_METHOD = "lora"
# Full fine-tuning moves every weight by about lr per step: the LoRA presets' rates (1e-3, 2e-3)
# wreck a whole model within a few steps. The paper's own reference point, the full fine-tuning
# of Gekhman et al. 2024, used 1e-5.
MAX_FULL_LR = 1e-4

class TrainConfig(StrictModel):
    """Everything that decides what adapter a training run produces, and nothing else.

    Speed-only settings (threads, process count) are not fields here: this config is the run's
    identity, so a change to it starts a new run instead of resuming. Being a StrictModel, it
    refuses unknown keys, non-finite numbers (``--lr inf`` would train NaN weights) and booleans
    given as numbers (YAML's ``epochs: true``).

    ``loss="answer"`` puts the loss on the assistant answer only ("Answer: {answer}" + end of
    turn); ``loss="all"`` on every non-pad token, as the paper's released code does.
    With ``method="full"`` the adapter fields (rank, alpha, dropout, targets, use_rslora) play no
    part: every weight trains, with the model's own dropout.
    """

    method: Literal["lora", "rslora", "dora", "pissa", "vera", "full"] = Field(
        DEFAULT_METHOD, description="PEFT method: " + " | ".join(METHODS))
    rank: int = Field(1, ge=1)
    alpha: float = Field(2.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    targets: list[str] = Field(default_factory=lambda: ["gate_proj", "up_proj", "down_proj"], min_length=1)
    use_rslora: bool = True
    # AdamW moves every weight by about lr per step, so lr > 1 wrecks any model, and an lr beyond
    # float32's range (1e39 passes as a finite number) makes torch's update fail outright.
    lr: float = Field(1e-3, gt=0, le=1)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    loss: Literal["answer", "all"] = "answer"
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    # AdamW multiplies the weights by (1 - lr * weight_decay) each step: above 1 that flips and
    # blows them up instead of decaying them.
    weight_decay: float = Field(0.0, ge=0, le=1)
    max_length: int = Field(768, ge=8)
    seed: int = 42
    early_stop: bool = False
    # Early stop on a plateau: reliability did not improve for this many epochs in a row.
    plateau_patience: int = Field(2, ge=1)
    # Early stop when the held-out HighlyKnown retention falls below this share.
    retention_threshold: float = Field(0.5, ge=0, le=1)
    eval_every_epoch: bool = True
    # Packed batches (examples concatenated under a block mask, shared prompt prefix computed once)
    # train faster and give the same loss up to float rounding — so not the same bytes as padded
    # batches. A field, not a speed knob: it changes the adapter's last bits. False reproduces
    # runs made before packing existed bit for bit.
    packing: bool = True

    @model_validator(mode="after")
    def _full_lr(self) -> "TrainConfig":
        if self.method == "full" and self.lr > MAX_FULL_LR:
            raise ValueError(f"lr {self.lr:g} is a LoRA learning rate: full fine-tuning (method full) at that rate "
                             f"destroys the model; use lr <= {MAX_FULL_LR:g} (e.g. 5e-5)")
        return self

    @model_serializer(mode="wrap")
    def _without_default_method(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo):
        # Runs and study cells are addressed by the hash of this dump. Leaving the default method
        # out keeps every LoRA run written before methods existed at its folder (no retraining).
        data = handler(self)
        if isinstance(data, dict) and data.get("method") == DEFAULT_METHOD:
            data.pop("method")
        return data


def _preset_folder():
    return resources.files("knowpack.train").joinpath("presets")


def preset_names() -> list[str]:
    """Names of the presets shipped with knowpack (YAML files in ``knowpack/train/presets``)."""
    folder = _preset_folder()
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str, **overrides: Any) -> TrainConfig:
    """Load preset ``name`` (``paper`` or ``smollm2``) and apply ``overrides`` (``None`` values are ignored)."""
    names = preset_names()
    if name not in names:
        raise KnowpackError(f"unknown training preset {name!r}", hint=f"use one of: {', '.join(names)}")
    data = yaml.safe_load(_preset_folder().joinpath(f"{name}.yaml").read_text("utf-8")) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        raise invalid("training settings", exc, hint=f"check the options given on top of preset {name!r}") from None
