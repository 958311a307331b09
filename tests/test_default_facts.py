"""The offline default fact set: real content, cleaning, templates, tiers, determinism, sampling."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest
from typer.testing import CliRunner

from knowpack.cli.app import app
from knowpack.errors import KnowpackError
from knowpack.facts import read_facts, write_facts
from knowpack.facts import default_set
from knowpack.facts.default_set import build_default_facts, is_guessable, sample_facts
from knowpack.facts.sources import RELATIONS
from knowpack.facts.sources.common import ascii_fold, is_latin, make_aliases, resolve_ambiguous, RawFact
from knowpack.facts.tiers import h2t_cutpoints, h2t_tiers


@pytest.fixture(scope="module")
def facts():
    return build_default_facts()


@pytest.fixture(scope="module")
def by_id(facts):
    return {f.id: f for f in facts}


def test_size_and_relations(facts):
    counts = Counter(f.relation for f in facts)
    assert len(facts) >= 3000 and len(counts) >= 8
    assert set(counts) == set(RELATIONS)
    assert counts["country_of_city"] > 4000 and counts["capital_of_country"] > 200
    assert all(n >= 50 for n in counts.values())


def test_real_content(by_id):
    france = by_id["capital_of_country/FR"]
    assert (france.subject, france.question, france.answer) == ("France", "What is the capital of France?", "Paris")
    assert france.domain == "geography"
    assert by_id["country_of_capital/FR"].answer == "France"
    assert by_id["symbol_of_element/Fe"].answer == "Fe" and by_id["element_of_symbol/Fe"].answer == "Iron"
    assert by_id["atomic_number_of_element/O"].answer == "8"
    assert by_id["capital_of_us_state/CA"].answer == "Sacramento"
    assert by_id["us_state_of_city/Los_Angeles"].answer == "California"
    assert "CA" in by_id["us_state_of_city/Los_Angeles"].aliases
    assert by_id["country_of_city/Paris"].answer == "France"  # dominance: not Paris, Texas
    assert by_id["currency_of_country/JP"].answer == "Japanese Yen"
    assert by_id["calling_code_of_country/FR"].aliases[:3] == ["+33", "33", "0033"]
    assert by_id["city_of_airport_code/CDG"].answer == "Paris"
    assert by_id["currency_of_iso4217_code/EUR"].answer == "Euro"
    assert by_id["language_of_iso639_1_code/de"].answer == "German"
    assert by_id["statehood_year_of_us_state/HI"].answer == "1959"
    assert "Seaborg" in by_id["discoverer_of_element/Bk"].aliases
    # "Pierre and Marie Curie": both count, the lone first name gets the surname.
    assert by_id["discoverer_of_element/Po"].aliases == ["Pierre Curie", "Curie", "Marie Curie"]
    assert by_id["discoverer_of_element/Og"].aliases == ["Joint Institute for Nuclear Research"]


def test_aliases_ascii_folded_latin_and_bounded(facts, by_id):
    assert "Volapuk" in by_id["language_of_iso639_1_code/vo"].aliases
    assert "Reykjavik" in by_id["capital_of_country/IS"].aliases
    assert "Turkey" in by_id["country_of_capital/TR"].aliases
    for fact in facts:
        assert fact.aliases[0] == fact.answer
        assert 1 <= len(fact.aliases) <= 10
        assert all(a.strip() and is_latin(a) for a in fact.aliases)
        assert len({a.casefold() for a in fact.aliases}) == len(fact.aliases)
        if not fact.answer.isascii() and is_latin(fact.answer):
            assert ascii_fold(fact.answer) in fact.aliases, fact.id


def test_no_ambiguous_guessable_or_trivial_facts(facts):
    answers = defaultdict(set)
    for fact in facts:
        for text in (fact.question, *fact.paraphrases):
            answers[text].add(fact.answer)
        assert not is_guessable(fact.question, fact.answer), fact.id
        assert ascii_fold(fact.answer).casefold() != ascii_fold(fact.subject).casefold()
    assert {q: a for q, a in answers.items() if len(a) > 1} == {}
    # Kingston is the capital of Jamaica (2.9M) and Norfolk Island (1.8k): dominance keeps Jamaica.
    ids = {f.id for f in facts}
    assert "country_of_capital/JM" in ids and "country_of_capital/NF" not in ids


def test_templates_and_paraphrases(facts):
    assert all(len(spec.templates) >= 3 for spec in RELATIONS.values())
    for fact in facts:
        rendered = RELATIONS[fact.relation].render(fact.subject)
        assert [fact.question, *fact.paraphrases] == rendered
        assert fact.domain == RELATIONS[fact.relation].domain


def test_ids_sorted_unique_readable(facts):
    ids = [f.id for f in facts]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(re.fullmatch(rf"{f.relation}/\S+", f.id) for f in facts)


def test_tiers_follow_head_to_tail_per_relation(facts):
    groups = defaultdict(list)
    for fact in facts:
        groups[fact.relation].append(fact)
    for relation, group in groups.items():
        assert [f.tier for f in group] == h2t_tiers([f.popularity for f in group])
        assert {f.tier for f in group} == {"head", "torso", "tail"}, relation
        # The head is the most popular: every head fact outranks every tail fact.
        assert min(f.popularity for f in group if f.tier == "head") > max(
            f.popularity for f in group if f.tier == "tail")


def test_h2t_tiers_on_a_hand_made_list():
    # 3 × 10 + 6 × 5 + 30 × 1: each block holds exactly one third of the popularity mass.
    pops = [10] * 3 + [5] * 6 + [1] * 30
    assert h2t_tiers(pops) == ["head"] * 3 + ["torso"] * 6 + ["tail"] * 30
    assert h2t_cutpoints(pops) == (1, 5)
    # 100 alone holds half the mass, so the plain rule leaves the head empty: the cut moves down.
    assert h2t_tiers([1, 100, 50, 20, 10, 10, 5, 3, 1]) == [
        "tail", "head", "torso", "tail", "tail", "tail", "tail", "tail", "tail"]
    assert h2t_tiers([7, 7, 7]) == ["tail"] * 3  # one distinct value: nothing to split
    assert h2t_tiers([]) == []
    with pytest.raises(ValueError):
        h2t_tiers([-1, 2])


def test_helpers():
    assert ascii_fold("São Tomé & Príncipe") == "Sao Tome & Principe"
    assert ascii_fold("Łódź") == "Lodz"
    assert make_aliases("Zürich", ["", "Zurich", "Цюрих", "Zuerich"]) == ("Zürich", "Zurich", "Zuerich")
    assert is_guessable("What is the capital of Mexico City?", "Mexico City")
    assert not is_guessable("What is the capital of Mexico?", "Mexico City")
    raws = [RawFact(relation="r", key="a", subject="Paris", answer="France", popularity=2_000_000),
            RawFact(relation="r", key="b", subject="Paris", answer="United States", popularity=25_000),
            RawFact(relation="r", key="c", subject="Cordoba", answer="Argentina", popularity=1_400_000),
            RawFact(relation="r", key="d", subject="Cordoba", answer="Spain", popularity=320_000)]
    assert [f.key for f in resolve_ambiguous(raws)] == ["a"]


def test_build_is_byte_identical(tmp_path, facts):
    first = write_facts(tmp_path / "a.jsonl", facts)
    second = write_facts(tmp_path / "b.jsonl", build_default_facts())
    assert first.read_bytes() == second.read_bytes()


def test_relations_filter(facts):
    subset = build_default_facts(["symbol_of_element", "capital_of_us_state"])
    assert subset == [f for f in facts if f.relation in {"symbol_of_element", "capital_of_us_state"}]
    with pytest.raises(KnowpackError, match="unknown relation"):
        build_default_facts(["capital_of_narnia"])


def test_sample_is_stratified_and_deterministic(facts):
    sample = sample_facts(facts, 300, seed=1)
    assert len(sample) == 300 and sample == sample_facts(facts, 300, seed=1)
    assert sample != sample_facts(facts, 300, seed=2)
    strata = Counter((f.relation, f.tier) for f in sample)
    assert {r for r, _ in strata} == set(RELATIONS)
    assert {t for _, t in strata} == {"head", "torso", "tail"}
    assert max(strata.values()) - min(strata.values()) <= 7  # equal shares, small strata aside
    assert len(sample_facts(facts, 10**6, seed=0)) == len(facts)


def test_committed_sample_matches_the_builder(facts):
    """tests/data/facts/default_sample.jsonl is regenerated with
    `knowpack facts build --sample 200 --seed 0 --out tests/data/facts/default_sample.jsonl`."""
    from pathlib import Path

    committed = read_facts(Path(__file__).parent / "data" / "facts" / "default_sample.jsonl")
    assert committed == sample_facts(facts, 200, seed=0)


def test_every_default_fact_passes_the_file_checks(facts):
    from knowpack.facts.io import check_fact_list

    checked, problems = check_fact_list(facts, "default")
    assert problems == [] and checked == facts


def test_load_default_facts_caches_and_read_default(monkeypatch, facts):
    calls = []
    monkeypatch.setattr(default_set, "build_default_facts", lambda relations=None: calls.append(1) or facts)
    path = default_set.load_default_facts()
    assert path == default_set.default_facts_path() and path.is_file()
    assert default_set.load_default_facts() == path and len(calls) == 1
    assert read_facts("default") == facts


def test_cli_build_sample(tmp_path):
    out = tmp_path / "demo.jsonl"
    args = ["facts", "build", "--out", str(out), "--sample", "40", "--seed", "3",
            "--relations", "capital_of_country,symbol_of_element"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    sampled = read_facts(out)
    assert len(sampled) == 40
    assert {f.relation for f in sampled} == {"capital_of_country", "symbol_of_element"}
    bad = CliRunner().invoke(app, ["facts", "build", "--out", str(out), "--relations", "nope"])
    assert bad.exit_code == 2 and "unknown relation" in bad.output and "Traceback" not in bad.output
