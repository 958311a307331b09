"""Paraphrase generation: parsing, the four filters, rounds, caching, CLI-free; one real-model run."""

from __future__ import annotations

import pytest

from knowpack.facts.paraphrase import (ParaphraseConfig, filter_paraphrases, generate_paraphrases,
                                       paraphrase_facts, split_candidates)
from knowpack.facts.schema import Fact

FACT = Fact(id="cap/fr", subject="France", relation="capital", question="What is the capital of France?",
            answer="Paris", aliases=["Paris", "Paname"], paraphrases=["France has which capital city?"])


def test_split_candidates_strips_numbering_bullets_quotes():
    text = '1. Which city is the capital of France?\n2) "Name the French capital."\n\n- * France\'s capital is?\n'
    assert split_candidates(text) == ["Which city is the capital of France?", "Name the French capital.",
                                      "* France's capital is?"]


def test_filters_subject_answer_duplicates_original():
    candidates = [
        "Which city is the capital of France?",        # kept
        "which city is the capital of france",         # duplicate after normalization
        "What is the capital of France?",              # the original question
        "France has which capital city?",              # already stored
        "Name the French capital.",                    # lost the subject
        "Is Paris the capital of France?",             # gives the answer away
        "Is Paname France's capital?",                 # gives an alias away
        "Frances capital, which is it?",               # subject not as a whole word
        "Tell me the capital city of France.",         # kept
    ]
    assert filter_paraphrases(FACT, candidates, keep=FACT.paraphrases) == [
        "Which city is the capital of France?", "Tell me the capital city of France."]


def _fake(outputs: list[str]):
    calls = []

    def generator(prompts, seed):
        calls.append((list(prompts), seed))
        return [outputs[min(len(calls) - 1, len(outputs) - 1)]] * len(prompts)

    return generator, calls


def test_rounds_until_k_survive_and_stored_paraphrases_stay_first():
    generator, calls = _fake(["Which city is the capital of France?\nParis?",
                              "Which city is the capital of France?\nTell me the capital of France."])
    config = ParaphraseConfig(k=2, seed=7, rounds=3)
    out, counts = generate_paraphrases([FACT], config, generator, render=lambda q: f"<{q}>")
    assert counts == {"cap/fr": 2} and len(calls) == 2
    assert calls[0] == (["<What is the capital of France?>"], 7000) and calls[1][1] == 7001
    assert out[0].paraphrases == ["France has which capital city?", "Which city is the capital of France?",
                                  "Tell me the capital of France."]


def test_too_few_after_all_rounds_is_reported_not_padded():
    generator, calls = _fake(["Paris is it?"])
    out, counts = generate_paraphrases([FACT], ParaphraseConfig(k=3, rounds=2), generator, render=str)
    assert counts == {"cap/fr": 0} and len(calls) == 2 and out[0].paraphrases == FACT.paraphrases


def test_cache_by_model_facts_and_settings(tmp_path, tiny_model_dir):
    from knowpack.models import load_model

    loaded = load_model(str(tiny_model_dir))
    generator, calls = _fake(["Which city is the capital of France?"])
    config = ParaphraseConfig(k=1)
    first, _ = paraphrase_facts([FACT], loaded, config, cache_dir=tmp_path, generator=generator)
    again, counts = paraphrase_facts([FACT], loaded, config, cache_dir=tmp_path, generator=generator)
    assert first == again and counts == {"cap/fr": 1} and len(calls) == 1
    paraphrase_facts([FACT], loaded, ParaphraseConfig(k=1, seed=1), cache_dir=tmp_path, generator=generator)
    assert len(calls) == 2


def test_hf_generator_runs_on_tiny_model(tmp_path, tiny_model_dir):
    from knowpack.models import load_model

    out, counts = paraphrase_facts([FACT], load_model(str(tiny_model_dir)), ParaphraseConfig(k=1, rounds=1),
                                   cache_dir=tmp_path)
    assert counts["cap/fr"] in (0, 1) and out[0].paraphrases[0] == FACT.paraphrases[0]


@pytest.mark.integration
def test_default_model_paraphrases_three_questions(tmp_path):
    from knowpack.models import load_model

    facts = [Fact(id="q1", subject="France", relation="capital", question="What is the capital of France?",
                  answer="Paris"),
             Fact(id="q2", subject="Japan", relation="currency", question="What is the currency of Japan?",
                  answer="Yen", aliases=["Yen", "Japanese yen"]),
             Fact(id="q3", subject="Gold", relation="symbol", question="What is the chemical symbol of Gold?",
                  answer="Au")]
    out, counts = paraphrase_facts(facts, load_model("default"), ParaphraseConfig(k=3, seed=0),
                                   cache_dir=tmp_path)
    assert sum(counts.values()) >= 1
    for fact, new in zip(facts, out):
        assert filter_paraphrases(fact, new.paraphrases) == new.paraphrases
        assert len(new.paraphrases) <= 3
