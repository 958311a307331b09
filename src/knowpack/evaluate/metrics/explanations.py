"""Shift explanations (paper Table 5): why untrained facts flipped Unknown→HighlyKnown or back."""

from __future__ import annotations

from typing import Any

from knowpack.evaluate.metrics.collapse import answer_key
from knowpack.evaluate.metrics.refusals import refusal_flags
from knowpack.evaluate.registry import MetricOutput, metric

REASONS: dict[str, tuple[str, ...]] = {
    "Unknown→HighlyKnown": ("non_refusal", "explosion", "target", "domain"),
    "HighlyKnown→Unknown": ("explosion", "target", "domain"),
}


def fact_domain(fact) -> str:
    """The fact's domain, falling back to its relation (our facts may have no ontology domain)."""
    return fact.domain or fact.relation


def explain_fact(fid: str, *, base_row: dict, adapted_row: dict, fact, attractors: set[str],
                 targets: list[str], trained_domains: set[str], match_mode: str) -> dict[str, bool]:
    """Which reasons apply to one shifted fact (reasons overlap)."""
    from knowpack.probe.matching import is_correct

    answers = adapted_row.get("greedy_answers", [])
    reasons = {
        # Base model declined, adapted model answers correctly: the adapter stopped refusals.
        "non_refusal": any(refusal_flags(base_row)) and all(map(bool, adapted_row.get("greedy_correct", []))),
        "explosion": any(answer_key(a) in attractors for a in answers),
        "target": bool(targets) and any(is_correct(a, targets, match_mode) for a in answers),
        "domain": fact is not None and fact_domain(fact) in trained_domains,
    }
    return reasons


@metric("explanations", needs=("base_probe", "adapter_probe", "mix", "facts", "collapse", "match_mode"))
def explanations(*, config, base_probe, adapter_probe, mix, facts, collapse, match_mode) -> MetricOutput:
    """Share of UK→HK and HK→UK shifts on untrained facts explained by each reason."""
    attractors = {row["answer"] for row in collapse["attractors"]}
    trained_domains = {fact_domain(facts[f]) for f in mix.trained_ids if f in facts}
    summary: dict[str, Any] = {"facts": "untrained facts only (trained facts are meant to shift)",
                               "definitions": {
                                   "non_refusal": "base model refused (any greedy answer) and the adapted model is correct",
                                   "explosion": "an adapted greedy answer is an attractor answer (see collapse)",
                                   "target": "an adapted greedy answer matches a train.jsonl answer",
                                   "domain": "the fact's domain (else relation) equals a trained fact's",
                                   "explained": "any reason applies (reasons overlap)"}}
    per_fact: dict[str, dict] = {}
    for shift, names in REASONS.items():
        before, after = shift.split("→")
        ids = [f for f in base_probe if f in adapter_probe and f not in mix.trained_ids
               and base_probe[f]["category"] == before and adapter_probe[f]["category"] == after]
        tally = {name: 0 for name in (*names, "explained")}
        for f in ids:
            reasons = explain_fact(f, base_row=base_probe[f], adapted_row=adapter_probe[f], fact=facts.get(f),
                                   attractors=attractors, targets=mix.target_answers,
                                   trained_domains=trained_domains, match_mode=match_mode)
            reasons = {k: v for k, v in reasons.items() if k in names}
            reasons["explained"] = any(reasons.values())
            for k, v in reasons.items():
                tally[k] += v
            per_fact[f] = {"shift": shift, "reasons": ",".join(k for k, v in reasons.items() if v and k != "explained")}
        summary[shift] = {"n": len(ids), "counts": tally,
                          "shares": {k: v / len(ids) if ids else None for k, v in tally.items()}}
    return MetricOutput(summary=summary, per_fact=per_fact)
