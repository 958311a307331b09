"""Loading causal LMs (local folder, hub id, GGUF, the packaged default) and PEFT adapters."""

from knowpack.models.loading import LoadedModel, load_model, resolve_model_source

__all__ = ["LoadedModel", "load_model", "resolve_model_source"]
