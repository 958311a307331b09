"""Per-epoch checkpoints and resuming: a killed run continues from its last complete epoch.

A checkpoint ``checkpoints/epoch-{e}/`` holds the PEFT adapter (adapter_model.safetensors +
adapter_config.json), ``trainer_state.pt`` (optimizer, scheduler, epoch, curve so far) and one
``rng-{rank}.pt`` per process. It is written to a temporary folder and renamed, so a kill during
saving leaves the previous checkpoint as the last complete one.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from knowpack.errors import KnowpackError
from knowpack.io import read_json, write_json

RUN_FILE = "run.json"
STATE_FILE = "trainer_state.pt"


def check_run_identity(out_dir: Path, identity: dict) -> bool:
    """Claim ``out_dir`` for the run described by ``identity``.

    Returns True when the folder already belongs to this run (resume), False when it is new.
    A folder from a different run is never overwritten.
    """
    run_file = Path(out_dir) / RUN_FILE
    if run_file.is_file():
        previous = read_json(run_file)
        if previous != identity:
            changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
            raise KnowpackError(
                f"{out_dir} holds a training run with different settings (differs in: {', '.join(changed)})",
                hint="choose another --out folder, or delete this one to retrain")
        return True
    if Path(out_dir).is_dir() and any(Path(out_dir).iterdir()):
        raise KnowpackError(f"{out_dir} exists and is not a knowpack training folder",
                            hint="choose an empty or new --out folder")
    return False


def claim_run(out_dir: Path, identity: dict) -> None:
    """Record the run identity (main process only)."""
    write_json(Path(out_dir) / RUN_FILE, identity)


def checkpoint_dir(out_dir: Path, epoch: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"epoch-{epoch}"


def last_checkpoint(out_dir: Path) -> Path | None:
    """The complete checkpoint with the highest epoch, if any."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("epoch-*") if (p / STATE_FILE).is_file() and p.name[6:].isdigit()]
    return max(done, key=lambda p: int(p.name[6:]), default=None)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(accelerator, peft_model, optimizer, scheduler, out_dir: Path, epoch: int,
                    extra: dict[str, Any]) -> Path:
    """Write ``checkpoints/epoch-{epoch}`` (adapter once on the main process, RNG state per process)."""
    target = checkpoint_dir(out_dir, epoch)
    staging = target.with_name(target.name + ".partial")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), staging / f"rng-{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        peft_model.save_pretrained(staging)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "epoch": epoch, **extra}, staging / STATE_FILE)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    accelerator.wait_for_everyone()
    return target


def load_checkpoint(accelerator, peft_model, optimizer, scheduler, folder: Path) -> dict[str, Any]:
    """Restore adapter weights, optimizer, scheduler and this process's RNG from ``folder``."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(Path(folder) / "adapter_model.safetensors"))
    set_peft_model_state_dict(peft_model, weights)
    state = torch.load(Path(folder) / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_file = Path(folder) / f"rng-{accelerator.process_index}.pt"
    if not rng_file.is_file():  # resumed with more processes than were saved
        rng_file = Path(folder) / "rng-0.pt"
    set_rng_state(torch.load(rng_file, weights_only=False))
    return state
