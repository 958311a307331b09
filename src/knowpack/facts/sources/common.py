"""Shared pieces of the default-set sources: the raw fact record, alias and popularity helpers."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

MAX_ALIASES = 10

# Letters that NFKD does not decompose into ASCII but that have a conventional ASCII spelling.
_FOLD_EXTRA = str.maketrans({
    "ß": "ss", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ħ": "h", "ı": "i",
    "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D",
    "‘": "'", "’": "'", "ʻ": "'", "ʼ": "'", "ʿ": "'", "ʾ": "'", "–": "-", "—": "-",
})


class RawFact(BaseModel):
    """One fact as a source produces it, before templates, cleaning and tiers are applied."""

    model_config = ConfigDict(frozen=True)

    relation: str
    key: str  # readable, unique within the relation (an ISO code, a symbol, a place name …)
    subject: str
    answer: str
    aliases: tuple[str, ...] = ()
    popularity: float = 0.0


def ascii_fold(text: str) -> str:
    """Drop accents and map special letters to ASCII ("São Tomé" → "Sao Tome")."""
    if text.isascii():  # most names: skip the Unicode work
        return text
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_EXTRA))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def is_latin(text: str) -> bool:
    """True when every letter of ``text`` is in the Latin script (so the alias suits English QA)."""
    if text.isascii():
        return True
    for ch in text:
        # Modifier letters (the ʻokina in "Paʻanga") are script-neutral marks, not letters of a script.
        if ch.isalpha() and unicodedata.category(ch) != "Lm" and not unicodedata.name(ch, "").startswith("LATIN"):
            return False
    return True


def make_aliases(answer: str, candidates: Iterable[str | None], limit: int = MAX_ALIASES) -> tuple[str, ...]:
    """Answer first, then its ASCII fold, then distinct Latin-script candidates (and their folds).

    Empty strings and case-insensitive repeats are dropped; at most ``limit`` entries are kept.
    """
    out: list[str] = []
    seen: set[str] = set()

    def add(value: str | None) -> None:
        if value is None:
            return
        value = " ".join(value.split())
        if not value or not is_latin(value) or value.casefold() in seen:
            return
        seen.add(value.casefold())
        out.append(value)

    add(answer)
    add(ascii_fold(answer))
    for candidate in candidates:
        add(candidate)
        if candidate:
            add(ascii_fold(candidate))
    if not out or out[0] != " ".join(answer.split()):
        out.insert(0, answer)  # a non-Latin answer still comes first
    return tuple(out[:limit])


@functools.lru_cache(maxsize=None)
def zipf(text: str) -> float:
    """wordfreq Zipf frequency of ``text`` in English: the popularity proxy for non-place subjects."""
    import wordfreq

    return float(wordfreq.zipf_frequency(text, "en"))


class RelationSpec(BaseModel):
    """A relation of the default set (from ``relations.yaml``): source module, domain, templates.

    The first template (``{subject}`` slot) gives ``question``; the others give ``paraphrases``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    source: str  # module under knowpack.facts.sources whose build() yields this relation
    domain: str
    templates: tuple[str, ...] = Field(min_length=3)

    def render(self, subject: str) -> list[str]:
        """Every template filled with ``subject``."""
        return [t.format(subject=subject) for t in self.templates]


# A name shared by several entities is kept only if the most popular one is this many times more
# popular than the best rival with a different answer ("Paris" → France, not Paris, Texas).
DOMINANCE_RATIO = 10.0


def resolve_ambiguous(facts: Iterable[RawFact], key=lambda f: (f.relation, f.subject)) -> list[RawFact]:
    """Keep one fact per question key: merge same-answer repeats, apply the dominance rule.

    Facts sharing ``key`` (the same question) but answering differently are all dropped unless
    the most popular is ``DOMINANCE_RATIO`` times more popular than every rival answer. Survivors
    come in first-seen key order, so the result is deterministic.
    """
    groups: dict[object, list[RawFact]] = {}
    for fact in facts:
        groups.setdefault(key(fact), []).append(fact)
    keep: set[int] = set()
    for group in groups.values():
        best = max(group, key=lambda f: f.popularity)  # max keeps the first on ties: stable
        rivals = [f.popularity for f in group if f.answer.casefold() != best.answer.casefold()]
        if not rivals or best.popularity >= DOMINANCE_RATIO * max(rivals) and best.popularity > 0:
            keep.add(id(best))
    return [f for group in groups.values() for f in group if id(f) in keep]
