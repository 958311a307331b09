"""Shift explanations (Table 5) on hand-made shifts whose reasons are known."""

from __future__ import annotations

from test_evaluate_helpers import config, fact, mix, row

from knowpack.evaluate.metrics.explanations import explain_fact, explanations

REFUSE = "I couldn't find any information about it."


def test_reasons_for_positive_and_negative_shifts():
    facts = {"t": fact("t", answer="Alencon", relation="birthplace", domain="Person"),
             "p1": fact("p1", answer="Anaheim Arena", relation="arena", domain="Sport"),
             "p2": fact("p2", answer="Alencon", relation="birthplace", domain="Person"),
             "n1": fact("n1", answer="Tehran", relation="capital", domain="Place"),
             "n2": fact("n2", answer="Rome", relation="river", domain=None)}
    base = {"t": row("t", ["x", "x"], [False, False]),
            "p1": row("p1", [REFUSE, REFUSE], [False, False]),
            "p2": row("p2", ["Lyon", "Lyon"], [False, False]),
            "n1": row("n1", ["Tehran", "Tehran"], [True, True]),
            "n2": row("n2", ["Rome", "Rome"], [True, True])}
    adapted = {"t": row("t", ["Alencon", "Alencon"], [True, True]),
               "p1": row("p1", ["Anaheim Arena", "Anaheim Arena"], [True, True]),
               "p2": row("p2", ["Alencon", "Alencon"], [True, True]),
               "n1": row("n1", ["Alencon", "Alencon"], [False, False]),
               "n2": row("n2", ["Milan", "Milan"], [False, False])}
    collapse = {"attractors": [{"answer": "alencon"}]}
    out = explanations(config=config(), base_probe=base, adapter_probe=adapted,
                       mix=mix(["t"], answers={"t": "Alencon"}), facts=facts, collapse=collapse,
                       match_mode="word")
    pos, neg = out.summary["Unknown→HighlyKnown"], out.summary["HighlyKnown→Unknown"]
    assert pos["n"] == 2 and neg["n"] == 2  # the trained fact t is not counted
    assert pos["counts"] == {"non_refusal": 1, "explosion": 1, "target": 1, "domain": 1, "explained": 2}
    assert neg["counts"] == {"explosion": 1, "target": 1, "domain": 0, "explained": 1}
    assert neg["shares"]["explained"] == 0.5
    assert out.per_fact["p2"]["reasons"] == "explosion,target,domain"
    assert out.per_fact["n2"]["reasons"] == ""


def test_domain_falls_back_to_relation_and_empty_target_never_matches():
    f = fact("x", relation="capital", domain=None)
    reasons = explain_fact("x", base_row=row("x", ["a"], [False]), adapted_row=row("x", ["Paris"], [True]),
                           fact=f, attractors=set(), targets=[""], trained_domains={"capital"}, match_mode="substring")
    # An empty target answer matched everything in the paper's code ('' is in every string).
    assert reasons["target"] is False
    assert reasons["domain"] is True
