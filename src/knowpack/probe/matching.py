"""Answer correctness: normalisation, answer spans and the three matching rules (docs/design.md, "Correctness")."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Literal

MatchMode = Literal["word", "substring", "exact"]
MATCH_MODES: tuple[str, ...] = ("word", "substring", "exact")

# Letters that NFKD does not decompose into base letter + accent.
_FOLD = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d",
                       "þ": "th", "ı": "i", "ħ": "h"})
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
# A dot or apostrophe inside a word joins it ("U.S." -> "us", "O'Brien" -> "obrien"), so an alias
# written either way normalizes the same; any other punctuation separates words.
_INNER_JOINERS = re.compile(r"(?<=\w)[.'’](?=\w)")
_POSSESSIVE = re.compile(r"(?<=\w)['’]s\b")
_ANSWER_PREFIX = re.compile(r"^\s*(?:answer|a)\s*:\s*", re.IGNORECASE)


def _fold_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_FOLD))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize(text: str) -> str:
    """Lower-case, fold accents, drop punctuation, the articles a/an/the and extra whitespace.

    ``normalize("The Bogotá, D.C.!") == "bogota dc"``.
    """
    text = _fold_accents(text)
    text = _POSSESSIVE.sub("", text)
    text = _INNER_JOINERS.sub("", text)
    # Unicode categories P* (punctuation) and S* (symbols) become spaces.
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_span(generation: str) -> str:
    """The answer part of a generation: its first non-empty line, without an "Answer:" prefix."""
    for line in generation.splitlines():
        span = _ANSWER_PREFIX.sub("", line, count=1).strip()
        if span:
            return span
    return ""


def _usable(aliases: Iterable[str]) -> list[str]:
    # Empty aliases would match everything: the paper's code tests `answer.find(alias) + 1`, which is
    # true for an empty alias, so such facts counted as known whatever the model said.
    return [a for a in aliases if a and a.strip()]


def is_correct(generation: str, aliases: Iterable[str], mode: MatchMode = "word") -> bool:
    """Whether ``generation`` answers with one of ``aliases``.

    * ``word`` (default): a normalized alias occurs as whole words in the normalized answer span,
      so "H" does not match "Hydrogen is ...".
    * ``substring``: the paper's raw rule, lower-cased alias inside the lower-cased generation.
    * ``exact``: normalized span equals a normalized alias.
    """
    aliases = _usable(aliases)
    if mode == "substring":
        lowered = generation.lower()
        return any(alias.lower() in lowered for alias in aliases)
    span = normalize(answer_span(generation))
    if not span:
        return False
    if mode == "exact":
        return any(span == normalize(alias) for alias in aliases)
    if mode == "word":
        padded = f" {span} "
        return any(f" {norm} " in padded for norm in map(normalize, aliases) if norm)
    raise ValueError(f"unknown match mode {mode!r}; expected one of {MATCH_MODES}")


def exact_match(generation: str, aliases: Iterable[str]) -> bool:
    """Normalized answer span equals a normalized alias (reported beside the containment rule)."""
    return is_correct(generation, aliases, mode="exact")
