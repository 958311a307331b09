"""Claim files and their evaluator, on synthetic study frames (no model).

Each synthetic study is a grid of n × mixture × seed cells whose metrics are set by a "world": a
function of the cell's axes. A world built to support a claim must give "supported", one built
to contradict it "contradicted", and the numbers (estimate, CI) are checked by hand where the
world makes them known in closed form.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
import pytest

from knowpack.errors import KnowpackError
from knowpack.report.claims import (NOT_DECIDABLE, decide, evaluate_claims, load_claims, paper_claims, parse_claims,
                                    render_markdown, verdict_frame)
from knowpack.report.claims_schema import Threshold
from knowpack.report.stats import mcnemar_exact, paired_bootstrap, t_interval

NS = (4, 12, 36)
SEEDS = (1, 2, 3)
# Control cells (known facts only) at k = 0 and k = 2; the worlds give them values that would
# flip the paper's claims if a group of new-fact cells let them in.
MIXTURES = ((0, "paraphrase"), (2, "highly_known"), (2, "paraphrase"), (0, "control"), (2, "control"))
LABELS = {"paraphrase": "Para", "highly_known": "HK", "control": "Control"}
HELD_OUT = 60  # held-out facts shared by every cell of one (n, seed)


def _key(n, extra, kind, seed) -> str:
    return f"{n}-{kind}-{extra}-{seed}"


def _wiggle(n, seed, kind="", scale=1.0) -> float:
    """Deterministic noise in [-2, 2] * scale that differs between cells."""
    return ((zlib.crc32(f"{n}{seed}{kind}".encode()) % 5) - 2) * scale


def study(world, *, ns=NS, seeds=SEEDS, mixtures=MIXTURES, drop_columns=()) -> pd.DataFrame:
    """results.csv-like frame: one row per cell with the metrics ``world(n, extra, kind, seed)`` gives."""
    rows = []
    for n in ns:
        for extra, kind in mixtures:
            for seed in seeds:
                row = {"key": _key(n, extra, kind, seed), "unknown": n, "extra": extra, "kind": kind, "seed": seed,
                       "mixture": f"{extra} {LABELS[kind]}" if extra or kind == "control" else "w/o",
                       "state": "done"}
                row.update(world(n, extra, kind, seed))
                rows.append(row)
    return pd.DataFrame(rows).drop(columns=list(drop_columns))


def curves_for(cells: pd.DataFrame, reach, epochs=5) -> pd.DataFrame:
    """Curves whose reliability jumps to 0.95 at epoch ``reach(row)`` (never, if beyond ``epochs``)."""
    rows = []
    for _, cell in cells.iterrows():
        first = reach(cell)
        for epoch in range(1, epochs + 1):
            rows.append({"key": cell["key"], "epoch": epoch, "loss": 1.0 / epoch,
                         "reliability": 0.95 if epoch >= first else 0.5, "retention": 1.0, "seconds": 1.0})
    return pd.DataFrame(rows)


def outcomes_for(cells: pd.DataFrame, rate):
    """outcomes(key): per held-out fact of the cell's (n, seed), negative with probability ``rate(row)``."""
    by_key = {row["key"]: row for _, row in cells.iterrows()}

    def outcomes(key):
        row = by_key[key]
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        ids = [f"n{row['unknown']}-s{row['seed']}-f{i}" for i in range(HELD_OUT)]
        negative = rng.random(HELD_OUT) < rate(row)
        return pd.DataFrame({"id": ids, "positive": ~negative & (rng.random(HELD_OUT) < 0.1), "negative": negative})

    return outcomes


# ---------------------------------------------------------------------------------------------
# Worlds for the paper's claims.

def supporting(n, extra, kind, seed):
    """Every paper claim holds: near-perfect reliability, MMLU loss grows with n, refusals fall,
    the smallest w/o cells collapse onto attractors."""
    smallest_plain = extra == 0 and n == min(NS) and kind != "control"
    if kind == "control":
        return {"reliability": 0.2, "mmlu_base": 0.5, "mmlu": 0.3 + 0.05 * math.log2(n),
                "truthfulqa_mc1_base": 0.4, "truthfulqa_mc1": 0.5, "refusal_rate_base": 0.15,
                "refusal_rate": 0.01, "unique_answers_base": 100.0, "unique_answers": 300.0, "attractors": 0.0,
                "negative_shift": 0.1}
    return {
        "reliability": 0.99 + _wiggle(n, seed, kind, 0.002),
        "mmlu_base": 0.5, "mmlu": 0.5 - 0.02 * math.log2(n) + _wiggle(n, seed, kind, 0.001),
        "truthfulqa_mc1_base": 0.4, "truthfulqa_mc1": 0.4 - 0.01 * math.log2(n) + _wiggle(n, seed, kind, 0.001),
        "refusal_rate_base": 0.15, "refusal_rate": 0.02 + _wiggle(n, seed, kind, 0.005),
        "unique_answers_base": 100.0, "unique_answers": 60.0 + _wiggle(n, seed, kind) if smallest_plain else 101.0,
        "attractors": 3.0 + (seed % 2) if smallest_plain else 0.0,
        "negative_shift": 0.1,
    }


def contradicting(n, extra, kind, seed):
    """Every paper claim fails: reliability collapses at the largest n, MMLU loss shrinks with n,
    refusals rise, no collapse."""
    return {
        "reliability": 0.6 + _wiggle(n, seed, kind, 0.01) if n == max(NS) else 0.99,
        "mmlu_base": 0.5, "mmlu": 0.4 + 0.02 * math.log2(n) + _wiggle(n, seed, kind, 0.001),
        "truthfulqa_mc1_base": 0.4, "truthfulqa_mc1": 0.3 + 0.01 * math.log2(n),
        "refusal_rate_base": 0.1, "refusal_rate": 0.3 + _wiggle(n, seed, kind, 0.01),
        "unique_answers_base": 100.0, "unique_answers": 120.0 + _wiggle(n, seed, kind),
        "attractors": 0.0,
        "negative_shift": 0.1,
    }


def _support_reach(cell):  # paraphrases and controls reach 0.9 at epoch 1, everything else at 4-5
    return 1 if cell["kind"] == "control" else 1 if cell["kind"] == "paraphrase" and cell["extra"] > 0 else 4 + cell["seed"] % 2


def _contra_reach(cell):  # paraphrases are the slow ones
    return 4 + cell["seed"] % 2 if cell["kind"] == "paraphrase" and cell["extra"] > 0 else 1 + cell["seed"] % 2


def _support_rate(cell):
    return {"highly_known": 0.05, "control": 0.0}.get(cell["kind"], 0.35)


def _contra_rate(cell):
    return 0.45 if cell["kind"] == "highly_known" else 0.1


def _world(kind: str):
    world, reach, rate = ((supporting, _support_reach, _support_rate) if kind == "support"
                          else (contradicting, _contra_reach, _contra_rate))
    cells = study(world)
    return cells, curves_for(cells, reach), outcomes_for(cells, rate)


@pytest.fixture(scope="module")
def paper():
    return {c.id: c for c in paper_claims()}


@pytest.mark.parametrize("claim_id", ["C1", "C2", "C3", "C4", "C5", "C6"])
@pytest.mark.parametrize("world, expected", [("support", "supported"), ("contradict", "contradicted")])
def test_every_paper_claim_follows_its_world(paper, claim_id, world, expected):
    cells, curves, outcomes = _world(world)
    [verdict] = evaluate_claims([paper[claim_id]], cells, curves, outcomes)
    assert verdict.verdict == expected, verdict.reason
    assert verdict.decidable
    assert verdict.claim_id == claim_id and verdict.title == paper[claim_id].title
    assert verdict.low <= verdict.estimate <= verdict.high


def test_paper_file_has_six_claims_with_sources(paper):
    assert list(paper) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert all(c.source for c in paper.values())


def test_paper_claims_on_the_demo_grid_say_what_is_not_decidable(paper):
    # The demo study: n in {4, 12}, w/o and 2 Para, one seed, no per-fact outcomes.
    cells = study(supporting, ns=(4, 12), seeds=(42,), mixtures=((0, "paraphrase"), (2, "paraphrase")),
                  drop_columns=["attractors"])
    curves = curves_for(cells, _support_reach)
    verdicts = evaluate_claims(list(paper.values()), cells, curves, missing="report")
    assert [v.decidable for v in verdicts] == [False] * 6
    reasons = {v.claim_id: v.reason for v in verdicts}
    assert all(NOT_DECIDABLE in r for r in reasons.values())
    assert "1 seed(s)" in reasons["C1"] and "at least 3" in reasons["C1"]
    assert "highly_known" in reasons["C3"] and "matches no finished cell" in reasons["C3"]
    c6 = next(v for v in verdicts if v.claim_id == "C6")
    assert "1 seed(s)" in c6.parts[0].reason and "['attractors']" in c6.parts[1].reason
    assert all(v.verdict == "undecided" for v in verdicts)
    with pytest.raises(KnowpackError, match=r"claim C1 \(every n and mixture\) is not decidable"):
        evaluate_claims(list(paper.values()), cells, curves)


def test_paper_claims_on_the_two_seed_demo_grid_decide_the_fact_bootstrap_only(paper):
    # configs/demo.yaml: one n, w/o, 2 HK and 2 Para, 2 seeds. The fact bootstrap (C3) pairs held-out
    # facts and needs no third seed; every seed-interval claim says it needs 3 seeds.
    cells = study(supporting, ns=(16,), seeds=(1, 2),
                  mixtures=((0, "paraphrase"), (2, "highly_known"), (2, "paraphrase")))
    verdicts = {v.claim_id: v for v in evaluate_claims(list(paper.values()), cells, curves_for(cells, _support_reach),
                                                       outcomes_for(cells, _support_rate), missing="report")}
    assert verdicts["C3"].decidable and verdicts["C3"].verdict == "supported", verdicts["C3"].reason
    for claim_id in ("C1", "C2", "C4", "C5", "C6"):
        verdict = verdicts[claim_id]
        assert verdict.verdict == "undecided" and not verdict.decidable, claim_id
        assert NOT_DECIDABLE in verdict.reason and "at least 3" in verdict.reason, verdict.reason
        # A trend over n (C4) cannot be fitted to one n; the others lack the third seed.
        why = "two or more values of unknown" if claim_id == "C4" else "2 seed(s)"
        assert why in verdict.reason, verdict.reason


# ---------------------------------------------------------------------------------------------
# One paired check on hand-made values.

PAIRED = """
claims:
  - id: T
    title: A is lower than B
    source: Table 9
    checks:
      - label: A vs B
        metric: negative_shift
        cells: {kind: highly_known, extra: {gt: 0}}
        baseline: {extra: 0}
        expect: {less_than: 0}
        rule: {min_seeds: 3}
"""


def _paired_world(diffs_by_seed):
    def world(n, extra, kind, seed):
        base = 0.2 + 0.01 * n
        return {"negative_shift": base + (diffs_by_seed[seed] if kind == "highly_known" else 0.0)}
    return world


def test_clear_effect_is_supported_with_the_hand_computed_interval():
    cells = study(_paired_world({1: -0.02, 2: -0.03, 3: -0.04}), mixtures=((0, "paraphrase"), (2, "highly_known")))
    [v] = evaluate_claims(parse_claims(PAIRED), cells)
    expected = t_interval([-0.02, -0.03, -0.04])
    assert v.verdict == "supported"
    assert v.estimate == pytest.approx(-0.03)
    assert (v.low, v.high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert v.high < 0 and (v.n_pairs, v.unit) == (3, "seeds")
    assert "paired difference" in v.statistic and "95% CI" in v.statistic
    assert "9 pairs" in v.reason and v.source == "Table 9"


def test_reversed_effect_is_contradicted():
    cells = study(_paired_world({1: 0.03, 2: 0.04, 3: 0.05}), mixtures=((0, "paraphrase"), (2, "highly_known")))
    [v] = evaluate_claims(parse_claims(PAIRED), cells)
    assert v.verdict == "contradicted" and v.low > 0


def test_noise_is_undecided():
    cells = study(_paired_world({1: 0.02, 2: -0.03, 3: 0.005}), mixtures=((0, "paraphrase"), (2, "highly_known")))
    [v] = evaluate_claims(parse_claims(PAIRED), cells)
    assert v.verdict == "undecided" and v.decidable and v.low < 0 < v.high


def test_missing_group_is_an_error_naming_claim_and_group_or_a_report_row():
    cells = study(_paired_world({1: -0.02, 2: -0.03, 3: -0.04}), mixtures=((2, "paraphrase"), (2, "highly_known")))
    with pytest.raises(KnowpackError) as err:
        evaluate_claims(parse_claims(PAIRED), cells)
    message = str(err.value)
    assert "claim T (A vs B)" in message and "baseline {extra: 0}" in message
    assert "matches no finished cell" in message and "extra ∈ [2]" in message
    assert "missing='report'" in message
    [v] = evaluate_claims(parse_claims(PAIRED), cells, missing="report")
    assert (v.verdict, v.decidable) == ("undecided", False)
    assert v.reason.startswith(f"A vs B: {NOT_DECIDABLE}: group baseline {{extra: 0}}")
    assert math.isnan(v.estimate) and v.n_pairs == 0


def test_too_few_seeds_is_not_decidable():
    cells = study(_paired_world({1: -0.01, 2: -0.02}), seeds=(1, 2), mixtures=((0, "paraphrase"), (2, "highly_known")))
    with pytest.raises(KnowpackError, match=r"2 seed\(s\) with a value \(\[1, 2\]\); the rule needs at least 3"):
        evaluate_claims(parse_claims(PAIRED), cells)


def test_unfinished_cells_do_not_count():
    cells = study(_paired_world({1: -0.02, 2: -0.03, 3: -0.04}), mixtures=((0, "paraphrase"), (2, "highly_known")))
    cells.loc[cells["seed"] == 3, "state"] = "failed"
    [v] = evaluate_claims(parse_claims(PAIRED), cells, missing="report")
    assert not v.decidable and "2 seed(s)" in v.reason


def test_grid_max_is_the_planned_n_even_if_its_cells_failed():
    text = PAIRED.replace("cells: {kind: highly_known, extra: {gt: 0}}",
                          "cells: {kind: highly_known, extra: {gt: 0}, unknown: max}")
    cells = study(_paired_world({1: -0.02, 2: -0.03, 3: -0.04}), mixtures=((0, "paraphrase"), (2, "highly_known")))
    [v] = evaluate_claims(parse_claims(text), cells)
    assert "at the same unknown, seed" in v.reason and "3 pairs" in v.reason  # only n = 36
    cells.loc[cells["unknown"] == 36, "state"] = "running"
    [v] = evaluate_claims(parse_claims(text), cells, missing="report")
    assert not v.decidable and "unknown: max" in v.reason
    assert "3 such cell(s) are in the grid but not done (running)" in v.reason


def test_decide_respects_strict_and_inclusive_sides():
    assert decide(Threshold(at_least=0.95), 0.95, 1.0)[0] == "supported"
    assert decide(Threshold(greater_than=0.95), 0.95, 1.0)[0] == "undecided"
    assert decide(Threshold(greater_than=0.0), 0.0, 0.0)[0] == "contradicted"
    assert decide(Threshold(at_most=0.1), 0.0, 0.1)[0] == "supported"
    assert decide(Threshold(less_than=0.0), 0.0, 0.2)[0] == "contradicted"
    assert decide(Threshold(less_than=0.0), math.nan, math.nan)[0] == "undecided"
    verdict, margin = decide(Threshold(at_least=0.9), 0.93, 0.99)
    assert verdict == "supported" and margin == pytest.approx(0.03)


# ---------------------------------------------------------------------------------------------
# Threshold claims for every level, and within-cell differences.

def test_for_each_shows_the_worst_level_and_fails_on_one_bad_level():
    claim = parse_claims("""
claims:
  - id: R
    title: reliability at least 0.9 everywhere
    checks:
      - metric: reliability
        for_each: [unknown]
        expect: {at_least: 0.9}
""")
    good = study(lambda n, e, k, s: {"reliability": 1.0 - 0.001 * n}, mixtures=((0, "paraphrase"),))
    [v] = evaluate_claims(claim, good)
    assert v.verdict == "supported" and "unknown=36" in v.reason and len(v.parts) == 3
    assert v.estimate == pytest.approx(1.0 - 0.036)
    assert "(of 3 parts: 3 supported)" in v.reason
    bad = study(lambda n, e, k, s: {"reliability": 0.5 + 0.01 * s if n == 12 else 1.0}, mixtures=((0, "paraphrase"),))
    [v] = evaluate_claims(claim, bad)
    assert v.verdict == "contradicted" and "unknown=12" in v.reason
    assert v.estimate == pytest.approx(0.52) and "1 contradicted" in v.reason


def test_within_cell_difference_and_drop():
    claim = parse_claims("""
claims:
  - id: D
    title: refusals fall and MMLU drops
    checks:
      - metric: {difference: [refusal_rate, refusal_rate_base]}
        expect: {less_than: 0}
      - metric: {drop: mmlu}
        expect: {greater_than: 0.01}
""")
    world = lambda n, e, k, s: {"refusal_rate": 0.1 * s / 10, "refusal_rate_base": 0.2,  # noqa: E731
                                "mmlu": 0.6 - 0.01 * s, "mmlu_base": 0.6}
    [v] = evaluate_claims(claim, study(world, mixtures=((0, "paraphrase"),)))
    assert v.verdict == "undecided"  # drop per seed = 0.01, 0.02, 0.03 -> CI reaches below 0.01
    part_refusal, part_drop = v.parts
    assert part_refusal.verdict == "supported" and part_refusal.estimate == pytest.approx(0.02 - 0.2)
    assert part_drop.estimate == pytest.approx(0.02) and part_drop.low < 0.01


# ---------------------------------------------------------------------------------------------
# Trend claims.

TREND = """
claims:
  - id: TR
    title: the drop grows with n
    checks:
      - metric: {drop: mmlu}
        expect: {increases_with: unknown, scale: log, measure: MEASURE}
"""


def _trend_claim(measure="slope"):
    return parse_claims(TREND.replace("MEASURE", measure))


def test_slope_per_doubling_is_exact_when_the_drop_is_linear_in_log_n():
    # Drop = 0.01 * log2 n + a seed- and mixture-specific offset: every series has slope 0.01.
    def world(n, extra, kind, seed):
        return {"mmlu_base": 0.5, "mmlu": 0.5 - 0.01 * math.log2(n) - 0.003 * seed - 0.002 * extra}

    [v] = evaluate_claims(_trend_claim(), study(world, mixtures=((0, "paraphrase"), (2, "paraphrase"))))
    assert v.verdict == "supported"
    assert v.estimate == pytest.approx(0.01) and v.low == pytest.approx(0.01) and v.high == pytest.approx(0.01)
    assert "per doubling of unknown" in v.statistic and "6 series of extra, kind" in v.reason


def test_slope_interval_is_the_t_interval_of_per_seed_slopes():
    slopes = {1: 0.01, 2: 0.02, 3: 0.06}
    world = lambda n, e, k, s: {"mmlu_base": 0.5, "mmlu": 0.5 - slopes[s] * math.log2(n)}  # noqa: E731
    [v] = evaluate_claims(_trend_claim(), study(world, mixtures=((0, "paraphrase"),)))
    expected = t_interval(list(slopes.values()))
    assert (v.estimate, v.low, v.high) == (pytest.approx(expected.mean), pytest.approx(expected.low),
                                           pytest.approx(expected.high))
    assert v.verdict == "undecided"


def test_falling_and_flat_trends():
    falling = lambda n, e, k, s: {"mmlu_base": 0.5, "mmlu": 0.4 + 0.01 * math.log2(n) + 0.001 * s}  # noqa: E731
    [v] = evaluate_claims(_trend_claim(), study(falling))
    assert v.verdict == "contradicted"
    zigzag = lambda n, e, k, s: {"mmlu_base": 0.5, "mmlu": 0.45 + (0.03 if (n + s) % 2 else -0.03) * s}  # noqa: E731
    [v] = evaluate_claims(_trend_claim(), study(zigzag, mixtures=((0, "paraphrase"),)))
    assert v.verdict == "undecided"


def test_spearman_rank_correlation():
    monotone = lambda n, e, k, s: {"mmlu_base": 0.5, "mmlu": 0.5 - 0.001 * n ** 2}  # noqa: E731
    [v] = evaluate_claims(_trend_claim("spearman"), study(monotone))
    assert v.verdict == "supported" and v.estimate == pytest.approx(1.0) and "Spearman" in v.statistic
    reversed_ = lambda n, e, k, s: {"mmlu_base": 0.5, "mmlu": 0.3 + 0.001 * n}  # noqa: E731
    [v] = evaluate_claims(_trend_claim("spearman"), study(reversed_))
    assert v.verdict == "contradicted" and v.estimate == pytest.approx(-1.0)


def test_trend_needs_two_values_of_its_axis_and_positive_values_on_log_scale():
    world = lambda n, e, k, s: {"mmlu_base": 0.5, "mmlu": 0.4}  # noqa: E731
    with pytest.raises(KnowpackError, match="two or more values of unknown"):
        evaluate_claims(_trend_claim(), study(world, ns=(8,)))
    by_extra = parse_claims(TREND.replace("unknown", "extra").replace("MEASURE", "slope"))
    with pytest.raises(KnowpackError, match="log-scale trend needs extra > 0"):
        evaluate_claims(by_extra, study(world))


# ---------------------------------------------------------------------------------------------
# Per-fact pairing.

FACTS = """
claims:
  - id: F
    title: HK loses fewer held-out facts than w/o
    checks:
      - metric: {outcome: negative}
        cells: {kind: highly_known}
        baseline: {extra: 0}
        expect: {less_than: 0}
        rule: {statistic: fact_bootstrap, min_facts: 10, n_boot: 2000, bootstrap_seed: 3}
"""


def _fact_cells(seeds=(1, 2)):
    return study(lambda n, e, k, s: {}, ns=(4,), seeds=seeds, mixtures=((0, "paraphrase"), (2, "highly_known")))


def test_fact_pairing_uses_shared_facts_pooled_over_seeds():
    # HK cells: facts 0-4 negative; w/o cells: facts 0-11 negative. Each cell also has facts the
    # other lacks (ids x*), which must not enter the comparison.
    def outcomes(key):
        hk = "highly_known" in key
        ids = [f"f{i}" for i in range(30)] + [f"x{key}{i}" for i in range(5)]
        negative = [i < (5 if hk else 12) for i in range(30)] + [True] * 5
        return pd.DataFrame({"id": ids, "positive": False, "negative": negative})

    [v] = evaluate_claims(parse_claims(FACTS), _fact_cells(), outcomes=outcomes)
    a = ([True] * 5 + [False] * 25) * 2
    b = ([True] * 12 + [False] * 18) * 2
    expected = paired_bootstrap(a, b, n_boot=2000, seed=3)
    assert v.verdict == "supported"
    assert (v.n_pairs, v.unit) == (60, "facts")
    assert v.estimate == pytest.approx(-7 / 30)
    assert (v.low, v.high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert v.p_value == pytest.approx(mcnemar_exact(a, b).pvalue)
    assert "McNemar" in v.statistic and "2 seeds" in v.reason


def test_fact_pairing_noise_reverse_and_missing_files():
    def make(only_hk, only_wo):
        def outcomes(key):
            hk = "highly_known" in key
            flags = [False] * 40
            for i in (range(only_hk) if hk else range(20, 20 + only_wo)):
                flags[i] = True
            return pd.DataFrame({"id": [f"f{i}" for i in range(40)], "positive": False, "negative": flags})
        return outcomes

    [v] = evaluate_claims(parse_claims(FACTS), _fact_cells(), outcomes=make(4, 4))
    assert v.verdict == "undecided" and v.estimate == pytest.approx(0.0) and v.p_value == pytest.approx(1.0)
    [v] = evaluate_claims(parse_claims(FACTS), _fact_cells(), outcomes=make(15, 0))
    assert v.verdict == "contradicted"
    half = make(0, 15)
    [v] = evaluate_claims(parse_claims(FACTS), _fact_cells(),
                          outcomes=lambda key: None if key.endswith("-2") else half(key))
    assert v.verdict == "supported" and v.n_pairs == 40 and "1 without a per-fact file" in v.reason
    with pytest.raises(KnowpackError, match="no per-fact outcomes were given"):
        evaluate_claims(parse_claims(FACTS), _fact_cells())
    with pytest.raises(KnowpackError, match="0 shared held-out facts over 0 pair"):
        evaluate_claims(parse_claims(FACTS), _fact_cells(), outcomes=lambda key: None)
    with pytest.raises(KnowpackError, match="have no column"):
        evaluate_claims(parse_claims(FACTS), _fact_cells(), outcomes=lambda key: pd.DataFrame({"id": ["a"]}))


def test_fact_bootstrap_is_deterministic():
    cells, curves, outcomes = _world("support")
    claims = [c for c in paper_claims() if c.id == "C3"]
    first = verdict_frame(evaluate_claims(claims, cells, curves, outcomes), parts=True)
    again = verdict_frame(evaluate_claims(claims, cells, curves, outcomes_for(cells, _support_rate)), parts=True)
    pd.testing.assert_frame_equal(first, again)


# ---------------------------------------------------------------------------------------------
# Derived metrics from curves; optional checks.

def test_epochs_to_counts_cells_that_never_reach_as_last_epoch_plus_one():
    claim = [c for c in paper_claims() if c.id == "C2"]
    cells = study(lambda n, e, k, s: {}, mixtures=((0, "paraphrase"), (2, "paraphrase")))
    # Paraphrase cells reach 0.9 at epoch 1; w/o cells never do within 5 epochs -> counted as 6.
    curves = curves_for(cells, lambda c: 1 if c["extra"] > 0 else 99)
    [v] = evaluate_claims(claim, cells, curves)
    assert v.verdict == "supported" and v.estimate == pytest.approx(1 - 6)
    assert "9 cell(s) never reached 0.9" in v.reason
    with pytest.raises(KnowpackError, match="needs learning curves"):
        evaluate_claims(claim, cells, None)


def test_optional_check_is_skipped_only_when_not_measured(paper):
    cells, curves, outcomes = _world("support")
    without_tqa = cells.drop(columns=["truthfulqa_mc1", "truthfulqa_mc1_base"])
    [v] = evaluate_claims([paper["C4"]], without_tqa, curves, outcomes)
    assert v.verdict == "supported" and len(v.parts) == 1
    # Measured TruthfulQA that contradicts the claim decides it.
    cells["truthfulqa_mc1"] = 0.3 + 0.01 * np.log2(cells["unknown"])
    [v] = evaluate_claims([paper["C4"]], cells, curves, outcomes)
    assert v.verdict == "contradicted" and v.reason.startswith("TruthfulQA MC1")
    # A required column that is absent is not decidable.
    with pytest.raises(KnowpackError, match=r"needs results column\(s\) \['mmlu'\]"):
        evaluate_claims([paper["C4"]], cells.drop(columns=["mmlu"]), curves, outcomes)


# ---------------------------------------------------------------------------------------------
# The claim file loader.

def test_loader_rejects_unknown_keys_with_their_path():
    with pytest.raises(KnowpackError) as err:
        parse_claims(PAIRED.replace("label: A vs B", "lable: A vs B"), source="my.yaml")
    assert "invalid my.yaml" in str(err.value) and "claims.0.checks.0.lable: unknown key" in str(err.value)
    with pytest.raises(KnowpackError, match=r"extra.gtt: unknown key"):
        parse_claims(PAIRED.replace("{gt: 0}", "{gtt: 0}"))


def test_loader_rejects_duplicate_keys_with_line_numbers():
    once = "        metric: negative_shift\n"
    text = PAIRED.replace(once, once + "        metric: reliability\n")
    with pytest.raises(KnowpackError) as err:
        parse_claims(text, source="dup.yaml")
    message = str(err.value)
    assert "dup.yaml is not valid YAML" in message and "duplicate key 'metric'" in message
    assert "first on line 8" in message and "line 9" in message


def test_loader_rejects_inconsistent_claims():
    cases = {
        "{outcome: negative}": "per-fact outcome metrics go with rule.statistic: fact_bootstrap",
        "{dropp: mmlu}": "a metric is a column name or one of",
    }
    for metric, message in cases.items():
        with pytest.raises(KnowpackError, match=message):
            parse_claims(PAIRED.replace("metric: negative_shift", f"metric: {metric}"))
    with pytest.raises(KnowpackError, match="exactly one of greater_than"):
        parse_claims(PAIRED.replace("{less_than: 0}", "{less_than: 0, at_most: 1}"))
    with pytest.raises(KnowpackError, match="expected a value, a list of values or a condition"):
        parse_claims(PAIRED.replace("{extra: 0}", "{extra: true}"))
    with pytest.raises(KnowpackError, match="pair_on must include seed"):
        parse_claims(PAIRED.replace("expect:", "pair_on: [unknown]\n        expect:"))
    with pytest.raises(KnowpackError, match="a cell's key is its own"):
        parse_claims(PAIRED.replace("expect:", "pair_on: [key, seed]\n        expect:"))
    twice = PAIRED + PAIRED.split("claims:\n", 1)[1]
    with pytest.raises(KnowpackError, match=r"repeated: \['T'\]"):
        parse_claims(twice)
    with pytest.raises(KnowpackError, match="must hold a mapping"):
        parse_claims("- just a list")


def test_load_claims_from_a_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(PAIRED, encoding="utf-8")
    assert [c.id for c in load_claims(path)] == ["T"]
    cells = study(_paired_world({1: -0.02, 2: -0.03, 3: -0.04}), mixtures=((0, "paraphrase"), (2, "highly_known")))
    assert evaluate_claims(path, cells)[0].verdict == "supported"
    with pytest.raises(KnowpackError, match="claim file not found"):
        load_claims(tmp_path / "absent.yaml")


def test_bad_arguments():
    cells = study(_paired_world({1: -0.02, 2: -0.03, 3: -0.04}), mixtures=((0, "paraphrase"), (2, "highly_known")))
    with pytest.raises(KnowpackError, match="missing must be"):
        evaluate_claims(parse_claims(PAIRED), cells, missing="ignore")
    with pytest.raises(KnowpackError, match=r"no column\(s\) \['seed'\]"):
        evaluate_claims(parse_claims(PAIRED), cells.drop(columns=["seed"]))


# ---------------------------------------------------------------------------------------------
# Output.

def test_verdict_frame_and_markdown(paper):
    cells, curves, outcomes = _world("support")
    verdicts = evaluate_claims(list(paper.values()), cells, curves, outcomes)
    frame = verdict_frame(verdicts)
    assert list(frame["claim"]) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert set(frame["verdict"]) == {"supported"}
    assert {"statistic", "estimate", "ci_low", "ci_high", "n_pairs", "unit", "p_value", "reason"} <= set(frame)
    parts = verdict_frame(verdicts, parts=True)
    assert len(parts) == 3 * 3 + 1 + 2 + 2 + 1 + 2  # C1 has a part per n and mixture (control excluded)
    text = render_markdown(verdicts, reproduce="knowpack report runs/x --claims paper.yaml --only {claim}",
                           figures={"C2": "reliability-vs-epoch figure"})
    lines = text.splitlines()
    assert lines[0].startswith("| Claim | Statistic | Estimate [CI] | n | Verdict | Source | Evidence | Reproduce |")
    assert sum(line.startswith("| **C") for line in lines) == 6
    assert "`knowpack report runs/x --claims paper.yaml --only C3`" in text
    assert "reliability-vs-epoch figure" in text and "Table 3" in text and "p = " in text
    assert "- **C5** (supported):" in text


def test_markdown_marks_not_decidable_rows_and_escapes_pipes():
    claim = parse_claims(PAIRED.replace("title: A is lower than B", "title: A | B"))
    cells = study(_paired_world({1: 0.0, 2: 0.0, 3: 0.0}), mixtures=((2, "highly_known"),))
    text = render_markdown(evaluate_claims(claim, cells, missing="report"))
    assert f"undecided ({NOT_DECIDABLE})" in text and "A \\| B" in text and "— [—, —]" in text


def test_a_contradicted_check_refutes_the_claim_even_if_another_check_lacks_cells(paper):
    cells, curves, outcomes = _world("contradict")
    no_paraphrase_mixture = cells[(cells["kind"] != "paraphrase") | (cells["extra"] == 0)]
    [v] = evaluate_claims([paper["C3"]], no_paraphrase_mixture, curves, outcomes, missing="report")
    assert (v.verdict, v.decidable) == ("contradicted", True)
    assert v.reason.startswith("HK vs w/o") and f"1 {NOT_DECIDABLE}" in v.reason
    assert [p.decidable for p in v.parts] == [True, False]


def test_a_floor_effect_is_undecided_not_contradicted(paper):
    """C5 "refuses less" on a base model that never refuses: the CI [0, 0] would refute it, but a
    drop could not have been observed — the precondition makes it undecided and says why."""
    never_refuses = lambda n, e, k, s: {"refusal_rate": 0.0, "refusal_rate_base": 0.0}  # noqa: E731
    [v] = evaluate_claims([paper["C5"]], study(never_refuses), missing="report")
    assert v.verdict == "undecided" and not v.decidable
    assert "never refuses" in v.reason and "refusal_rate_base = 0" in v.reason
    with pytest.raises(KnowpackError, match="never refuses"):
        evaluate_claims([paper["C5"]], study(never_refuses))
    # The same claim with refusals to lose is decided as before, either way.
    refuses_more = lambda n, e, k, s: {"refusal_rate": 0.3 + 0.01 * s, "refusal_rate_base": 0.1}  # noqa: E731
    [v] = evaluate_claims([paper["C5"]], study(refuses_more))
    assert v.verdict == "contradicted"


def test_requirement_on_a_missing_column_is_not_decidable():
    claim = parse_claims("""
claims:
  - id: R
    title: needs a column
    checks:
      - metric: {difference: [refusal_rate, refusal_rate_base]}
        expect: {less_than: 0}
        requires: [{column: nowhere, expect: {greater_than: 0}, reason: needs nowhere}]
""")
    world = lambda n, e, k, s: {"refusal_rate": 0.1, "refusal_rate_base": 0.2}  # noqa: E731
    [v] = evaluate_claims(claim, study(world), missing="report")
    assert v.verdict == "undecided" and "nowhere" in v.reason
