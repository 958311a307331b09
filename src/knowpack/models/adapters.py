"""PEFT adapters: their identity, their base model, and attaching them only where they fit.

An adapter folder is PEFT's standard layout (``adapter_config.json`` + ``adapter_model.safetensors``).
knowpack's trainer also writes a ``manifest.json`` into it whose ``inputs["model"]`` is the content
hash of the base model it was trained on. PEFT can only see shapes; the manifest is what catches
an adapter applied to a different model of the same shapes (two fine-tunes of one architecture),
which would otherwise produce plausible numbers about the wrong model.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from knowpack.errors import KnowpackError
from knowpack.io import sha256_file, stable_hash
from knowpack.manifest import Manifest

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_TRAIN_HINT = "pass a folder written by `knowpack train` (its adapter/ folder) or by PEFT's save_pretrained"


def adapter_hash(folder: str | os.PathLike) -> str:
    """Content hash of an adapter: its config and its weights (both decide what it does)."""
    folder = Path(folder)
    files = [folder / name for name in (CONFIG_FILE, WEIGHTS_FILE) if (folder / name).is_file()]
    return stable_hash({p.name: sha256_file(p) for p in files}, length=16)


def check_adapter_folder(folder: str | os.PathLike) -> Path:
    """The adapter folder, or one clear error saying what is wrong with it.

    Pickled weights (``adapter_model.bin``) are refused: loading them can run code, and knowpack
    loads safetensors only.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise KnowpackError(f"adapter folder not found: {path}", hint=_TRAIN_HINT)
    if not (path / CONFIG_FILE).is_file():
        raise KnowpackError(f"{path} is not a PEFT adapter folder (no {CONFIG_FILE})", hint=_TRAIN_HINT)
    if not (path / WEIGHTS_FILE).is_file():
        if any(path.glob("adapter_model*.bin")):
            raise KnowpackError(f"{path} holds pickled weights (adapter_model.bin); knowpack loads safetensors only",
                                hint="convert it once: PeftModel.from_pretrained(...).save_pretrained(dir, "
                                     "safe_serialization=True)")
        raise KnowpackError(f"{path} has no {WEIGHTS_FILE}", hint=_TRAIN_HINT)
    return path


def adapter_base_model(folder: str | os.PathLike) -> str | None:
    """The base-model hash recorded by knowpack's trainer (None for adapters made elsewhere)."""
    folder = Path(folder)
    for place in (folder, folder.parent):  # adapter/manifest.json, else the training folder's
        if Manifest.exists(place):
            manifest = Manifest.read(place)
            if manifest.stage == "train":
                return manifest.model_hash
    return None


def check_base_model(folder: str | os.PathLike, model_hash: str | None) -> None:
    """Refuse an adapter that knowpack trained on another model than ``model_hash``."""
    trained_on = adapter_base_model(folder)
    if model_hash and trained_on and trained_on != model_hash:
        raise KnowpackError(f"adapter {folder} was trained on model {trained_on}, not on the loaded model {model_hash}",
                            hint="pass the --model the adapter was trained on")


def non_finite_tensors(folder: str | os.PathLike) -> list[str]:
    """Names of the adapter's tensors holding NaN or infinity (a diverged training run)."""
    from safetensors.torch import load_file

    bad = []
    for name, tensor in load_file(str(Path(folder) / WEIGHTS_FILE)).items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            bad.append(name)
    return bad


def _misfit(exc: Exception) -> str:
    """The informative part of PEFT's / torch's complaint: tensor names and shapes kept whole."""
    text = str(exc).strip() or type(exc).__name__
    sizes = re.findall(r"size mismatch for [^\n]+", text)
    if sizes:
        return "; ".join(s.rstrip(".") for s in sizes[:3]) + (f" (+{len(sizes) - 3} more)" if len(sizes) > 3 else "")
    return " ".join(text.split())[:400]


def attach_adapter(model, adapter: str | os.PathLike | None, *, model_hash: str | None = None):
    """Wrap ``model`` with the PEFT adapter in folder ``adapter`` (or return it unchanged).

    Raises KnowpackError when the folder is not an adapter, was trained on another model, holds
    non-finite weights, or does not fit the model (other architecture, shapes or target modules).
    Note: PEFT injects the adapter layers into ``model`` in place.
    """
    if adapter is None:
        return model
    path = check_adapter_folder(adapter)
    from peft import PeftModel

    if isinstance(model, PeftModel):
        raise KnowpackError("the model already carries an adapter; pass either the wrapped model or --adapter")
    check_base_model(path, model_hash)
    bad = non_finite_tensors(path)
    if bad:
        raise KnowpackError(f"adapter {path} holds NaN or infinite weights ({len(bad)} tensor(s), e.g. {bad[0]})",
                            hint="its training diverged: retrain with a lower learning rate")
    try:
        wrapped = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except Exception as exc:  # PEFT raises ValueError/RuntimeError/KeyError for misfits
        raise KnowpackError(f"adapter {path} does not fit this model: {_misfit(exc)}",
                            hint="use the base model the adapter was trained on") from None
    wrapped.eval()
    return wrapped


def adapter_rank(folder: str | os.PathLike) -> int | None:
    """The LoRA rank in ``adapter_config.json`` (None when the method has no single rank)."""
    config = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    rank = config.get("r")
    return int(rank) if isinstance(rank, (int, float)) and math.isfinite(rank) else None
