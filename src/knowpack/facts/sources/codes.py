"""Code relations: the currency of an ISO 4217 code and the language of an ISO 639-1 code.

Popularity is the population behind the code: the summed population of the countries whose
current currency it is, or whose official languages include it (GeoNames populations).
"""

from __future__ import annotations

from knowpack.facts.sources.catalog import countries
from knowpack.facts.sources.common import RawFact, make_aliases
from knowpack.facts.sources.countries import currency_code


def build() -> list[RawFact]:
    """One fact per ISO 4217 currency and per ISO 639-1 language that CLDR names in English."""
    import pycountry
    from babel import Locale
    from babel.languages import get_official_languages

    english = Locale("en")
    currency_pop: dict[str, int] = {}
    language_pop: dict[str, int] = {}
    for country in countries():
        if code := currency_code(country):
            currency_pop[code] = currency_pop.get(code, 0) + country.population
        for lang in get_official_languages(country.code, de_facto=True):
            language_pop[lang] = language_pop.get(lang, 0) + country.population
    facts = []
    for currency in sorted(pycountry.currencies, key=lambda c: c.alpha_3):
        name = english.currencies.get(currency.alpha_3)
        if not name or name == currency.alpha_3:
            continue
        facts.append(RawFact(relation="currency_of_iso4217_code", key=currency.alpha_3,
                             subject=currency.alpha_3, answer=name,
                             aliases=make_aliases(name, [currency.name]),
                             popularity=float(currency_pop.get(currency.alpha_3, 0))))
    for language in sorted((l for l in pycountry.languages if hasattr(l, "alpha_2")),
                           key=lambda l: l.alpha_2):
        name = english.languages.get(language.alpha_2) or language.name
        facts.append(RawFact(relation="language_of_iso639_1_code", key=language.alpha_2,
                             subject=language.alpha_2, answer=name,
                             aliases=make_aliases(name, [language.name]),
                             popularity=float(language_pop.get(language.alpha_2, 0))))
    return facts
