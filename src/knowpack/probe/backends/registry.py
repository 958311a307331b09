"""The backend registry: names → backend factories.

Built-in backends are known by module path and imported on first use, so `import knowpack.probe`
stays light (no torch until a backend is built) and no backend module is imported by the
protocol it implements. A new built-in backend is one more line in ``BUILTIN_BACKENDS``; its
module registers itself with ``@register_backend(name)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from knowpack.errors import KnowpackError

if TYPE_CHECKING:
    from knowpack.models.loading import LoadedModel
    from knowpack.probe.backends.base import Backend

BUILTIN_BACKENDS: dict[str, str] = {
    "hf": "knowpack.probe.backends.hf",
    # vLLM itself is imported only when an engine is built (it lives in its own environment).
    "vllm": "knowpack.probe.backends.vllm",
    "auto": "knowpack.probe.backends.vllm",  # vLLM where it is installed, else hf
}

BackendFactory = Callable[..., "Backend"]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Class/function decorator: make a backend available as ``get_backend(name, ...)``."""

    def decorator(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[name] = factory
        return factory

    return decorator


def available_backends() -> list[str]:
    """Names of the registered and built-in backends."""
    return sorted(set(_REGISTRY) | set(BUILTIN_BACKENDS))


def get_backend(name: str, loaded: LoadedModel, adapter: str | None = None, **kwargs: Any) -> Backend:
    """Build the backend registered as ``name`` for ``loaded`` (optionally with a PEFT adapter)."""
    if name not in _REGISTRY and name in BUILTIN_BACKENDS:
        importlib.import_module(BUILTIN_BACKENDS[name])
    if name not in _REGISTRY:
        raise KnowpackError(f"unknown probe backend {name!r}",
                            hint=f"choose one of: {', '.join(available_backends())}")
    return _REGISTRY[name](loaded, adapter=adapter, **kwargs)
