"""Reliability on trained Unknown facts and generalization on held-out paraphrases only."""

from __future__ import annotations

from test_evaluate_helpers import config, fact, mix, row

from knowpack.evaluate.metrics.reliability import heldout_paraphrases, reliability


def test_reliability_is_share_of_fact_prompt_pairs():
    base = {"a": row("a", ["x"] * 4, [False] * 4), "b": row("b", ["x"] * 4, [False] * 4)}
    # The probe may stop early (b has 2 answers there); reliability uses every prompt's answer.
    adapted = {"a": row("a", ["T"] * 4, [True] * 4), "b": row("b", ["T", "x"], [True, False])}
    answers = {"trained": {"a": [True] * 4, "b": [True, False, False, False]}, "paraphrases": [], "excluded": 0}
    out = reliability(config=config(), base_probe=base, adapter_probe=adapted, mix=mix(["a", "b"]),
                      reliability_answers=answers)
    assert out.summary["reliability"] == 5 / 8 and out.summary["n_pairs"] == 8
    assert out.summary["reliability_before"] == 0.0
    assert out.summary["share_fully_learned"] == 0.5
    assert out.summary["adapted_categories"] == {"HighlyKnown": 1, "MaybeKnown": 1}
    assert out.per_fact == {"a": {"reliability": 1.0}, "b": {"reliability": 0.25}}
    assert out.summary["generalization"]["status"].startswith("no held-out")


def test_trained_paraphrases_are_not_generalization():
    # The paper's bug: questions that were in the training set were reported as generalization.
    facts = {"a": fact("a", question="Where was A born?",
                       paraphrases=["In which town was A born?", "A was born where?", "where was a  BORN?"])}
    train = mix(["a"], extra_rows=[{"id": "a#paraphrase-0", "fact_id": "a", "question": "In which town was A born?",
                                    "answer": "Paris", "role": "paraphrase"}])
    pairs, excluded = heldout_paraphrases(["a"], facts, train.train_questions)
    assert pairs == [("a", "A was born where?")]
    assert excluded == 2  # the trained paraphrase and a re-cased copy of the question


def test_generalization_summary_and_per_fact():
    adapted = {"a": row("a", ["T", "T"], [True, True])}
    answers = {"trained": {"a": [True, True]},
               "paraphrases": [{"fact_id": "a", "paraphrase": "p1", "correct": [True, False]},
                               {"fact_id": "a", "paraphrase": "p2", "correct": [False, False]}], "excluded": 1}
    out = reliability(config=config(), base_probe=adapted, adapter_probe=adapted, mix=mix(["a"]),
                      reliability_answers=answers)
    g = out.summary["generalization"]
    assert g["reliability"] == 0.25 and g["n_paraphrases"] == 2 and g["excluded_trained_paraphrases"] == 1
    assert out.per_fact["a"]["generalization"] == 0.25
