"""Executors: what runs a study's cells once the driver has prepared them.

``run_study`` always does the shared work itself, in the process that drives the study: it loads
the facts, checks the spec against the model and probes the base model once. An executor then
runs the missing stages of each cell and records every outcome in the cell's ``status.json``
(and ``error.log`` on failure), so resuming, ``study status`` and results.csv do not depend on
which executor ran a cell.

- ``local`` (:class:`LocalExecutor`): cells one after another in this process, on the model
  already loaded for the base probe.
- ``ray`` (:class:`~knowpack.study.executors.ray_executor.RayExecutor`): each cell a Ray task
  with its own CPU/GPU reservation, on a local Ray instance or a cluster (optional extra
  ``knowpack[ray]``).
"""

from __future__ import annotations

from typing import Any, Protocol

from knowpack.errors import KnowpackError
from knowpack.study.executors.local import LocalExecutor

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Runs ``cells`` with the driver's prepared context and records each outcome in ``run``."""

    def run(self, ctx: Any, cells: list, run: Any, *, mlflow: bool) -> None: ...


def make_executor(kind: str, options: dict[str, Any] | None = None) -> Executor:
    """The executor named ``kind``. ``options`` (the Ray options that were given: address,
    cpus_per_cell, gpus_per_cell) are refused for ``local``, so a forgotten ``--executor ray``
    does not silently run the whole grid in one process."""
    options = dict(options or {})
    if kind == "local":
        if options:
            flags = ", ".join("--" + k.replace("_", "-") for k in options)
            raise KnowpackError(f"{flags} only apply to the Ray executor", hint="add --executor ray, or drop them")
        return LocalExecutor()
    if kind == "ray":
        from knowpack.study.executors.ray_executor import RayConfig, RayExecutor, require_ray

        require_ray()  # before hours of work, not after the base probe
        return RayExecutor(RayConfig.from_options(options))
    raise KnowpackError(f"unknown executor {kind!r}", hint=f"choose one of: {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "make_executor"]
