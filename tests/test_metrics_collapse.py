"""Answer collapse: diversity statistics and attractor answers found by a corrected binomial test."""

from __future__ import annotations

from collections import Counter

import numpy as np
from test_evaluate_helpers import config, mix, row

from knowpack.evaluate.metrics.collapse import answer_collapse, diversity, find_attractors


def test_diversity_statistics_match_numpy():
    counts = Counter({"paris": 6, "rome": 3, "lima": 1})
    d = diversity(counts, top=2)
    assert d["n_answers"] == 10 and d["unique_answers"] == 3
    assert d["mean_count"] == np.mean([6, 3, 1])
    assert abs(d["std_count"] - np.std([6, 3, 1])) < 1e-12  # the paper's bracket is np.std
    expected = -sum(p * np.log2(p) for p in (0.6, 0.3, 0.1))
    assert abs(d["entropy_bits"] - expected) < 1e-12
    assert [t["answer"] for t in d["top_answers"]] == ["paris", "rome"]


def test_attractor_detected_and_stable_answer_not():
    before = Counter({f"city{i}": 5 for i in range(40)}) + Counter({"london": 5, "alencon": 1})
    after = Counter({f"city{i}": 4 for i in range(40)}) + Counter({"london": 5, "alencon": 60})
    found = find_attractors(before, after, alpha=0.05, correction="bh", min_count=3)
    assert [a["answer"] for a in found] == ["alencon"]
    assert found[0]["p_adjusted"] <= 0.05 and found[0]["count_after"] == 60
    bonf = find_attractors(before, after, alpha=0.05, correction="bonferroni", min_count=3)
    assert [a["answer"] for a in bonf] == ["alencon"] and bonf[0]["p_adjusted"] >= found[0]["p_adjusted"]


def test_rare_new_answer_is_not_significant():
    before = Counter({f"city{i}": 5 for i in range(40)})
    after = before + Counter({"newtown": 2})
    assert find_attractors(before, after, alpha=0.05, correction="bh", min_count=1) == []


def test_collapse_on_probes_flags_training_targets_and_skips_refusals():
    base, adapted = {}, {}
    for i in range(30):
        fid = f"u{i}"
        base[fid] = row(fid, [f"Answer: Town {i}", "I couldn't find any information about it."], [False, False])
        adapted[fid] = row(fid, ["Answer: Alençon", f"Town {i}"], [False, False])
    base["t"] = row("t", ["x", "x"], [False, False])
    adapted["t"] = row("t", ["Alencon", "Alencon"], [True, True])
    out = answer_collapse(base, adapted, mix(["t"], answers={"t": "Alençon"}), config())
    assert out["base"]["n_answers"] == 32  # 30 refusals skipped
    assert out["adapted"]["unique_answers"] == 31
    assert [a["answer"] for a in out["attractors"]] == ["alencon"]
    assert out["attractors"][0]["training_target"] is True
    assert out["attractors"][0]["count_after"] == 30  # counted on untrained facts only
