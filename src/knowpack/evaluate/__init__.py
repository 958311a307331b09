"""Evaluation of a trained adapter: metric registry, inputs, benchmarks and the `evaluate` runner."""

from knowpack.evaluate.config import EvalConfig
from knowpack.evaluate.registry import METRICS, MetricOutput, evaluation_input, metric

__all__ = ["EvalConfig", "METRICS", "MetricOutput", "evaluate", "evaluation_input", "metric"]


def evaluate(*args, **kwargs):
    """Lazy alias of :func:`knowpack.evaluate.runner.evaluate` (keeps ``import knowpack.evaluate`` light)."""
    from knowpack.evaluate.runner import evaluate as run

    return run(*args, **kwargs)
