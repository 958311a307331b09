"""Refusals: how often base and adapted models decline to answer (paper Table 4: 15% → ~0)."""

from __future__ import annotations

from typing import Any

from knowpack.evaluate.metrics.shifts import KNOWN
from knowpack.evaluate.registry import MetricOutput, metric


def refusal_flags(row: dict) -> list[bool]:
    """is_refusal for every greedy answer of a probe row (the paper checked only the first one)."""
    from knowpack.probe.refusal import is_refusal

    return [bool(is_refusal(text)) for text in row.get("greedy_answers", [])]


def refusal_rates(probe: dict[str, dict], ids: list[str]) -> dict[str, Any]:
    """Answer-level and fact-level (any greedy answer refused) refusal rates over ``ids``."""
    flags = {f: refusal_flags(probe[f]) for f in ids if f in probe}
    answers = [x for v in flags.values() for x in v]
    facts_refused = sum(any(v) for v in flags.values())
    return {"n_facts": len(flags), "n_answers": len(answers),
            "refused_facts": facts_refused, "refused_answers": sum(answers),
            "fact_rate": facts_refused / len(flags) if flags else None,
            "answer_rate": sum(answers) / len(answers) if answers else None}


@metric("refusals", needs=("base_probe", "adapter_probe", "mix"))
def refusals(*, config, base_probe, adapter_probe, mix) -> MetricOutput:
    """Refusal rates of base and adapted model on untrained Unknown, known and all probed facts."""
    probed = [f for f in base_probe if f in adapter_probe]
    untrained = [f for f in probed if f not in mix.trained_ids]
    groups = {
        "untrained_unknown": [f for f in untrained if base_probe[f]["category"] == "Unknown"],
        "untrained_known": [f for f in untrained if base_probe[f]["category"] in KNOWN],
        "all": probed,
    }
    summary: dict[str, Any] = {
        "definition": "is_refusal on every greedy answer; a fact counts as refused when any of them is",
        **{name: {"base": refusal_rates(base_probe, ids), "adapted": refusal_rates(adapter_probe, ids)}
           for name, ids in groups.items()}}
    per_fact = {}
    for f in probed:
        before, after = refusal_flags(base_probe[f]), refusal_flags(adapter_probe[f])
        per_fact[f] = {"base_refusal_rate": sum(before) / len(before) if before else None,
                       "adapted_refusal_rate": sum(after) / len(after) if after else None}
    return MetricOutput(summary=summary, per_fact=per_fact)
