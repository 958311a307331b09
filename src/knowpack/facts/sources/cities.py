"""City relations: the country of a city and the U.S. state of a city (GeoNames).

Popularity is the city's population. Names shared by several cities go through the dominance
rule over *all* cities ≥ 15k before the size filter, so a big city is only kept when no
comparable namesake exists anywhere.
"""

from __future__ import annotations

from knowpack.facts.sources.catalog import cities, countries
from knowpack.facts.sources.common import RawFact, make_aliases, resolve_ambiguous

# country_of_city keeps cities of at least this size: about 5.6k facts, big enough to be well known.
MIN_COUNTRY_OF_CITY_POPULATION = 100_000


def build_country_of_city() -> list[RawFact]:
    """country_of_city for cities ≥ ``MIN_COUNTRY_OF_CITY_POPULATION`` with an unambiguous name."""
    by_code = {c.code: c for c in countries()}
    candidates = [RawFact(relation="country_of_city", key=city.name.replace(" ", "_"),
                          subject=city.name, answer=by_code[city.country].name,
                          aliases=by_code[city.country].aliases, popularity=float(city.population))
                  for city in cities() if city.country in by_code]
    return [f for f in resolve_ambiguous(candidates) if f.popularity >= MIN_COUNTRY_OF_CITY_POPULATION]


def build_us_state_of_city() -> list[RawFact]:
    """us_state_of_city for every U.S. city ≥ 15k in one of the 50 states (alias: USPS code)."""
    import us

    states = {s.abbr: s for s in us.states.STATES}
    candidates = [RawFact(relation="us_state_of_city", key=city.name.replace(" ", "_"),
                          subject=city.name, answer=states[city.admin1].name,
                          aliases=make_aliases(states[city.admin1].name, [city.admin1]),
                          popularity=float(city.population))
                  for city in cities() if city.country == "US" and city.admin1 in states]
    return resolve_ambiguous(candidates)


def build() -> list[RawFact]:
    """Both city relations."""
    return build_country_of_city() + build_us_state_of_city()
