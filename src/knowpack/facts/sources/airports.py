"""city_of_airport_code: the city an IATA airport code serves (airportsdata + GeoNames).

An airport is kept only if its city is a GeoNames city (≥ 15k) of the same country, which both
checks the city name and gives the popularity (the served city's population).
"""

from __future__ import annotations

from knowpack.facts.sources.catalog import largest_city_by_name
from knowpack.facts.sources.common import RawFact, make_aliases


def build() -> list[RawFact]:
    """One fact per IATA code whose city is a known GeoNames city."""
    import airportsdata

    index = largest_city_by_name()
    facts = []
    for code, airport in sorted(airportsdata.load("IATA").items()):
        name = " ".join(str(airport.get("city") or "").split())
        city = index.get((airport.get("country"), name))
        if city is None or len(code) != 3:
            continue
        facts.append(RawFact(relation="city_of_airport_code", key=code, subject=code, answer=name,
                             aliases=make_aliases(name, []), popularity=float(city.population)))
    return facts
