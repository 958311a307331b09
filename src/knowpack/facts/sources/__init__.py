"""Sources of the default fact set: one module per data package, each with ``RELATIONS`` and ``build()``."""

from __future__ import annotations

from collections.abc import Callable

from knowpack.facts.sources import airports, cities, codes, countries, elements, us_states
from knowpack.facts.sources.common import RawFact, RelationSpec

_MODULES = (countries, cities, airports, us_states, elements, codes)

RELATIONS: dict[str, RelationSpec] = {spec.name: spec for m in _MODULES for spec in m.RELATIONS}
# (relations a module yields, its builder): a build for a few relations skips unrelated sources.
BUILDERS: tuple[tuple[frozenset[str], Callable[[], list[RawFact]]], ...] = tuple(
    (frozenset(spec.name for spec in m.RELATIONS), m.build) for m in _MODULES)

__all__ = ["BUILDERS", "RELATIONS", "RawFact", "RelationSpec"]
