"""Metric and input registries: metrics declare the inputs they need; the evaluator computes each once.

A metric is a function ``fn(*, config, **inputs) -> MetricOutput`` registered with
``@metric("name", needs=("base_probe", "mix"))``. An input is a function ``fn(ctx) -> value``
registered with ``@evaluation_input("name")``; inputs may ask the context for other inputs.
Adding a metric is adding one module under ``knowpack.evaluate.metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from knowpack.errors import KnowpackError


@dataclass
class MetricOutput:
    """What one metric contributes to the evaluation outputs.

    ``summary`` goes under the metric's name in ``metrics.json``; ``per_fact`` maps a fact id to
    columns merged into ``per_fact.parquet``; ``transitions`` are rows of ``transitions.csv``.
    """

    summary: dict[str, Any]
    per_fact: dict[str, dict[str, Any]] = field(default_factory=dict)
    transitions: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its name, the inputs it needs and the function computing it."""

    name: str
    needs: tuple[str, ...]
    fn: Callable[..., MetricOutput]
    doc: str


METRICS: dict[str, MetricSpec] = {}
INPUTS: dict[str, Callable[[Any], Any]] = {}


def metric(name: str, *, needs: tuple[str, ...] = ()) -> Callable:
    """Register ``fn`` as metric ``name``; ``needs`` names the inputs passed to it as keywords."""

    def wrap(fn: Callable[..., MetricOutput]) -> Callable[..., MetricOutput]:
        if name in METRICS and METRICS[name].fn is not fn:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = MetricSpec(name=name, needs=tuple(needs), fn=fn, doc=(fn.__doc__ or "").strip())
        return fn

    return wrap


def evaluation_input(name: str) -> Callable:
    """Register ``fn(ctx)`` as the provider of input ``name`` (computed at most once per run)."""

    def wrap(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        INPUTS[name] = fn
        return fn

    return wrap


# Reading order of metrics.json; modules not listed here (new metrics) follow in name order.
BUILTIN_ORDER = ("canary", "reliability", "shifts", "floors", "refusals", "collapse", "explanations", "bits",
                 "benchmarks")


def load_builtin_metrics() -> dict[str, MetricSpec]:
    """Import every module of ``knowpack.evaluate.metrics`` (which registers them) and return the registry."""
    import importlib
    import pkgutil

    import knowpack.evaluate.metrics as package

    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
    for name in [n for n in BUILTIN_ORDER if n in names] + [n for n in names if n not in BUILTIN_ORDER]:
        importlib.import_module(f"{package.__name__}.{name}")
    order = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    return dict(sorted(METRICS.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def select_metrics(names: list[str] | None) -> list[MetricSpec]:
    """The metrics to run, in registry order (``None`` = all); unknown names are a user error."""
    registry = load_builtin_metrics()
    if names is None:
        return list(registry.values())
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise KnowpackError(f"unknown metric(s): {', '.join(unknown)}",
                            hint=f"choose from: {', '.join(sorted(registry))}")
    return [registry[n] for n in names]
