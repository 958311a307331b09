"""U.S. state relations from the ``us`` package: capital, postal abbreviation, statehood year.

The ``us`` package has no population, so a state's popularity is the summed population of its
GeoNames cities (≥ 15k), a close proxy for its urban population.
"""

from __future__ import annotations

from knowpack.facts.sources.catalog import cities
from knowpack.facts.sources.common import RawFact, make_aliases



def build() -> list[RawFact]:
    """Three facts per state (the 50 states; DC and territories have no statehood)."""
    import us

    urban: dict[str, int] = {}
    for city in cities():
        if city.country == "US":
            urban[city.admin1] = urban.get(city.admin1, 0) + city.population
    facts = []
    for state in sorted(us.states.STATES, key=lambda s: s.abbr):
        pop = float(urban.get(state.abbr, 0))
        answers = {"capital_of_us_state": state.capital, "postal_abbreviation_of_us_state": state.abbr,
                   "statehood_year_of_us_state": str(state.statehood_year)}
        for relation, answer in answers.items():
            facts.append(RawFact(relation=relation, key=state.abbr, subject=state.name, answer=answer,
                                 aliases=make_aliases(answer, []), popularity=pop))
    return facts
