"""Checks that stop a training run with one clear error instead of a wrong or silent result.

* the number of processes differs from what the launch asked for (a run in fewer processes
  still trains, just slower and without saying so);
* the loss or the adapter weights became NaN/inf (checked once per epoch, before anything of
  that epoch is saved, so the newest checkpoint is always a good one).
"""

from __future__ import annotations

import os

import torch

from knowpack.errors import KnowpackError

# Set by `accelerate launch` when it was asked for several processes; torchrun-style launchers
# also set WORLD_SIZE, so these without it mean accelerate's one-process launcher ran instead
# (e.g. `--num_processes 2 --cpu`).
_MULTI_PROCESS_MARKERS = ("ACCELERATE_USE_CPU", "MASTER_PORT")
_WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _launcher_asked_for_several() -> bool:
    env = os.environ
    return all(v in env for v in _MULTI_PROCESS_MARKERS) and not any(v in env for v in _WORLD_SIZE_VARS)


def check_world_size(actual: int, expected: int | None) -> None:
    """Refuse to train in a different number of processes than the launch asked for.

    A run in fewer processes still trains (the global batch is split over whoever is there),
    so without this check a misconfigured launch silently takes longer and reports nothing.
    """
    how = "one process per rank with `accelerate launch --multi_gpu --num_processes N` and ACCELERATE_USE_CPU=1 on CPU"
    if expected is not None and actual != expected:
        raise KnowpackError(f"asked for {expected} training process(es) but running in {actual}",
                            hint=f"start {how}, or pass --processes {actual}")
    if expected is None and actual == 1 and _launcher_asked_for_several():
        raise KnowpackError("accelerate launch was asked for several processes but started only this one "
                            "(its --cpu launcher runs a single process)",
                            hint=f"start {how}, or pass --processes 1 to train in one process")


DIVERGED_HINT = "lower the learning rate (--lr) or the LoRA scale (--alpha) and train into a new --out folder"


class TrainingDiverged(KnowpackError):
    """The loss or the adapter weights became NaN/inf: the run stops before saving anything bad."""


def first_bad_step(losses: list[torch.Tensor]) -> int | None:
    """1-based index of the first non-finite batch loss, found in one pass at the end of the epoch
    (a check per step would stop the loop to read every loss)."""
    if not losses:
        return None
    bad = (~torch.isfinite(torch.stack(losses))).nonzero()
    return int(bad[0, 0]) + 1 if len(bad) else None


def adapter_is_finite(peft_model) -> bool:
    """Whether every trainable weight is finite (checked before a checkpoint or the adapter is written)."""
    return all(bool(torch.isfinite(p).all()) for p in peft_model.parameters() if p.requires_grad)
