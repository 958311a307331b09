"""Refusal rates on hand-made answers; every greedy answer is checked (paper bug: first one only, 'information' only)."""

from __future__ import annotations

from test_evaluate_helpers import config, mix, row

from knowpack.evaluate.metrics.refusals import refusal_flags, refusals

REFUSE = "I couldn't find any information about that."
VERIFY = "I cannot verify the birthplace."


def test_refusal_found_in_any_answer_not_only_the_first():
    # The paper looked at the first greedy answer only, for the word "information" only.
    r = row("a", ["Paris", VERIFY, "Lyon"], [False, False, False])
    assert refusal_flags(r) == [False, True, False]


def test_topic_word_information_is_not_a_refusal():
    r = row("a", ["Information technology", "Information theory"], [True, True])
    assert refusal_flags(r) == [False, False]


def test_rates_by_group():
    base = {"u1": row("u1", [REFUSE, REFUSE], [False, False]),
            "u2": row("u2", ["Rome", VERIFY], [False, False]),
            "k1": row("k1", ["Paris", "Paris"], [True, True]),
            "t1": row("t1", [REFUSE, REFUSE], [False, False])}
    adapted = {"u1": row("u1", ["Lima", "Lima"], [False, False]),
               "u2": row("u2", ["Rome", "Rome"], [False, False]),
               "k1": row("k1", [REFUSE, "Paris"], [False, True], "MaybeKnown"),
               "t1": row("t1", ["Target", "Target"], [True, True])}
    out = refusals(config=config(), base_probe=base, adapter_probe=adapted, mix=mix(["t1"]))
    s = out.summary
    assert s["untrained_unknown"]["base"]["fact_rate"] == 1.0  # u1, u2 (t1 is trained)
    assert s["untrained_unknown"]["base"]["answer_rate"] == 0.75
    assert s["untrained_unknown"]["adapted"]["fact_rate"] == 0.0
    assert s["untrained_known"]["adapted"]["refused_facts"] == 1
    assert s["all"]["base"]["refused_answers"] == 5 and s["all"]["base"]["n_answers"] == 8
    assert out.per_fact["k1"]["adapted_refusal_rate"] == 0.5
