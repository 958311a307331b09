"""Noise floor: how much two base-model probes that differ only in seed and batch order disagree."""

from __future__ import annotations

from knowpack.evaluate.metrics.shifts import fact_groups, transition_rows, transition_stats
from knowpack.evaluate.registry import MetricOutput, metric


def greedy_agreement(first: dict[str, dict], second: dict[str, dict], ids: list[str]) -> float | None:
    """Share of greedy answers (fact × prompt) that are identical in both probes."""
    same = total = 0
    for fid in ids:
        a, b = first[fid].get("greedy_answers", []), second[fid].get("greedy_answers", [])
        same += sum(x == y for x, y in zip(a, b))
        total += min(len(a), len(b))
    return same / total if total else None


@metric("noise_floor", needs=("base_probe", "noise_probe", "mix"))
def noise_floor(*, config, base_probe, noise_probe, mix) -> MetricOutput:
    """Transition matrix between two base-model probes (seed + batch order differ); the shifts' yardstick."""
    if noise_probe is None:
        return MetricOutput(summary={"status": "disabled",
                                     "hint": "set `noise_floor: true` in the eval config to measure it"})
    summary: dict = {"seed_offset": config.noise_seed_offset}
    rows: list[dict] = []
    for group, ids in {"all": [f for f in base_probe if f in noise_probe],
                       **fact_groups(base_probe, noise_probe, mix)}.items():
        stats = transition_stats(base_probe, noise_probe, ids)
        same = sum(stats["counts"][c][c] for c in stats["counts"])
        stats["category_agreement"] = same / stats["n"] if stats["n"] else None
        stats["greedy_answer_agreement"] = greedy_agreement(base_probe, noise_probe, ids)
        summary[group] = stats
        rows += transition_rows(stats, comparison="base→base(other seed)", group=group, subgroup="all")
    per_fact = {fid: {"noise_category": row["category"]} for fid, row in noise_probe.items()}
    return MetricOutput(summary=summary, per_fact=per_fact, transitions=rows)
