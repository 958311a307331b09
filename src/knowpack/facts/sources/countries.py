"""Country relations: capital, country of a capital, currency, official language, demonym, calling code.

Popularity of every country fact is the country's GeoNames population.
"""

from __future__ import annotations

import datetime
import difflib
import re

from knowpack.facts.sources.catalog import Country, countries, largest_city_by_name
from knowpack.facts.sources.common import RawFact, ascii_fold, make_aliases

# Pinned so the set does not change with the build date (babel answers "currency in use on date").
CURRENCY_DATE = datetime.date(2025, 1, 1)
# Minimum difflib ratio for a GeoNames alternate name to count as a spelling of the capital.
SPELLING_SIMILARITY = 0.75


def _capital_aliases(country: Country) -> tuple[str, ...]:
    """Latin-script GeoNames spellings of the capital that look like the same name.

    Alternate names include translations into every language; keeping those that share the first
    three (ASCII-folded) letters and are close in spelling keeps "Windhuk" for "Windhoek" but not
    unrelated exonyms; the closest spellings come first.
    """
    target = ascii_fold(country.capital).casefold()
    city = largest_city_by_name().get((country.code, country.capital))
    scored = []
    for name in city.alternatenames if city else ():
        folded = ascii_fold(name).casefold()
        # Lower-case entries are machine transliterations and all-caps ones airport codes.
        if len(name) < 4 or name.islower() or name.isupper() or folded[:3] != target[:3]:
            continue
        similarity = difflib.SequenceMatcher(None, folded, target).ratio()
        if similarity >= SPELLING_SIMILARITY:
            scored.append((-similarity, name))
    return make_aliases(country.capital, [name for _, name in sorted(scored)])


def _phone_aliases(phone: str) -> tuple[str, ...]:
    """"+33" also matches "33" and "0033"; NANP codes like "1-268" also as "+1 268"."""
    spaced = phone.replace("-", " ")
    compact = phone.replace("-", "")
    return make_aliases(f"+{phone}", [phone, f"+{spaced}", spaced, f"00{compact}"])


def currency_code(country: Country) -> str | None:
    """ISO 4217 code of the country's (first) legal-tender currency on ``CURRENCY_DATE``."""
    from babel.numbers import get_territory_currencies

    codes = get_territory_currencies(country.code, start_date=CURRENCY_DATE, tender=True)
    return codes[0] if codes else None


def build() -> list[RawFact]:
    """Every country relation fact (before templates, cleaning and tiers)."""
    import pycountry
    from babel import Locale
    from babel.languages import get_official_languages

    english = Locale("en")
    facts: list[RawFact] = []
    for c in countries():
        pop = float(c.population)

        def add(relation: str, answer: str, aliases: tuple[str, ...], subject: str = c.name,
                key: str = c.code) -> None:
            facts.append(RawFact(relation=relation, key=key, subject=subject, answer=answer,
                                 aliases=aliases, popularity=pop))

        add("capital_of_country", c.capital, _capital_aliases(c))
        add("country_of_capital", c.name, c.aliases, subject=c.capital)
        code = currency_code(c)
        if code and english.currencies.get(code):
            iso = pycountry.currencies.get(alpha_3=code)
            geonames = c.currency_name_geonames
            # GeoNames sometimes gives a bare "Pound"/"Dollar": too generic to accept as an answer.
            extra = [geonames] if len(geonames.split()) > 1 else []
            add("currency_of_country", english.currencies[code],
                make_aliases(english.currencies[code], [code, getattr(iso, "name", None), *extra]))
        languages = [english.languages.get(lang) for lang in get_official_languages(c.code, de_facto=True)]
        languages = [name for name in languages if name]
        if languages:
            # Several official languages: the first is the answer, any other one also counts.
            add("official_language_of_country", languages[0], make_aliases(languages[0], languages[1:]))
        if c.demonym:
            add("demonym_of_country", c.demonym, make_aliases(c.demonym, []))
        if re.fullmatch(r"\d+(-\d+)?", c.phone):
            add("calling_code_of_country", f"+{c.phone}", _phone_aliases(c.phone))
    return facts
