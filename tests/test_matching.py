"""Correctness rules: normalisation, answer spans, word/substring/exact matching."""

import pytest

from knowpack.probe.matching import answer_span, exact_match, is_correct, normalize


@pytest.mark.parametrize("raw, expected", [
    ("Bogotá", "bogota"),
    ("The Beatles", "beatles"),
    ("  an   Apple, a day! ", "apple day"),
    ("U.S.", "us"),
    ("Saint-Étienne", "saint etienne"),
    ("Shakespeare's", "shakespeare"),
    ("Straße", "strasse"),
    ("São Tomé and Príncipe", "sao tome and principe"),
    ("", ""),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_accents_fold_both_ways():
    assert is_correct("Answer: Bogota", ["Bogotá"])
    assert is_correct("Answer: Bogotá", ["Bogota"])


def test_answer_span_first_nonempty_line_without_prefix():
    assert answer_span("\n\nAnswer: Paris\nQuestion: next") == "Paris"
    assert answer_span("Answer:\nParis is the capital") == "Paris is the capital"
    assert answer_span("   ") == ""


def test_word_mode_needs_whole_words():
    assert not is_correct("Hydrogen is the first element", ["H"])
    assert is_correct("H", ["H"])
    assert is_correct("Answer: The symbol is H.", ["H"])
    assert not is_correct("Answer: Parisian", ["Paris"])
    assert is_correct("Paris is the capital of France.", ["Paris"])


def test_substring_mode_is_the_papers_raw_rule():
    assert is_correct("Hydrogen is the first element", ["H"], mode="substring")
    assert is_correct("Answer: parisian", ["Paris"], mode="substring")
    # raw: looks at the whole generation, not just the first line
    assert is_correct("Answer: no idea\nParis", ["Paris"], mode="substring")


def test_exact_mode():
    assert is_correct("Answer: the Beatles.", ["Beatles"], mode="exact")
    assert not is_correct("Answer: Paris, France", ["Paris"], mode="exact")
    assert exact_match("Answer: Paris", ["paris"])


@pytest.mark.parametrize("mode", ["word", "substring", "exact"])
def test_empty_aliases_never_match(mode):
    assert not is_correct("anything at all", ["", "   "], mode=mode)
    assert not is_correct("", [""], mode=mode)
    assert not is_correct("anything", [], mode=mode)


def test_alias_that_normalizes_to_nothing_never_matches():
    assert not is_correct("The answer", ["the"])
    assert not is_correct("!!!", ["?"])


def test_second_line_ignored_in_word_mode():
    assert not is_correct("Answer: London\nParis", ["Paris"])


def test_unknown_mode():
    with pytest.raises(ValueError):
        is_correct("x", ["x"], mode="fuzzy")
