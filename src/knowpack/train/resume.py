"""Per-epoch checkpoints and resuming: a killed run continues from its last intact epoch.

A checkpoint ``checkpoints/epoch-{e}/`` holds the PEFT adapter (adapter_model.safetensors +
adapter_config.json) — or, for full fine-tuning, the whole model (config.json + model*.safetensors;
only the newest such checkpoint is kept, and none once the run is finished: each is the model's
size plus twice that of optimizer state) — the optimizer's tensors (optimizer.safetensors) and
``trainer_state.json`` (everything else: optimizer param groups, scheduler, epoch, curve so far,
every process's RNG state). Nothing is pickled, so a crafted run folder cannot run code on resume. A
checkpoint is written to a temporary folder, flushed to disk (files and folders fsynced) and
renamed, so a kill or a power loss during saving leaves the previous checkpoint as the last intact
one; a checkpoint that is damaged anyway (truncated by a full disk, edited by hand) is skipped with
a warning.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from knowpack.errors import KnowpackError
from knowpack.models.adapters import is_peft_model
from knowpack.train.artifacts import CheckpointState, RngSnapshot, RunIdentity

logger = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def check_run_identity(out_dir: Path, identity: RunIdentity) -> bool:
    """Claim ``out_dir`` for the run described by ``identity``.

    Returns True when the folder already belongs to this run (resume), False when it is new.
    A folder from a different run is never overwritten.
    """
    out_dir = Path(out_dir)
    if RunIdentity.exists(out_dir):
        changed = RunIdentity.read(out_dir).differences(identity)
        if changed:
            raise KnowpackError(
                f"{out_dir} holds a training run with different settings (differs in: {', '.join(changed)})",
                hint="choose another --out folder, or delete this one to retrain")
        return True
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise KnowpackError(f"{out_dir} exists and is not a knowpack training folder",
                            hint="choose an empty or new --out folder")
    return False


def claim_run(out_dir: Path, identity: RunIdentity) -> None:
    """Record the run identity (main process only)."""
    identity.write(out_dir)


def checkpoint_dir(out_dir: Path, epoch: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"epoch-{epoch}"


def _epoch_folders(out_dir: Path) -> list[Path]:
    """``checkpoints/epoch-{e}`` folders, newest first (staging ``.partial`` folders excluded)."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("epoch-") and p.name[6:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[6:]), reverse=True)


def refuse_pickles(out_dir: Path) -> None:
    """A checkpoint holding pickle files is refused: unpickling a file from a folder someone handed
    you runs whatever code its author put in it, so knowpack never loads one."""
    folder = Path(out_dir) / "checkpoints"
    pickles = sorted(folder.rglob("*.pt")) + sorted(folder.rglob("*.pkl")) if folder.is_dir() else []
    if pickles:
        raise KnowpackError(
            f"{pickles[0].parent} holds pickle files ({', '.join(p.name for p in pickles[:3])}), which knowpack "
            "does not load because unpickling can run arbitrary code",
            hint=f"delete {folder} to retrain from the start (checkpoints from knowpack before format 1 "
                 "cannot be resumed), or train into a new --out folder")


# -- the optimizer's state dict, split into tensors and plain data -------------------------------

def _split_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, plain = {}, {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{name}"] = value.detach().contiguous()
            else:
                plain.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": plain}


def _join_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in plain.get("state", {}).items()}
    for key, value in tensors.items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    # JSON turned tuples (Adam's betas) into lists; the optimizer's own groups hold tuples.
    groups = [{k: (v if k == "params" or not isinstance(v, list) else tuple(v)) for k, v in group.items()}
              for group in plain["param_groups"]]
    return {"state": state, "param_groups": groups}


def _plain(obj: Any, what: str) -> Any:
    """``obj`` unchanged if it is JSON data; anything else would need a pickle, so it is refused."""
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise KnowpackError(f"cannot checkpoint the {what} state as plain data ({exc})",
                            hint="use one of the built-in schedulers (linear, cosine, constant, "
                                 "constant_with_warmup)") from None
    return obj


# -- saving ---------------------------------------------------------------------------------------

def _fsync_tree(folder: Path) -> None:
    """Flush every file below ``folder`` and the folders themselves to disk.

    A rename is only as durable as the data it points at: without this, a power loss right
    after the rename can leave a checkpoint whose name is on disk but whose files are empty.
    """
    for root, _, files in os.walk(folder):
        for name in files:
            with open(Path(root) / name, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(accelerator, peft_model, optimizer, scheduler, out_dir: Path, epoch: int, *,
                    curve: list[dict], stop_reason: str | None) -> Path:
    """Write ``checkpoints/epoch-{epoch}`` durably (main process; every process sends its RNG state)."""
    from accelerate.utils import gather_object
    from safetensors.torch import save_file

    rng = gather_object([RngSnapshot.capture().model_dump(mode="json")])  # rank order, on every process
    target = checkpoint_dir(out_dir, epoch)
    if accelerator.is_main_process:
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        peft_model.save_pretrained(staging)
        tensors, plain = _split_optimizer(optimizer.state_dict())
        save_file(tensors, str(staging / OPTIMIZER_FILE))
        CheckpointState(epoch=epoch, curve=curve, stop_reason=stop_reason,
                        scheduler=_plain(scheduler.state_dict(), "scheduler"),
                        optimizer=_plain(plain, "optimizer"), rng=rng).write(staging)
        _fsync_tree(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        _fsync_dir(target.parent)
        if not is_peft_model(peft_model):
            _drop_older_checkpoints(out_dir, epoch)
    accelerator.wait_for_everyone()
    return target


def _drop_older_checkpoints(out_dir: Path, epoch: int) -> None:
    """Full fine-tuning: delete the checkpoints before ``epoch`` once it is durably on disk.

    Resuming needs only the newest intact one, and ten epochs of a whole model with its AdamW
    state would fill a laptop's disk (135M parameters: 1.6 GB per epoch).
    """
    for folder in _epoch_folders(out_dir):
        if int(folder.name[6:]) < epoch:
            shutil.rmtree(folder, ignore_errors=True)


def drop_checkpoints(out_dir: Path) -> None:
    """Full fine-tuning: delete every checkpoint once the run is finished (its summary written).

    A finished run is recognised by its summary and model folder, never resumed, so the last whole
    model with its AdamW state (1.6 GB at 135M) would only fill the disk: a capacity search with a
    full arm trains a dozen or more such cells.
    """
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)


# -- loading --------------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """A checkpoint read completely into memory (nothing applied yet); ``adapter`` holds the whole
    model's tensors for full fine-tuning."""

    folder: Path
    state: CheckpointState
    adapter: dict[str, torch.Tensor]
    optimizer: dict


def _read_checkpoint(folder: Path) -> Checkpoint:
    """Read and check every file of ``folder``; any damage raises (KnowpackError or a reader's error)."""
    from safetensors.torch import load_file

    from knowpack.models.adapters import is_model_folder, weight_files

    state = CheckpointState.read(folder)
    if is_model_folder(folder):
        adapter = {name: tensor for file in weight_files(folder) for name, tensor in load_file(str(file)).items()}
    else:
        adapter = load_file(str(folder / ADAPTER_WEIGHTS))
        if not (folder / "adapter_config.json").is_file():
            raise KnowpackError(f"{folder} has no adapter_config.json")
    optimizer = _join_optimizer(load_file(str(folder / OPTIMIZER_FILE)), state.optimizer)
    return Checkpoint(folder, state, adapter, optimizer)


def last_intact_checkpoint(out_dir: Path) -> Checkpoint | None:
    """The newest checkpoint whose files all read back, skipping damaged ones with a warning."""
    from safetensors import SafetensorError

    refuse_pickles(out_dir)
    for folder in _epoch_folders(out_dir):
        try:
            return _read_checkpoint(folder)
        except (KnowpackError, SafetensorError, OSError, ValueError, KeyError) as exc:
            logger.warning("checkpoint %s is damaged (%s); falling back to the one before it",
                           folder, str(exc).splitlines()[0])
    return None


def apply_checkpoint(accelerator, peft_model, optimizer, scheduler, checkpoint: Checkpoint) -> CheckpointState:
    """Restore adapter weights, optimizer, scheduler and this process's RNG from ``checkpoint``."""
    from peft import set_peft_model_state_dict

    if is_peft_model(peft_model):
        set_peft_model_state_dict(peft_model, checkpoint.adapter)
    else:
        _load_full_weights(peft_model, checkpoint)
    optimizer.load_state_dict(checkpoint.optimizer)
    scheduler.load_state_dict(checkpoint.state.scheduler)
    rng = checkpoint.state.rng
    # Resumed with more processes than were saved: the extra ones start from rank 0's state.
    rng[accelerator.process_index if accelerator.process_index < len(rng) else 0].restore()
    return checkpoint.state


def _load_full_weights(model, checkpoint: Checkpoint) -> None:
    """Load a fully fine-tuned checkpoint into ``model``; every weight must be in it.

    transformers saves a tied output embedding once (under the input embedding's name), so the
    only keys allowed to be missing are tensors shared with one that was loaded.
    """
    result = model.load_state_dict(checkpoint.adapter, strict=False)
    state = model.state_dict()
    loaded = {state[name].data_ptr() for name in checkpoint.adapter if name in state}
    missing = [name for name in result.missing_keys if state[name].data_ptr() not in loaded]
    if missing or result.unexpected_keys:
        raise KnowpackError(f"checkpoint {checkpoint.folder} does not match the model (missing: {missing[:3]}, "
                            f"unexpected: {result.unexpected_keys[:3]})",
                            hint="delete the checkpoints folder to retrain from the start")
