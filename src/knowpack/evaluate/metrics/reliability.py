"""Reliability: how often the adapted model answers the trained Unknown facts (and their held-out paraphrases)."""

from __future__ import annotations

from collections import Counter
from statistics import fmean
from typing import Any

from knowpack.evaluate.registry import MetricOutput, metric
from knowpack.mix.artifacts import question_key


def heldout_paraphrases(fact_ids: list[str], facts: dict, train_questions: set[str]) -> tuple[list[tuple[str, str]], int]:
    """(fact id, paraphrase) pairs of trained facts whose paraphrase never appeared in train.jsonl.

    The paper labelled training questions as generalization; a paraphrase that was trained on
    measures memorisation, so it is excluded here. Returns the pairs and how many were excluded.
    """
    pairs, excluded = [], 0
    for fid in fact_ids:
        fact = facts.get(fid)
        if fact is None:
            continue
        for text in dict.fromkeys(fact.paraphrases):
            if question_key(text) in train_questions or question_key(text) == question_key(fact.question):
                excluded += 1
            else:
                pairs.append((fid, text))
    return pairs, excluded


def _pair_share(rows: list[list[bool]]) -> float | None:
    flat = [bool(x) for row in rows for x in row]
    return sum(flat) / len(flat) if flat else None


def _set_accuracy(probe: dict[str, dict], ids: list[str]) -> float | None:
    values = [probe[f]["p_greedy"] for f in ids if f in probe]
    return fmean(values) if values else None


@metric("reliability", needs=("base_probe", "adapter_probe", "mix", "reliability_answers"))
def reliability(*, config, base_probe, adapter_probe, mix, reliability_answers) -> MetricOutput:
    """Share of (trained Unknown fact × prompt) answered correctly after training; held-out paraphrases beside it.

    ``reliability_answers``: ``{"trained": {fact_id: [N bools]}, "paraphrases": [{"fact_id",
    "paraphrase", "correct": [N bools]}], "excluded": int}`` (every prompt answered, no early exit).
    """
    trained = reliability_answers["trained"]
    ids = list(trained)
    per_fact: dict[str, dict[str, Any]] = {f: {"reliability": _pair_share([trained[f]])} for f in ids}
    summary: dict[str, Any] = {
        "n_facts": len(ids),
        "n_pairs": sum(len(v) for v in trained.values()),
        "reliability": _pair_share(list(trained.values())),
        "reliability_before": _pair_share([base_probe[f]["greedy_correct"] for f in ids if f in base_probe]),
        "share_fully_learned": (sum(all(v) and bool(v) for v in trained.values()) / len(ids)) if ids else None,
        "adapted_categories": dict(Counter(adapter_probe[f]["category"] for f in ids if f in adapter_probe)),
        "denominator": "trained Unknown facts × probe prompts (greedy, few-shot, every prompt)",
    }
    rows = reliability_answers["paraphrases"]
    if not rows:
        summary["generalization"] = {"status": "no held-out paraphrases of trained facts",
                                     "excluded_trained_paraphrases": reliability_answers["excluded"]}
    else:
        summary["generalization"] = {
            "n_paraphrases": len(rows), "n_facts": len({r["fact_id"] for r in rows}),
            "excluded_trained_paraphrases": reliability_answers["excluded"],
            "reliability": _pair_share([r["correct"] for r in rows]),
            "denominator": "held-out paraphrases (never in train.jsonl) × probe prompts",
        }
        by_fact: dict[str, list[list[bool]]] = {}
        for r in rows:
            by_fact.setdefault(r["fact_id"], []).append(r["correct"])
        for fid, lists in by_fact.items():
            per_fact.setdefault(fid, {})["generalization"] = _pair_share(lists)
    for name in ("trained_known", "retention"):
        known = mix.eval_sets.ids(name)
        if known:
            summary[name] = {"n_facts": len(known), "p_greedy_before": _set_accuracy(base_probe, known),
                             "p_greedy_after": _set_accuracy(adapter_probe, known)}
    return MetricOutput(summary=summary, per_fact=per_fact)
