"""Knowledge shifts: the 4×4 category transition matrix base → adapted, next to its yardsticks."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from knowpack.evaluate.registry import MetricOutput, metric
from knowpack.probe.slick import CATEGORIES
KNOWN: frozenset[str] = frozenset({"HighlyKnown", "MaybeKnown"})
POSITIVE: frozenset[tuple[str, str]] = frozenset({
    ("Unknown", "MaybeKnown"), ("Unknown", "HighlyKnown"), ("WeaklyKnown", "MaybeKnown"),
    ("WeaklyKnown", "HighlyKnown"), ("MaybeKnown", "HighlyKnown")})
NEGATIVE: frozenset[tuple[str, str]] = frozenset({
    ("HighlyKnown", "MaybeKnown"), ("HighlyKnown", "WeaklyKnown"), ("HighlyKnown", "Unknown"),
    ("MaybeKnown", "WeaklyKnown"), ("MaybeKnown", "Unknown")})
# The paper does not state its denominator; we name ours so every share can be read unambiguously.
DENOMINATORS: dict[str, str] = {
    "positive_share": "facts of the group whose category was compared (n)",
    "negative_share": "facts of the group whose category was compared (n)",
    "positive_share_of_improvable": "facts of the group that were not HighlyKnown before (n_improvable)",
    "negative_share_of_degradable": "facts of the group that were HighlyKnown or MaybeKnown before (n_degradable)",
    "matrix_shares": "facts of the group (n); rows = category before, columns = category after",
}


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def transition_stats(before: dict[str, dict], after: dict[str, dict], ids: Iterable[str]) -> dict[str, Any]:
    """Transition counts/shares between two probes over ``ids`` present in both."""
    counts = {a: {b: 0 for b in CATEGORIES} for a in CATEGORIES}
    n = 0
    for fid in ids:
        if fid in before and fid in after:
            counts[before[fid]["category"]][after[fid]["category"]] += 1
            n += 1
    pos = sum(counts[a][b] for a, b in POSITIVE)
    neg = sum(counts[a][b] for a, b in NEGATIVE)
    improvable = n - sum(counts["HighlyKnown"].values())
    degradable = sum(counts["HighlyKnown"].values()) + sum(counts["MaybeKnown"].values())
    return {
        "n": n, "n_improvable": improvable, "n_degradable": degradable,
        "counts": counts,
        "shares": {a: {b: _ratio(c, n) for b, c in row.items()} for a, row in counts.items()},
        "positive": pos, "negative": neg,
        "positive_share": _ratio(pos, n), "negative_share": _ratio(neg, n),
        "positive_share_of_improvable": _ratio(pos, improvable),
        "negative_share_of_degradable": _ratio(neg, degradable),
    }


def compact(stats: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of ``transition_stats`` (no matrices)."""
    keys = ("n", "positive", "negative", "positive_share", "negative_share",
            "positive_share_of_improvable", "negative_share_of_degradable")
    return {k: stats[k] for k in keys}


def transition_rows(stats: dict[str, Any], *, comparison: str, group: str, subgroup: str) -> list[dict]:
    """Long-format rows of one matrix for ``transitions.csv``."""
    return [{"comparison": comparison, "group": group, "subgroup": subgroup, "from": a, "to": b,
             "count": stats["counts"][a][b], "share": stats["shares"][a][b]}
            for a in CATEGORIES for b in CATEGORIES]


def split_by(ids: Iterable[str], facts: dict, attribute: str) -> dict[str, list[str]]:
    """Group fact ids by a Fact attribute (missing values grouped as "unknown")."""
    groups: dict[str, list[str]] = defaultdict(list)
    for fid in ids:
        fact = facts.get(fid)
        value = getattr(fact, attribute, None) if fact is not None else None
        groups[value if value is not None else "unknown"].append(fid)
    return dict(sorted(groups.items()))


def fact_groups(base_probe: dict, adapter_probe: dict, mix) -> dict[str, list[str]]:
    """Trained (any fact in train.jsonl) and untrained fact ids among those probed both times."""
    probed = [fid for fid in base_probe if fid in adapter_probe]
    trained = mix.trained_ids
    return {"trained": [f for f in probed if f in trained], "untrained": [f for f in probed if f not in trained]}


def _yardsticks(ids: list[str], base_probe: dict, yardsticks: dict[str, tuple[dict | None, dict | None]]) -> dict:
    """Headline shares of each yardstick comparison (before, after) over ``ids``."""
    out = {}
    for name, (before, after) in yardsticks.items():
        if before is not None and after is not None:
            out[name] = compact(transition_stats(before, after, [f for f in ids if f in before and f in after]))
    return out


@metric("shifts", needs=("base_probe", "adapter_probe", "paired_probe", "sensitivity_probe", "adapter_alt_probe",
                         "mix", "facts"))
def knowledge_shifts(*, config, base_probe, adapter_probe, paired_probe, sensitivity_probe, adapter_alt_probe,
                     mix, facts) -> MetricOutput:
    """Category transitions base → adapted for trained and untrained facts, by relation and tier.

    Untrained facts also carry the yardsticks: the paired floor (base → base, same prompts),
    prompt sensitivity (base → base, other prompts) and the shift on the second prompt draw
    (base → adapted, both on the other prompts).
    """
    yardsticks = {"paired_floor": (base_probe, paired_probe), "prompt_sensitivity": (base_probe, sensitivity_probe),
                  "second_draw": (sensitivity_probe, adapter_alt_probe)}
    rows: list[dict] = []
    summary: dict[str, Any] = {"denominators": DENOMINATORS,
                               "positive_transitions": sorted("→".join(t) for t in POSITIVE),
                               "negative_transitions": sorted("→".join(t) for t in NEGATIVE)}
    for group, ids in fact_groups(base_probe, adapter_probe, mix).items():
        stats = transition_stats(base_probe, adapter_probe, ids)
        rows += transition_rows(stats, comparison="base→adapted", group=group, subgroup="all")
        entry: dict[str, Any] = {"all": stats}
        if group == "untrained":
            entry.update(_yardsticks(ids, base_probe, yardsticks))
            if sensitivity_probe is not None and adapter_alt_probe is not None:
                alt = transition_stats(sensitivity_probe, adapter_alt_probe, ids)
                rows += transition_rows(alt, comparison="base→adapted(other prompts)", group=group, subgroup="all")
        for attribute in ("relation", "tier"):
            per: dict[str, Any] = {}
            for value, sub in split_by(ids, facts, attribute).items():
                sub_stats = transition_stats(base_probe, adapter_probe, sub)
                rows += transition_rows(sub_stats, comparison="base→adapted", group=group,
                                        subgroup=f"{attribute}={value}")
                per[value] = compact(sub_stats)
                if group == "untrained":
                    per[value].update(_yardsticks(sub, base_probe, yardsticks))
            entry[f"by_{attribute}"] = per
        summary[group] = entry
    per_fact = {fid: {"base_category": row["category"],
                      "adapted_category": adapter_probe[fid]["category"] if fid in adapter_probe else None}
                for fid, row in base_probe.items()}
    for fid, row in (adapter_alt_probe or {}).items():
        per_fact.setdefault(fid, {})["adapted_category_other_prompts"] = row["category"]
    return MetricOutput(summary=summary, per_fact=per_fact, transitions=rows)
