"""The generation-backend protocol and its registry (one small seam, lm-eval style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from knowpack.errors import KnowpackError

if TYPE_CHECKING:
    from knowpack.models.loading import LoadedModel


@runtime_checkable
class Backend(Protocol):
    """Generates answers for rendered prompt strings.

    Both methods must be deterministic per request: the answer to a prompt may not depend on
    which other prompts share its batch (greedy is argmax; ``sample`` draws from per-request
    ``seeds``), which is what makes early exit and resuming leave results unchanged.
    """

    def greedy(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """One greedy answer per prompt."""
        ...

    def sample(self, prompts: list[str], n: int, *, temperature: float, top_k: int,
               max_new_tokens: int, seeds: list[int]) -> list[list[str]]:
        """``n`` sampled answers per prompt; request ``i`` draws from ``seeds[i]`` only."""
        ...


BackendFactory = Callable[..., Backend]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Class/function decorator: make a backend available as ``get_backend(name, ...)``."""

    def decorator(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[name] = factory
        return factory

    return decorator


def available_backends() -> list[str]:
    """Names of the registered backends."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_backend(name: str, loaded: LoadedModel, adapter: str | None = None, **kwargs: Any) -> Backend:
    """Build the backend registered as ``name`` for ``loaded`` (optionally with a PEFT adapter)."""
    _load_builtin()
    if name not in _REGISTRY:
        raise KnowpackError(f"unknown probe backend {name!r}",
                            hint=f"choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](loaded, adapter=adapter, **kwargs)


def _load_builtin() -> None:
    # Imported lazily so `import knowpack.probe` stays light (no torch until a backend is built).
    import knowpack.probe.backends.hf  # noqa: F401
