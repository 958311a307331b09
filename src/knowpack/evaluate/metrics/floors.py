"""The yardsticks of a knowledge shift, measured on the untrained facts.

* paired floor — the base model probed again with the very same prompts, facts in another order
  (other batch mates): what batching alone changes. It should be close to zero; a shift is
  compared with it like for like, because a cell's shifts also compare base and adapter on the
  same prompts.
* prompt sensitivity — the base model with another draw of few-shot prompts: how much the
  categories themselves depend on which exemplars were drawn.
"""

from __future__ import annotations

from knowpack.evaluate.metrics.shifts import transition_rows, transition_stats
from knowpack.evaluate.registry import MetricOutput, metric

COMPARISONS = {"paired_floor": "base→base(same prompts)", "prompt_sensitivity": "base→base(other prompts)"}


def greedy_agreement(first: dict[str, dict], second: dict[str, dict], ids: list[str]) -> float | None:
    """Share of greedy answers (fact × prompt) that are identical in both probes."""
    same = total = 0
    for fid in ids:
        a, b = first[fid].get("greedy_answers", []), second[fid].get("greedy_answers", [])
        same += sum(x == y for x, y in zip(a, b))
        total += min(len(a), len(b))
    return same / total if total else None


def floor_stats(base_probe: dict, other: dict) -> dict:
    """Transition statistics between two base-model probes, with category and answer agreement."""
    ids = [f for f in other if f in base_probe]
    stats = transition_stats(base_probe, other, ids)
    same = sum(stats["counts"][c][c] for c in stats["counts"])
    stats["category_agreement"] = same / stats["n"] if stats["n"] else None
    stats["greedy_answer_agreement"] = greedy_agreement(base_probe, other, ids)
    return stats


@metric("floors", needs=("base_probe", "paired_probe", "sensitivity_probe"))
def floors(*, config, base_probe, paired_probe, sensitivity_probe) -> MetricOutput:
    """Paired floor and prompt sensitivity of the base model on the untrained facts."""
    if paired_probe is None:
        return MetricOutput(summary={"status": "disabled",
                                     "hint": "set `noise_floor: true` in the eval config to measure it"})
    summary: dict = {"facts": "untrained facts", "seed_offset": config.noise_seed_offset}
    rows: list[dict] = []
    per_fact: dict[str, dict] = {}
    for name, probe in (("paired_floor", paired_probe), ("prompt_sensitivity", sensitivity_probe)):
        stats = floor_stats(base_probe, probe)
        summary[name] = stats
        rows += transition_rows(stats, comparison=COMPARISONS[name], group="untrained", subgroup="all")
        for fid, row in probe.items():
            per_fact.setdefault(fid, {})[f"{name}_category"] = row["category"]
    return MetricOutput(summary=summary, per_fact=per_fact, transitions=rows)
