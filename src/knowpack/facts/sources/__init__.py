"""Sources of the default fact set: one module per data package, each with a ``build()``.

Which relations exist, their domains and question templates are data: ``relations.yaml``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from importlib import resources

from knowpack.facts.sources.common import RawFact, RelationSpec


@functools.lru_cache(maxsize=None)
def _load_relations() -> dict[str, RelationSpec]:
    import yaml

    text = resources.files(__package__).joinpath("relations.yaml").read_text(encoding="utf-8")
    return {name: RelationSpec(name=name, **entry) for name, entry in yaml.safe_load(text).items()}


RELATIONS: dict[str, RelationSpec] = _load_relations()


def _builders() -> tuple[tuple[frozenset[str], Callable[[], list[RawFact]]], ...]:
    sources: dict[str, set[str]] = {}
    for spec in RELATIONS.values():
        sources.setdefault(spec.source, set()).add(spec.name)
    return tuple((frozenset(names), importlib.import_module(f"{__package__}.{source}").build)
                 for source, names in sources.items())


# (relations a source yields, its builder): a build for a few relations skips unrelated sources.
BUILDERS = _builders()

__all__ = ["BUILDERS", "RELATIONS", "RawFact", "RelationSpec"]
