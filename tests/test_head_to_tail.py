"""Head-to-Tail builder: parsing, popularity, tiers, every cleaning rule, balanced seeded sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from knowpack.cli.app import app
from knowpack.errors import KnowpackError, ValidationFailed
from knowpack.facts import read_facts
from knowpack.facts.head_to_tail import (
    HeadToTailConfig, Triple, balanced_sample, build_head_to_tail, candidate_facts,
    entity_popularity, keep_candidate, label, read_templates, read_triples, render)

DATA = Path(__file__).parent / "data" / "facts"
NT, TSV = DATA / "h2t_triples.nt", DATA / "h2t_triples.tsv"
YAML, JSON = DATA / "h2t_templates.yaml", DATA / "h2t_templates.json"
HEAD = {"Albert Einstein", "Marie Curie", "Isaac Newton"}
TORSO = {"Ada Lovelace", "Alan Turing", "Emmy Noether", "Niels Bohr"}
TAIL = {"Jane Roe", "John Doe", "Max Mustermann", "Erika Mustermann", "Juan Pérez", "Ivan Petrov"}
R = "http://dbpedia.org/resource/"


@pytest.fixture(scope="module")
def candidates():
    return {f.id: f for f in candidate_facts(read_triples(NT), read_templates(YAML))}


def test_labels_are_unquoted_local_names():
    assert label(f"{R}Caf%C3%A9_de_Flore") == "Café de Flore"
    assert label("http://dbpedia.org/ontology/birthPlace") == "birthPlace"
    assert label("dbo:birthPlace") == "birthPlace"


def test_popularity_counts_subject_and_object_mentions():
    counts = entity_popularity(read_triples(NT))
    assert counts[f"{R}Albert_Einstein"] == 13  # 1 birthPlace + 12 links
    assert counts[f"{R}Niels_Bohr"] == 5
    assert counts[f"{R}Paris"] == 3  # object of Alice's birthPlace, Montmartre isPartOf, PSG city
    assert counts[f"{R}Jane_Roe"] == 1


def test_candidates_and_tiers(candidates):
    assert set(candidates) == {f"birthPlace/{p}" for p in HEAD | TORSO | TAIL} | {
        "city/Café de Flore", "homepage/Example Org"}
    for people, tier in ((HEAD, "head"), (TORSO, "torso"), (TAIL, "tail")):
        assert {candidates[f"birthPlace/{p}"].tier for p in people} == {tier}
    einstein = candidates["birthPlace/Albert Einstein"]
    assert einstein.question == "Albert Einstein was born in which place?"
    assert einstein.paraphrases == ["Where was Albert Einstein born?", "In which city was Albert Einstein born?"]
    assert einstein.answer == "Ulm" and einstein.popularity == 13 and einstein.domain == "open"


def test_unquoting_and_disambiguation_alias(candidates):
    cafe = candidates["city/Café de Flore"]
    assert cafe.answer == "Paris (France)" and "Paris" in cafe.aliases and cafe.domain == "places"
    assert "birthPlace/Juan Pérez" in candidates


@pytest.mark.parametrize("fact_id", [
    "birthPlace/Alice Smith",         # two objects: not a single-answer question
    "spouse/Bob Jones",               # relation without a template
    "isPartOf/Montmartre",            # isPartOf/category relations are dropped
    "birthPlace/Foo  Bar", "birthPlace/Foo Bar",  # "__" in the subject
    "birthPlace/Dan Brown",           # "__" in the object
    "birthPlace/List of physicists",  # "List of" subjects
    "genre/Tetris",                   # generic answer
    "city/Paris Saint-Germain",       # answer contained in the subject
    "website/Example Org",            # URL answer outside page/homepage/webcast
])
def test_cleaning_rules_drop(candidates, fact_id):
    assert fact_id not in candidates


def test_cleaning_rules_one_by_one():
    def ok(s, p, o, entity=True):
        return keep_candidate(Triple(subject_id=R + s, relation=p,
                                     object_id=(R + o) if entity else o, object_is_entity=entity))

    assert ok("Albert_Einstein", "birthPlace", "Ulm")
    assert not ok("Montmartre", "isPartOf", "Paris")
    assert not ok("Thing", "category", "Stuff")
    assert not ok("Foo__Bar", "birthPlace", "Gotham")
    assert not ok("Dan_Brown", "birthPlace", "Exeter__town")
    assert not ok("List_of_physicists", "birthPlace", "Nowhere")
    assert not ok("Tetris", "genre", "Cross-platform")
    assert not ok("Ensign", "rank", "Military_ranks_of_Peru")
    assert not ok("Paris_Saint-Germain", "city", "Paris")
    assert ok("Example_Org", "homepage", "http://example.org", entity=False)
    assert not ok("Example_Org", "website", "http://example.org", entity=False)


def test_text_fix():
    assert render("What is the the name of _?", "X") == "What is the name of X?"


def test_balanced_sampling_is_capped_equal_per_tier_and_seeded(candidates):
    facts = list(candidates.values())
    full = balanced_sample(facts, HeadToTailConfig(per_tier_relation=30, seed=1))
    # city and homepage lack head/torso candidates, so balancing drops them; birthPlace: min=3.
    assert {f.relation for f in full} == {"birthPlace"}
    assert [sum(f.tier == t for f in full) for t in ("head", "torso", "tail")] == [3, 3, 3]
    capped = balanced_sample(facts, HeadToTailConfig(per_tier_relation=2, seed=1))
    assert [sum(f.tier == t for f in capped) for t in ("head", "torso", "tail")] == [2, 2, 2]
    assert capped == balanced_sample(facts, HeadToTailConfig(per_tier_relation=2, seed=1))
    draws = {tuple(f.id for f in balanced_sample(facts, HeadToTailConfig(per_tier_relation=2, seed=s)))
             for s in range(6)}
    assert len(draws) > 1  # the seed matters


def test_tsv_and_json_inputs_give_the_same_facts(candidates):
    from_tsv = candidate_facts(read_triples(TSV), read_templates(JSON))
    born = {f.id: (f.tier, f.answer, f.question) for f in from_tsv if f.relation == "birthPlace"}
    assert born == {k: (f.tier, f.answer, f.question) for k, f in candidates.items()
                    if f.relation == "birthPlace"}
    assert read_templates(JSON) == read_templates(YAML)


def test_bad_inputs_are_reported(tmp_path):
    bad = tmp_path / "t.nt"
    bad.write_text(f"<{R}A> <{R}p> <{R}B> .\nnot a triple\n<{R}C> <{R}p> <{R}D>\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as info:
        read_triples(bad)
    assert [p.split(": ")[0] for p in info.value.problems] == [f"{bad}:2", f"{bad}:3"]
    templates = tmp_path / "t.json"
    templates.write_text('{"p": "What is it?"}', encoding="utf-8")
    with pytest.raises(ValidationFailed, match="subject slot"):
        read_templates(templates)
    with pytest.raises(KnowpackError, match="not found"):
        read_triples(tmp_path / "missing.nt")


runner = CliRunner()


def test_cli_build_head_to_tail(tmp_path):
    out = tmp_path / "h2t.jsonl"
    result = runner.invoke(app, ["facts", "build", "--triples", str(NT), "--templates", str(YAML),
                                 "--out", str(out), "--per-tier-relation", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    facts = read_facts(out)
    assert len(facts) == 6 and [f.id for f in facts] == sorted(f.id for f in facts)
    assert facts == build_head_to_tail(NT, YAML, HeadToTailConfig(per_tier_relation=2, seed=3))


def test_cli_build_errors_have_no_traceback(tmp_path):
    missing = runner.invoke(app, ["facts", "build", "--triples", str(tmp_path / "x.nt"),
                                  "--templates", str(YAML), "--out", str(tmp_path / "o.jsonl")])
    assert missing.exit_code == 2 and "not found" in missing.output and "Traceback" not in missing.output
    alone = runner.invoke(app, ["facts", "build", "--triples", str(NT), "--out", str(tmp_path / "o.jsonl")])
    assert alone.exit_code != 0 and "--templates" in alone.output
    assert not (tmp_path / "o.jsonl").exists()


def test_candidates_a_fact_file_may_not_hold_are_dropped(tmp_path):
    """Literal objects that could never be matched or read back do not become facts."""
    triples = tmp_path / "t.nt"
    lines = [f'<{R}A> <{R}motto> "!!!" .', f'<{R}B> <{R}motto> "first\\nsecond" .',
             f'<{R}C> <{R}motto> "{"x" * 400}" .', f'<{R}D> <{R}motto> "Per aspera\\u200b" .',
             f'<{R}E> <{R}motto> "Carpe diem" .',
             f'<{R}F_x> <{R}motto> "Ora et labora" .', f'<{R}f_X> <{R}motto> "Nunc aut numquam" .']
    triples.write_text("\n".join(lines) + "\n", encoding="utf-8")
    templates = tmp_path / "t.json"
    templates.write_text('{"motto": "What is the motto of _?"}', encoding="utf-8")
    facts = candidate_facts(read_triples(triples), read_templates(templates))
    # "F x" and "f X" are one id up to case: only the first (in sorted order) is kept.
    assert [(f.id, f.answer) for f in facts] == [("motto/E", "Carpe diem"), ("motto/F x", "Ora et labora")]
