"""Answer collapse: answer diversity before/after training and "attractor" answers that took over."""

from __future__ import annotations

import math
from collections import Counter
from statistics import fmean, pstdev
from typing import Any, Iterable

from knowpack.evaluate.registry import MetricOutput, metric


def answer_key(text: str) -> str:
    """The normalized answer span of a generation (what diversity and attractors are counted on)."""
    from knowpack.probe.matching import answer_span, normalize

    return normalize(answer_span(text))


def answer_counts(probe: dict[str, dict], ids: Iterable[str]) -> Counter:
    """Counts of normalized greedy answer spans over ``ids``; refusals and empty answers are skipped."""
    from knowpack.probe.refusal import is_refusal

    counts: Counter = Counter()
    for fid in ids:
        for text in probe[fid].get("greedy_answers", []):
            key = answer_key(text)
            if key and not is_refusal(text):
                counts[key] += 1
    return counts


def diversity(counts: Counter, top: int) -> dict[str, Any]:
    """Unique answers, mean/std of the count per unique answer (std as the paper's code), entropy."""
    total = sum(counts.values())
    values = list(counts.values())
    entropy = -sum(c / total * math.log2(c / total) for c in values) if total else 0.0
    return {
        "n_answers": total, "unique_answers": len(counts),
        "mean_count": fmean(values) if values else None,
        "std_count": pstdev(values) if values else None,
        "entropy_bits": entropy,
        "normalized_entropy": entropy / math.log2(len(counts)) if len(counts) > 1 else None,
        "top_answers": [{"answer": a, "count": c, "share": c / total} for a, c in counts.most_common(top)],
    }


def find_attractors(before: Counter, after: Counter, *, alpha: float, correction: str,
                    min_count: int) -> list[dict[str, Any]]:
    """Answers whose frequency rose significantly over the base model.

    One-sided binomial test per answer: k = count after training among n answers, null rate = the
    base model's rate (add-½ smoothed, so an answer the base never gave is not infinitely
    surprising). p-values are corrected for the number of answers tested (BH or Bonferroni).
    """
    import numpy as np
    from scipy.stats import binom, false_discovery_control

    n_before, n_after = sum(before.values()), sum(after.values())
    if not n_after:
        return []
    tested = []
    for answer, k in after.items():
        rate0 = (before.get(answer, 0) + 0.5) / (n_before + 1)
        if k >= min_count and k / n_after > rate0:
            tested.append((answer, k, rate0, float(binom.sf(k - 1, n_after, rate0))))
    if not tested:
        return []
    raw = np.array([t[3] for t in tested])
    adjusted = (false_discovery_control(raw, method="bh") if correction == "bh"
                else np.minimum(raw * len(raw), 1.0))
    found = [{"answer": a, "count_before": before.get(a, 0), "count_after": k,
              "share_before": before.get(a, 0) / n_before if n_before else None,
              "share_after": k / n_after, "p_value": p, "p_adjusted": float(q)}
             for (a, k, _rate, p), q in zip(tested, adjusted) if q <= alpha]
    return sorted(found, key=lambda r: (-r["count_after"], r["answer"]))


def answer_collapse(base_probe: dict, adapter_probe: dict, mix, config) -> dict[str, Any]:
    """Diversity of base and adapted answers over all probed facts, and attractors on untrained facts.

    Attractors are tested on untrained facts only: trained facts are supposed to change their
    answer to the trained target, which is learning, not collapse.
    """
    from knowpack.probe.matching import normalize

    probed = [f for f in base_probe if f in adapter_probe]
    untrained = [f for f in probed if f not in mix.trained_ids]
    targets = {normalize(a) for a in mix.target_answers} - {""}
    attractors = find_attractors(answer_counts(base_probe, untrained), answer_counts(adapter_probe, untrained),
                                 alpha=config.attractor_alpha, correction=config.attractor_correction,
                                 min_count=config.attractor_min_count)
    for row in attractors:
        row["training_target"] = row["answer"] in targets
    return {
        "base": diversity(answer_counts(base_probe, probed), config.top_answers),
        "adapted": diversity(answer_counts(adapter_probe, probed), config.top_answers),
        "attractors": attractors,
        "attractor_test": {"test": "one-sided binomial vs the base model's rate (add-1/2 smoothed)",
                           "correction": config.attractor_correction, "alpha": config.attractor_alpha,
                           "min_count": config.attractor_min_count, "facts": "untrained"},
        "note": "answer spans normalized; refusals and empty answers skipped; std is a standard deviation",
    }


@metric("collapse", needs=("collapse",))
def collapse(*, config, collapse) -> MetricOutput:
    """Answer diversity (unique answers, count mean/std, entropy) and attractor answers."""
    return MetricOutput(summary=collapse)
