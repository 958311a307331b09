"""Knowledge shifts and the noise floor on hand-made probe results with known answers."""

from __future__ import annotations

from test_evaluate_helpers import cat_row, config, fact, mix

from knowpack.evaluate.metrics.noise_floor import noise_floor
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


def test_shifts_split_trained_untrained_relation_tier_with_noise_beside():
    facts = {"t1": fact("t1"), "u1": fact("u1", relation="capital", tier="head"),
             "u2": fact("u2", relation="river", tier="tail"), "u3": fact("u3", relation="river", tier="tail")}
    base = _probe({"t1": "Unknown", "u1": "HighlyKnown", "u2": "Unknown", "u3": "MaybeKnown"})
    adapted = _probe({"t1": "HighlyKnown", "u1": "MaybeKnown", "u2": "Unknown", "u3": "MaybeKnown"})
    noise = _probe({"t1": "Unknown", "u1": "HighlyKnown", "u2": "WeaklyKnown", "u3": "MaybeKnown"})
    out = knowledge_shifts(config=config(), base_probe=base, adapter_probe=adapted, noise_probe=noise,
                           mix=mix(["t1"]), facts=facts)
    s = out.summary
    assert s["trained"]["all"]["n"] == 1 and s["trained"]["all"]["positive"] == 1
    assert s["untrained"]["all"]["n"] == 3 and s["untrained"]["all"]["negative"] == 1
    assert s["untrained"]["all"]["positive"] == 0
    assert s["untrained"]["noise_floor"]["positive"] == 0 and s["untrained"]["noise_floor"]["n"] == 3
    assert s["untrained"]["by_relation"]["capital"]["negative_share"] == 1.0
    assert s["untrained"]["by_tier"]["tail"]["n"] == 2
    assert "noise_floor" in s["untrained"]["by_tier"]["tail"]
    assert "positive_share" in s["denominators"]
    # 16 cells per matrix: trained/untrained overall + per relation/tier subgroups.
    assert len(out.transitions) % 16 == 0 and out.transitions
    assert out.per_fact["u1"] == {"base_category": "HighlyKnown", "adapted_category": "MaybeKnown"}


def test_noise_floor_identical_probes_and_disabled():
    base = _probe({"a": "Unknown", "b": "HighlyKnown"})
    out = noise_floor(config=config(), base_probe=base, noise_probe=dict(base), mix=mix(["a"]))
    assert out.summary["all"]["category_agreement"] == 1.0
    assert out.summary["all"]["greedy_answer_agreement"] == 1.0
    assert out.summary["all"]["positive_share"] == 0.0
    off = noise_floor(config=config(noise_floor=False), base_probe=base, noise_probe=None, mix=mix(["a"]))
    assert off.summary["status"] == "disabled"


def test_noise_floor_counts_flips():
    base = _probe({"a": "Unknown", "b": "HighlyKnown", "c": "MaybeKnown", "d": "HighlyKnown"})
    noise = _probe({"a": "WeaklyKnown", "b": "MaybeKnown", "c": "MaybeKnown", "d": "HighlyKnown"})
    out = noise_floor(config=config(), base_probe=base, noise_probe=noise, mix=mix([]))
    assert out.summary["all"]["category_agreement"] == 0.5
    assert out.summary["untrained"]["negative"] == 1  # HK→MK; UK→WK is neither positive nor negative
