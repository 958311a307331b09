"""External benchmarks (MMLU k-shot, TruthfulQA MC1/MC2): base model vs adapted model."""

from __future__ import annotations

from typing import Any

from knowpack.evaluate.registry import MetricOutput, metric

HEADLINES: dict[str, tuple[str, ...]] = {"mmlu": ("acc", "acc_macro"), "truthfulqa": ("mc1", "mc2")}


def compare(base: dict[str, Any], adapted: dict[str, Any]) -> dict[str, Any]:
    """Per benchmark: base and adapted results side by side, with adapted − base for the headline scores."""
    out: dict[str, Any] = {}
    for name in sorted(set(base) | set(adapted)):
        b, a = base.get(name, {}), adapted.get(name, {})
        if b.get("status") or a.get("status"):
            out[name] = b if b.get("status") else a  # e.g. "not configured" + how to configure
            continue
        entry: dict[str, Any] = {"base": b, "adapted": a}
        for key in HEADLINES.get(name, ()):
            if b.get(key) is not None and a.get(key) is not None:
                entry[f"delta_{key}"] = a[key] - b[key]
        out[name] = entry
    return out


@metric("benchmarks", needs=("benchmarks",))
def benchmarks(*, config, benchmarks) -> MetricOutput:
    """MMLU and TruthfulQA through lm-evaluation-harness on local data, base vs adapted."""
    summary = compare(benchmarks["base"], benchmarks["adapted"])
    if benchmarks.get("skipped"):
        summary["skipped"] = benchmarks["skipped"]
    summary["harness"] = {"library": "lm-evaluation-harness", "chat_template": False,
                          "base_cache": benchmarks.get("base_cache")}
    return MetricOutput(summary=summary)
