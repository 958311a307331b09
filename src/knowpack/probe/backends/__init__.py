"""Generation backends behind one protocol, chosen by name (built in: ``hf``, ``vllm``, ``auto``)."""

from knowpack.probe.backends.base import Backend
from knowpack.probe.backends.registry import available_backends, get_backend, register_backend

__all__ = ["Backend", "available_backends", "get_backend", "register_backend"]
