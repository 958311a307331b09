"""The training stage's own files, as typed artifacts: run identity, summary and checkpoint state.

Everything here is plain JSON (numbers, strings, lists), so reading a run folder someone hands
you can never execute code: tensors live in safetensors files next to these, and nothing in a
training folder is ever unpickled.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from knowpack.schema import JsonArtifact

WRITER = "knowpack train"


class CurveRow(BaseModel):
    """One epoch of the learning curve (a line of ``curve.csv`` and an entry of the summary's curve)."""

    model_config = ConfigDict(extra="ignore")

    epoch: int
    loss: float
    reliability: float | None = None
    retention: float | None = None
    seconds: float | None = None


class RunIdentity(JsonArtifact):
    """``run.json``: everything that decides the adapter, so a rerun knows whether it may resume."""

    file_name: ClassVar[str] = "run.json"
    writer: ClassVar[str] = WRITER

    config: dict[str, Any]
    model_hash: str
    train_sha256: str
    curve_ids: list[str]
    retention_ids: list[str]
    probe_config: dict[str, Any] | None

    def differences(self, other: "RunIdentity") -> list[str]:
        """Names of the fields whose values differ, for an error that says what changed."""
        mine, theirs = self.model_dump(mode="json"), other.model_dump(mode="json")
        return sorted(k for k in mine if mine[k] != theirs.get(k))


class TrainSummary(JsonArtifact):
    """``train_summary.json``: how the run ended, its curve and its shape (the stage's completion marker)."""

    file_name: ClassVar[str] = "train_summary.json"
    writer: ClassVar[str] = WRITER

    epochs_planned: int
    epochs_run: int
    stopped_early: bool
    stop_reason: str
    final: CurveRow | None
    curve: list[CurveRow]
    train_examples: int
    trainable_parameters: int
    processes: int
    global_batch: int
    optimizer_steps_per_epoch: int
    model_hash: str
    adapter: str
    wall_seconds_this_call: float
    epoch_seconds_total: float
    resumed_from: str | None


class RngSnapshot(BaseModel):
    """One process's random generators as plain numbers (Python ``random``, NumPy, torch CPU).

    Restoring them on resume makes LoRA dropout draw the same masks an uninterrupted run draws.
    """

    python: list[Any]  # [version, 625 ints, gauss_next]
    numpy: list[Any]  # [bit generator name, 624 keys, pos, has_gauss, cached_gaussian]
    torch: list[int]  # the bytes of torch.get_rng_state()

    @classmethod
    def capture(cls) -> "RngSnapshot":
        version, internal, gauss_next = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return cls(python=[version, list(internal), gauss_next],
                   numpy=[name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
                   torch=torch.get_rng_state().tolist())

    def restore(self) -> None:
        version, internal, gauss_next = self.python
        random.setstate((version, tuple(internal), gauss_next))
        name, keys, pos, has_gauss, cached = self.numpy
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(torch.tensor(self.torch, dtype=torch.uint8))


class CheckpointState(JsonArtifact):
    """``trainer_state.json`` of ``checkpoints/epoch-{e}``: all of a checkpoint that is not a tensor.

    The optimizer's tensors (Adam moments, step counts) are in ``optimizer.safetensors`` under
    ``{parameter index}/{name}``; ``optimizer`` holds the rest of its state dict (param groups,
    non-tensor entries) so the two together rebuild ``optimizer.state_dict()`` exactly.
    ``rng`` has one snapshot per process, in rank order.
    """

    file_name: ClassVar[str] = "trainer_state.json"
    writer: ClassVar[str] = WRITER

    epoch: int
    curve: list[CurveRow]
    stop_reason: str | None
    scheduler: dict[str, Any]
    optimizer: dict[str, Any]
    rng: list[RngSnapshot]
