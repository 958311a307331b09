"""PEFT adapters checked against a vLLM engine before any request carries them.

vLLM loads a LoRA adapter inside the engine when the first request that names it is scheduled;
an adapter that does not fit (rank above the engine's ``max_lora_rank``, unknown target modules)
fails there and takes the whole engine down (``EngineDeadError``), every other request with it.
So everything that can be read from the adapter folder is checked here, in the caller's process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from knowpack.errors import KnowpackError

# The ranks vLLM 0.32 accepts as ``max_lora_rank`` (its LoRAConfig takes only these values).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter folder says about itself."""

    path: Path
    rank: int  # the largest rank of any module (rank_pattern included)
    targets: tuple[str, ...]
    base_model_hash: str | None  # from knowpack's training manifest, when there is one


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KnowpackError(f"cannot read {what} {path}: {exc}",
                            hint="pass a folder written by `knowpack train` or `save_pretrained`") from None
    if not isinstance(data, dict):
        raise KnowpackError(f"{path} is not a {what} (expected a JSON object)")
    return data


def _manifest_model_hash(adapter: Path) -> str | None:
    # `knowpack train` writes manifest.json beside the adapter folder (out/adapter, out/manifest.json)
    # with the base model's content hash under inputs.model.
    for folder in (adapter, adapter.parent):
        manifest = folder / "manifest.json"
        if manifest.is_file():
            data = _read_json(manifest, "training manifest")
            inputs = data.get("inputs") or {}
            found = inputs.get("model") or inputs.get("model_hash") or data.get("model_hash")
            return str(found) if found else None
    return None


def read_adapter(adapter: str | Path) -> AdapterInfo:
    """Rank, target modules and base model of the PEFT LoRA adapter in folder ``adapter``."""
    from knowpack.models.adapters import is_model_folder

    path = Path(adapter).expanduser()
    config_file = path / "adapter_config.json"
    if is_model_folder(path):
        raise KnowpackError(f"{path} is a fully fine-tuned model, not a LoRA adapter vLLM applies per request",
                            hint=f"serve it with vLLM as a model of its own (--model {path}), or probe it with "
                                 "the transformers backend (--backend hf)")
    if not config_file.is_file():
        raise KnowpackError(f"{path} is not a PEFT adapter folder (no adapter_config.json)",
                            hint="pass a folder written by `knowpack train` or `save_pretrained`")
    config = _read_json(config_file, "adapter config")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise KnowpackError(f"adapter {path} is a {config.get('peft_type')} adapter; vLLM serves LoRA adapters only",
                            hint="use the transformers backend (--backend hf) for other PEFT methods")
    if config.get("use_dora"):
        raise KnowpackError(f"adapter {path} uses DoRA, which vLLM cannot serve",
                            hint="use the transformers backend (--backend hf) for DoRA adapters")
    if config.get("modules_to_save"):
        raise KnowpackError(f"adapter {path} also trains whole modules ({config['modules_to_save']}); "
                            "vLLM serves only the LoRA matrices", hint="use the transformers backend (--backend hf)")
    ranks = [int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    targets = config.get("target_modules") or []
    if isinstance(targets, str):  # PEFT also allows a regular expression; vLLM does not
        raise KnowpackError(f"adapter {path} names its target modules by a pattern ({targets!r}); "
                            "vLLM needs a list of module names", hint="use the transformers backend (--backend hf)")
    return AdapterInfo(path=path, rank=max(ranks), targets=tuple(sorted(targets)),
                       base_model_hash=_manifest_model_hash(path))


def lora_rank_limit(ranks: list[int]) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that serves every rank in ``ranks``."""
    top = max(ranks)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= top:
            return allowed
    raise KnowpackError(f"LoRA rank {top} is above the largest rank vLLM serves ({VLLM_LORA_RANKS[-1]})",
                        hint="train with a smaller --rank, or use the transformers backend (--backend hf)")


def check_adapter(info: AdapterInfo, *, max_lora_rank: int | None, model_hash: str,
                  module_names: frozenset[str]) -> None:
    """Refuse an adapter the engine cannot serve, with the reason and the fix.

    ``module_names``: the leaf names of the base model's weight modules (``q_proj``, ``down_proj``…).
    """
    if max_lora_rank is None:
        raise KnowpackError(f"this vLLM engine was started without LoRA support; cannot serve adapter {info.path}",
                            hint="start it with the adapters it should serve (VLLMSettings.adapters or max_lora_rank)")
    if info.rank > max_lora_rank:
        raise KnowpackError(f"adapter {info.path} has LoRA rank {info.rank}, above this engine's "
                            f"max_lora_rank {max_lora_rank}",
                            hint=f"start the engine with max_lora_rank >= {info.rank} (or list the adapter in "
                                 "VLLMSettings.adapters, which sizes it)")
    unknown = [t for t in info.targets if t not in module_names]
    if unknown:
        raise KnowpackError(f"adapter {info.path} targets modules the base model does not have: {', '.join(unknown)}",
                            hint="use the base model the adapter was trained on")
    if info.base_model_hash and info.base_model_hash != model_hash:
        raise KnowpackError(f"adapter {info.path} was trained on model {info.base_model_hash}, "
                            f"not on this engine's model {model_hash}",
                            hint="pass the --model the adapter was trained on")
