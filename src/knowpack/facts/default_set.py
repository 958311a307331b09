"""The default fact set, built offline from data in pinned PyPI packages (no network, same bytes everywhere).

Pipeline: every source yields raw facts → keep the requested relations → drop facts whose answer
is the subject → resolve ambiguous questions (dominance rule) → drop guessable facts (every
answer word already in the question) → Head-to-Tail tiers per relation → render the question
and paraphrases from the relation's templates → sort by id. Every step is deterministic, so two
builds give the same bytes.

Tiers follow Head-to-Tail (cumulative thirds of popularity mass within each relation), which is
very top-heavy for populations: e.g. capital_of_country has 1 head, 15 torso and 217 tail facts.
:mod:`knowpack.facts.tiers` keeps every tier non-empty; :func:`sample_facts` draws equal shares
per (relation, tier) so small demo sets are still balanced.
``tests/data/facts/default_sample.jsonl`` is ``sample_facts(build_default_facts(), 200, seed=0)``
for tests that need real facts without a build.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.facts.sources import BUILDERS, RELATIONS, RawFact
from knowpack.facts.sources.common import ascii_fold, resolve_ambiguous
from knowpack.facts.tiers import h2t_tiers
from knowpack.facts.writers import write_facts

DEFAULT_SET_VERSION = "v1"


def default_facts_path() -> Path:
    """Where :func:`load_default_facts` caches the default set."""
    from knowpack.paths import knowpack_home

    return knowpack_home() / "facts" / f"default-{DEFAULT_SET_VERSION}.jsonl"


def load_default_facts() -> Path:
    """Build the default set once into the knowpack cache (atomically) and return its path."""
    path = default_facts_path()
    if not path.is_file():
        write_facts(path, build_default_facts())
    return path


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", ascii_fold(text).casefold())


def is_guessable(question: str, answer: str) -> bool:
    """True when every word of the answer already occurs in the question (no knowledge needed)."""
    answer_words = _words(answer)
    return bool(answer_words) and set(answer_words) <= set(_words(question))


def select_relations(relations: Iterable[str] | None) -> list[str]:
    """Validate a relation filter against the default set's relations (all of them when None)."""
    if relations is None:
        return sorted(RELATIONS)
    chosen = sorted({r.strip() for r in relations if r.strip()})
    unknown = [r for r in chosen if r not in RELATIONS]
    if unknown or not chosen:
        raise KnowpackError(f"unknown relation(s): {', '.join(unknown) or '(none given)'}",
                            hint="choose from: " + ", ".join(sorted(RELATIONS)))
    return chosen


def clean_raw_facts(raw: Iterable[RawFact]) -> list[RawFact]:
    """Drop answer = subject, ambiguous questions (dominance rule) and guessable facts."""
    kept = [f for f in raw if ascii_fold(f.answer).casefold() != ascii_fold(f.subject).casefold()]
    kept = resolve_ambiguous(kept)
    # Different relations must not ask the same question text either.
    kept = resolve_ambiguous(kept, key=lambda f: RELATIONS[f.relation].render(f.subject)[0])
    return [f for f in kept if not is_guessable(RELATIONS[f.relation].render(f.subject)[0], f.answer)]


def to_facts(raw: Sequence[RawFact]) -> list[Fact]:
    """Turn cleaned raw facts into :class:`Fact` records with per-relation tiers, sorted by id."""
    by_relation: dict[str, list[RawFact]] = {}
    for fact in raw:
        by_relation.setdefault(fact.relation, []).append(fact)
    facts: list[Fact] = []
    for relation, group in by_relation.items():
        spec = RELATIONS[relation]
        tiers = h2t_tiers([f.popularity for f in group])
        for fact, tier in zip(group, tiers):
            question, *paraphrases = spec.render(fact.subject)
            facts.append(Fact(
                id=f"{relation}/{fact.key}", subject=fact.subject, relation=relation,
                question=question, answer=fact.answer, aliases=list(fact.aliases),
                popularity=fact.popularity, tier=tier, paraphrases=paraphrases, domain=spec.domain))
    facts.sort(key=lambda f: f.id)
    duplicates = sorted({a.id for a, b in zip(facts, facts[1:]) if a.id == b.id})
    if duplicates:  # a source bug, not a user error: fail loudly rather than write a bad set
        raise RuntimeError(f"duplicate fact ids in the default set: {duplicates[:5]}")
    return facts


def build_default_facts(relations: Iterable[str] | None = None) -> list[Fact]:
    """Build the default fact set in memory (all relations, or only ``relations``)."""
    chosen = set(select_relations(relations))
    raw = [f for names, build in BUILDERS if names & chosen for f in build() if f.relation in chosen]
    return to_facts(clean_raw_facts(raw))


def _allocate(sizes: dict[tuple[str, str], int], n: int, rng) -> dict[tuple[str, str], int]:
    """Split ``n`` draws as evenly as possible over strata, never beyond a stratum's size."""
    alloc = {key: 0 for key in sizes}
    remaining = min(n, sum(sizes.values()))
    while remaining > 0:
        open_keys = [key for key in sorted(sizes) if alloc[key] < sizes[key]]
        share = remaining // len(open_keys)
        if share == 0:  # fewer draws left than open strata: a seeded choice of which get one
            for key in rng.sample(open_keys, remaining):
                alloc[key] += 1
            break
        for key in open_keys:
            take = min(share, sizes[key] - alloc[key])
            alloc[key] += take
            remaining -= take
    return alloc


def sample_facts(facts: Sequence[Fact], n: int, seed: int = 0) -> list[Fact]:
    """A deterministic sample of ``n`` facts stratified by (relation, tier), sorted by id.

    Every (relation, tier) stratum gets an equal share (small strata give their unused share to
    the others), so a few hundred facts still cover every relation and tier.
    """
    import random

    if n < 0:
        raise KnowpackError(f"--sample must be ≥ 0, got {n}")
    rng = random.Random(seed)
    strata: dict[tuple[str, str], list[Fact]] = {}
    for fact in sorted(facts, key=lambda f: f.id):
        strata.setdefault((fact.relation, fact.tier or "none"), []).append(fact)
    alloc = _allocate({key: len(group) for key, group in strata.items()}, n, rng)
    chosen = [f for key in sorted(strata) for f in rng.sample(strata[key], alloc[key])]
    return sorted(chosen, key=lambda f: f.id)
