"""PEFT adapters on a loaded model, refused clearly when they do not fit it."""

from __future__ import annotations

import json
from pathlib import Path

from knowpack.errors import KnowpackError


def _check_adapter_manifest(adapter: Path, model_hash: str) -> None:
    # knowpack's trainer stamps the base model hash into the adapter's manifest; when present it
    # catches an adapter trained on a same-shaped but different model, which PEFT cannot see.
    for folder in (adapter, adapter.parent):
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            continue
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return
        expected = data.get("model_hash") or (data.get("inputs") or {}).get("model_hash")
        if expected and expected != model_hash:
            raise KnowpackError(
                f"adapter {adapter} was trained on model {expected}, not on the loaded model {model_hash}",
                hint="pass the --model the adapter was trained on")
        return


def attach_adapter(model, adapter: str | None, *, model_hash: str | None = None):
    """Wrap ``model`` with the PEFT adapter in folder ``adapter`` (or return it unchanged).

    Raises KnowpackError when the folder is not an adapter or does not fit the model (other
    architecture, other shapes, missing target modules). Note: PEFT injects the adapter layers
    into ``model`` in place.
    """
    if adapter is None:
        return model
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise KnowpackError(f"{path} is not a PEFT adapter folder (no adapter_config.json)",
                            hint="pass a folder written by `knowpack train` or `save_pretrained`")
    from peft import PeftModel

    if isinstance(model, PeftModel):
        raise KnowpackError("the model already carries an adapter; pass either the wrapped model or --adapter")
    if model_hash:
        _check_adapter_manifest(path, model_hash)
    try:
        wrapped = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except Exception as exc:  # PEFT raises ValueError/RuntimeError/KeyError for misfits
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KnowpackError(f"adapter {path} does not fit this model: {first[:300]}",
                            hint="use the base model the adapter was trained on") from None
    wrapped.eval()
    return wrapped
