"""Chemical element relations from the SQLite ``elements.db`` shipped in the mendeleev wheel.

Only the database file is read (located with ``importlib.util.find_spec``, which does not run
mendeleev's ``__init__`` and its heavy imports). Popularity is the wordfreq Zipf frequency of
the element's name for every element relation, because the element is the entity asked about.
"""

from __future__ import annotations

import importlib.util
import re
import sqlite3
from pathlib import Path

from knowpack.errors import KnowpackError
from knowpack.facts.sources.common import RawFact, make_aliases, zipf



def elements_db_path() -> Path:
    """Location of mendeleev's ``elements.db`` (installed with ``pip install --no-deps mendeleev``)."""
    spec = importlib.util.find_spec("mendeleev")
    if spec is None or not spec.submodule_search_locations:
        raise KnowpackError("the package `mendeleev` (needed for its elements.db) is not installed",
                            hint="pip install --no-deps mendeleev==1.3.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "elements.db"
    if not path.is_file():
        raise KnowpackError(f"`mendeleev` is installed but {path} is missing",
                            hint="pip install --force-reinstall --no-deps mendeleev==1.3.0")
    return path


# Words that mark an institution or a place rather than a person: no surname alias for those.
_ORGANISATION_WORDS = frozenset({"institute", "laboratory", "research", "university", "centre",
                                 "center", "national", "nuclear", "physics", "calif", "cal",
                                 "argonne", "alamos"})


def _discoverers(text: str | None) -> list[str]:
    """Split "G.T.Seaborg, S.G.Tompson" / "Pierre and Marie Curie"; ancient elements have none.

    A lone first name before "and" takes the next person's surname ("Pierre" → "Pierre Curie").
    """
    if not text or "ancient" in text.lower():
        return []
    people = []
    for chunk in re.split(r"[,;]", text):
        pair = [p.strip() for p in re.split(r"\band\b", chunk) if p.strip()]
        if len(pair) == 2 and " " not in pair[0] and "." not in pair[0] and " " in pair[1]:
            pair[0] = f"{pair[0]} {pair[1].split()[-1]}"
        people += [p for p in pair if p.lower().rstrip(".") != "et al"]
    return people


def _surname(name: str) -> str | None:
    """Last name of a person ("G.T.Seaborg" → "Seaborg"), accepted as a shorter answer."""
    words = re.split(r"[.\s/]+", name.strip())
    if any(w.lower() in _ORGANISATION_WORDS for w in words) or "(" in name or len(words) > 5:
        return None
    last = words[-1]
    return last if len(last) >= 4 and last != name and last[0].isupper() else None


def build() -> list[RawFact]:
    """Five facts per element where the database has the value."""
    uri = f"file:{elements_db_path()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as con:
        rows = con.execute("SELECT atomic_number, symbol, name, discoverers, discovery_year "
                           "FROM elements ORDER BY atomic_number").fetchall()
    facts = []
    for number, symbol, name, discoverers, year in rows:
        pop = zipf(name)

        def add(relation: str, subject: str, answer: str, extra: list[str | None]) -> None:
            facts.append(RawFact(relation=relation, key=symbol, subject=subject, answer=answer,
                                 aliases=make_aliases(answer, extra), popularity=pop))

        add("symbol_of_element", name, symbol, [])
        add("element_of_symbol", symbol, name, [])
        add("atomic_number_of_element", name, str(number), [])
        people = _discoverers(discoverers)
        if people:
            # Co-discoverers and surnames also count: any of them answers the question.
            add("discoverer_of_element", name, people[0],
                [_surname(people[0]), *people[1:], *(_surname(p) for p in people[1:])])
        if year:
            add("discovery_year_of_element", name, str(int(year)), [])
    return facts
