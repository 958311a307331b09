"""The packaged few-shot exemplar pool: committed = fresh build, disjoint from the default set, usable."""

from __future__ import annotations

from collections import Counter

import pytest

from knowpack.facts import build_default_facts, read_facts
from knowpack.facts.io import fact_records
from knowpack.probe.exemplars import (EXEMPLAR_POOL_NAME, build_exemplar_pool, data_path,
                                      load_exemplar_pool, write_exemplar_pool)
from knowpack.probe.matching import is_correct


@pytest.fixture(scope="module")
def pool():
    return load_exemplar_pool()


def test_committed_file_equals_a_fresh_build(tmp_path, pool):
    fresh = write_exemplar_pool(tmp_path / "exemplars.jsonl")
    assert fresh.read_bytes() == data_path().read_bytes(), \
        "rebuild it: python -m knowpack.probe.exemplars"
    assert pool == build_exemplar_pool() == read_facts(data_path())


def test_size_relations_and_short_answers(pool):
    assert EXEMPLAR_POOL_NAME == "knowpack-exemplars-v1"
    counts = Counter(f.relation for f in pool)
    assert len(pool) >= 64 and len(counts) >= 4
    assert max(counts.values()) <= len(pool) // 3  # no relation dominates the shots
    assert len({f.id for f in pool}) == len(pool)
    for fact in pool:
        assert len(fact.answer.split()) <= 2 and not fact.answer.endswith(".")  # "Paris", not a sentence
        assert fact.question.endswith("?")
        assert is_correct(f"Answer: {fact.answer}", fact.aliases)


def test_real_content(pool):
    by_id = {f.id: f for f in pool}
    assert by_id["continent_of_country/DE"].answer == "Europe"
    assert by_id["continent_of_country/BR"].answer == "South America"
    assert "continent_of_country/RU" not in by_id  # spans two continents: no single answer
    assert by_id["tld_of_country/JP"].answer == ".jp"
    assert by_id["french_word_for_month/August"].answer == "août"
    assert by_id["german_word_for_weekday/Monday"].question == "What is the German word for Monday?"
    assert by_id["german_word_for_weekday/Monday"].answer == "Montag"
    assert "german_word_for_month/August" not in by_id  # the question would give "August" away


def test_disjoint_from_the_default_set(pool):
    default = build_default_facts()
    assert not {f.id for f in pool} & {f.id for f in default}
    assert not {f.question for f in pool} & {q for f in default for q in (f.question, *f.paraphrases)}
    assert not {(f.subject, f.relation) for f in pool} & {(f.subject, f.relation) for f in default}
    assert not {f.relation for f in pool} & {f.relation for f in default}


def test_loaded_pool_is_a_copy(pool):
    first = load_exemplar_pool()
    first.clear()
    assert len(load_exemplar_pool()) == len(pool)
    assert list(fact_records(pool[:1]))[0]["aliases"] == [pool[0].answer]
