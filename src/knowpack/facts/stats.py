"""Summary statistics of a fact set: counts by relation and tier, alias/paraphrase coverage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel

from knowpack.facts.schema import TIERS, Fact

NO_TIER = "none"


class TopAnswer(BaseModel):
    """The most frequent answer of a relation and its share of the relation's facts."""

    answer: str
    count: int
    share: float


class FactStats(BaseModel):
    """What ``knowpack facts stats`` reports (also its ``--json`` output)."""

    n_facts: int
    n_relations: int
    by_relation: dict[str, int]
    by_tier: dict[str, int]
    by_relation_tier: dict[str, dict[str, int]]
    alias_coverage: float  # share of facts with ≥ 1 alias besides the answer itself
    paraphrase_coverage: float  # share of facts with ≥ 1 paraphrase
    top_answer: dict[str, TopAnswer]


def _tier_names(facts: Sequence[Fact]) -> list[str]:
    """head, torso, tail, plus "none" only when some fact has no tier."""
    return [*TIERS, *([NO_TIER] if any(f.tier is None for f in facts) else [])]


def compute_stats(facts: Sequence[Fact]) -> FactStats:
    """Count facts by relation, tier and relation×tier; measure alias/paraphrase coverage."""
    tiers = _tier_names(facts)
    by_relation = Counter(f.relation for f in facts)
    pairs = Counter((f.relation, f.tier or NO_TIER) for f in facts)
    answers: dict[str, Counter] = {}
    for fact in facts:
        answers.setdefault(fact.relation, Counter())[fact.answer] += 1
    top = {}
    for relation, counter in sorted(answers.items()):
        # Ties: the alphabetically first answer, so the report is stable.
        answer, count = min(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        top[relation] = TopAnswer(answer=answer, count=count, share=count / by_relation[relation])
    n = len(facts)
    return FactStats(
        n_facts=n,
        n_relations=len(by_relation),
        by_relation=dict(sorted(by_relation.items())),
        by_tier={t: sum(pairs[(r, t)] for r in by_relation) for t in tiers},
        by_relation_tier={r: {t: pairs[(r, t)] for t in tiers} for r in sorted(by_relation)},
        alias_coverage=_share(sum(1 for f in facts if any(a != f.answer for a in f.aliases)), n),
        paraphrase_coverage=_share(sum(1 for f in facts if f.paraphrases), n),
        top_answer=top,
    )


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0
