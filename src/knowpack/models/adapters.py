"""PEFT adapters: their identity, their base model, and attaching them only where they fit.

An adapter folder is PEFT's standard layout (``adapter_config.json`` + ``adapter_model.safetensors``).
Full fine-tuning (method ``full``) writes a complete transformers model folder instead
(``config.json`` + ``model*.safetensors`` + tokenizer): it is "attached" by loading it as a
second model beside the base model, and the base model then stays what it is.
knowpack's trainer also writes a ``manifest.json`` into it whose ``inputs["model"]`` is the content
hash of the base model it was trained on. PEFT can only see shapes; the manifest is what catches
an adapter applied to a different model of the same shapes (two fine-tunes of one architecture),
which would otherwise produce plausible numbers about the wrong model.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

from knowpack.errors import KnowpackError
from knowpack.io import sha256_file, stable_hash
from knowpack.manifest import Manifest

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MODEL_CONFIG_FILE = "config.json"
_TRAIN_HINT = "pass a folder written by `knowpack train` (its adapter/ folder) or by PEFT's save_pretrained"


def is_model_folder(folder: str | os.PathLike) -> bool:
    """True for a fully fine-tuned model folder (a transformers config and safetensors, no adapter config)."""
    folder = Path(folder)
    return (not (folder / CONFIG_FILE).is_file() and (folder / MODEL_CONFIG_FILE).is_file()
            and any(folder.glob("model*.safetensors")))


def has_adapter_files(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a saved adapter or a fully fine-tuned model (a finished training)."""
    return (Path(folder) / CONFIG_FILE).is_file() or is_model_folder(folder)


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The safetensors files holding an adapter's (or a fine-tuned model's) weights."""
    folder = Path(folder)
    if is_model_folder(folder):
        return sorted(folder.glob("model*.safetensors"))
    return [folder / WEIGHTS_FILE] if (folder / WEIGHTS_FILE).is_file() else []


def adapter_hash(folder: str | os.PathLike) -> str:
    """Content hash of an adapter: its config and its weights (both decide what it does)."""
    folder = Path(folder)
    config = MODEL_CONFIG_FILE if is_model_folder(folder) else CONFIG_FILE
    files = [folder / config] if (folder / config).is_file() else []
    return stable_hash({p.name: sha256_file(p) for p in files + weight_files(folder)}, length=16)


def check_adapter_folder(folder: str | os.PathLike) -> Path:
    """The adapter folder, or one clear error saying what is wrong with it.

    Pickled weights (``adapter_model.bin``) are refused: loading them can run code, and knowpack
    loads safetensors only.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise KnowpackError(f"adapter folder not found: {path}", hint=_TRAIN_HINT)
    if is_model_folder(path):
        return path
    if (path / MODEL_CONFIG_FILE).is_file() and any(path.glob("pytorch_model*.bin")):
        raise KnowpackError(f"{path} holds pickled model weights (pytorch_model.bin); knowpack loads safetensors only",
                            hint="convert it once: AutoModelForCausalLM.from_pretrained(...).save_pretrained(dir, "
                                 "safe_serialization=True)")
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
    for file in weight_files(folder):
        for name, tensor in load_file(str(file)).items():
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
    Note: PEFT injects the adapter layers into ``model`` in place. A fully fine-tuned model folder
    is loaded as a separate model instead (``model`` is left untouched and stays the base).
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
    if is_model_folder(path):
        return load_fine_tuned(model, path)
    try:
        wrapped = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except Exception as exc:  # PEFT raises ValueError/RuntimeError/KeyError for misfits
        raise KnowpackError(f"adapter {path} does not fit this model: {_misfit(exc)}",
                            hint="use the base model the adapter was trained on") from None
    wrapped.eval()
    return wrapped


def load_fine_tuned(base, path: Path):
    """The fully fine-tuned model in ``path``, loaded beside ``base`` (same dtype and device).

    Safetensors only and never remote code; a folder of another architecture or shape than the
    base model is refused, as an adapter that does not fit would be.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    base_config = base.config
    for field in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size"):
        theirs, ours = getattr(config, field, None), getattr(base_config, field, None)
        if theirs != ours:
            raise KnowpackError(f"fine-tuned model {path} does not fit this model: {field} is {theirs!r}, "
                                f"the base model's {ours!r}", hint="use the base model the folder was fine-tuned from")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=base.dtype, use_safetensors=True,
                                                 trust_remote_code=False)
    model.to(base.device)
    model.eval()
    return model


def is_peft_model(model) -> bool:
    """True for a model wrapped by PEFT (an adapter to disable or unload); False for a plain model
    such as a fully fine-tuned copy."""
    try:
        from peft import PeftModel
    except ImportError:  # an environment without PEFT (vLLM's) holds no PEFT models
        return False
    return isinstance(model, PeftModel)


def causal_lm(model):
    """The transformers model itself: inside a PeftModel, or ``model`` when it is not wrapped
    (a fully fine-tuned copy). Its config and forward signature are the architecture's."""
    return model.get_base_model() if is_peft_model(model) else model


@contextlib.contextmanager
def base_view(adapted, base) -> Iterator:
    """The base model beside ``adapted``: the same PeftModel with its adapter disabled, or — for a
    fully fine-tuned model, which has no adapter to disable — the separate ``base`` model."""
    if is_peft_model(adapted):
        with adapted.disable_adapter():
            yield adapted
    else:
        yield base


def detach_adapter(adapted, base):
    """``base`` without the adapter's layers again (PEFT injected them in place); a separately
    loaded fine-tuned model is simply dropped."""
    return adapted.unload() if is_peft_model(adapted) else base


def adapter_rank(folder: str | os.PathLike) -> int | None:
    """The LoRA rank in ``adapter_config.json`` (None when the method has no single rank)."""
    if is_model_folder(folder):
        return None
    config = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    rank = config.get("r")
    return int(rank) if isinstance(rank, (int, float)) and math.isfinite(rank) else None
