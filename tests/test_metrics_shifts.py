"""Knowledge shifts and their yardsticks (paired floor, prompt sensitivity) on hand-made probes with known answers."""

from __future__ import annotations

from test_evaluate_helpers import cat_row, config, fact, mix

from knowpack.evaluate.metrics.floors import floors
from knowpack.evaluate.metrics.shifts import knowledge_shifts, transition_stats


def _probe(cats: dict[str, str]) -> dict[str, dict]:
    return {fid: cat_row(fid, c) for fid, c in cats.items()}


def test_transition_stats_counts_and_named_denominators():
    before = _probe({"a": "Unknown", "b": "HighlyKnown", "c": "MaybeKnown", "d": "WeaklyKnown"})
    after = _probe({"a": "HighlyKnown", "b": "Unknown", "c": "HighlyKnown", "d": "WeaklyKnown"})
    s = transition_stats(before, after, ["a", "b", "c", "d", "missing"])
    assert s["n"] == 4
    assert s["counts"]["Unknown"]["HighlyKnown"] == 1 and s["counts"]["HighlyKnown"]["Unknown"] == 1
    assert s["positive"] == 2 and s["negative"] == 1  # UK→HK + MK→HK ; HK→UK
    assert s["positive_share"] == 0.5 and s["negative_share"] == 0.25
    assert s["n_improvable"] == 3 and s["positive_share_of_improvable"] == 2 / 3
    assert s["n_degradable"] == 2 and s["negative_share_of_degradable"] == 0.5
    assert s["shares"]["WeaklyKnown"]["WeaklyKnown"] == 0.25


def test_shifts_split_trained_untrained_relation_tier_with_yardsticks_beside():
    facts = {"t1": fact("t1"), "u1": fact("u1", relation="capital", tier="head"),
             "u2": fact("u2", relation="river", tier="tail"), "u3": fact("u3", relation="river", tier="tail")}
    base = _probe({"t1": "Unknown", "u1": "HighlyKnown", "u2": "Unknown", "u3": "MaybeKnown"})
    adapted = _probe({"t1": "HighlyKnown", "u1": "MaybeKnown", "u2": "Unknown", "u3": "MaybeKnown"})
    paired = _probe({"u1": "HighlyKnown", "u2": "Unknown", "u3": "MaybeKnown"})
    other = _probe({"u1": "HighlyKnown", "u2": "WeaklyKnown", "u3": "HighlyKnown"})
    adapted_other = _probe({"u1": "Unknown", "u2": "WeaklyKnown", "u3": "HighlyKnown"})
    out = knowledge_shifts(config=config(), base_probe=base, adapter_probe=adapted, paired_probe=paired,
                           sensitivity_probe=other, adapter_alt_probe=adapted_other, mix=mix(["t1"]), facts=facts)
    s = out.summary
    assert s["trained"]["all"]["n"] == 1 and s["trained"]["all"]["positive"] == 1
    assert "paired_floor" not in s["trained"]  # trained facts are meant to shift: no yardstick
    assert s["untrained"]["all"]["n"] == 3 and s["untrained"]["all"]["negative"] == 1
    assert s["untrained"]["all"]["positive"] == 0
    assert s["untrained"]["paired_floor"]["n"] == 3 and s["untrained"]["paired_floor"]["positive"] == 0
    assert s["untrained"]["prompt_sensitivity"]["positive"] == 1  # MK→HK on the other draw
    assert s["untrained"]["second_draw"]["negative"] == 1  # HK→UK, both on the other draw
    assert s["untrained"]["by_relation"]["capital"]["negative_share"] == 1.0
    assert s["untrained"]["by_tier"]["tail"]["n"] == 2
    assert "paired_floor" in s["untrained"]["by_tier"]["tail"]
    assert "positive_share" in s["denominators"]
    # 16 cells per matrix: trained/untrained overall + per relation/tier subgroups + the other draw.
    assert len(out.transitions) % 16 == 0 and out.transitions
    assert out.per_fact["u1"] == {"base_category": "HighlyKnown", "adapted_category": "MaybeKnown",
                                  "adapted_category_other_prompts": "Unknown"}


def test_floors_identical_probes_and_disabled():
    base = _probe({"a": "Unknown", "b": "HighlyKnown"})
    out = floors(config=config(), base_probe=base, paired_probe=dict(base), sensitivity_probe=dict(base))
    for name in ("paired_floor", "prompt_sensitivity"):
        assert out.summary[name]["category_agreement"] == 1.0
        assert out.summary[name]["greedy_answer_agreement"] == 1.0
        assert out.summary[name]["positive_share"] == 0.0
    off = floors(config=config(noise_floor=False), base_probe=base, paired_probe=None, sensitivity_probe=None)
    assert off.summary["status"] == "disabled"


def test_floors_count_flips():
    base = _probe({"a": "Unknown", "b": "HighlyKnown", "c": "MaybeKnown", "d": "HighlyKnown"})
    other = _probe({"a": "WeaklyKnown", "b": "MaybeKnown", "c": "MaybeKnown", "d": "HighlyKnown"})
    out = floors(config=config(), base_probe=base, paired_probe=dict(base), sensitivity_probe=other)
    assert out.summary["prompt_sensitivity"]["category_agreement"] == 0.5
    assert out.summary["prompt_sensitivity"]["negative"] == 1  # HK→MK; UK→WK is neither positive nor negative
    assert out.summary["paired_floor"]["negative"] == 0
