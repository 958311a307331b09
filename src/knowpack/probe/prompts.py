"""Chat prompts of the probe and of training examples, and the few-shot pools (docs/design.md, "Prompts")."""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.io import stable_hash
from knowpack.probe.config import ProbeConfig
from knowpack.probe.matching import normalize

SYSTEM_PROMPT = "Answer the following question."


def _question(q: str) -> dict[str, str]:
    return {"role": "user", "content": f"Question: {q}"}


def _answer(a: str) -> dict[str, str]:
    return {"role": "assistant", "content": f"Answer: {a}"}


def fewshot_messages(question: str, shots: list[Fact]) -> list[dict[str, str]]:
    """System prompt, one user/assistant turn pair per shot, then the target question."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for shot in shots:
        messages += [_question(shot.question), _answer(shot.answer)]
    messages.append(_question(question))
    return messages


def zero_shot_messages(question: str) -> list[dict[str, str]]:
    """System prompt and the target question, no shots."""
    return fewshot_messages(question, [])


def training_messages(question: str, answer: str) -> list[dict[str, str]]:
    """A training example: the zero-shot prompt plus the assistant turn "Answer: {answer}"."""
    return [*zero_shot_messages(question), _answer(answer)]


def _rng(*parts: object) -> random.Random:
    # String seeds hash the same in every process (unlike hash()), so draws are reproducible.
    return random.Random(stable_hash([str(p) for p in parts], length=16))


def select_spread(pool: list[Fact], count: int, seed: int) -> list[Fact]:
    """Draw ``count`` distinct facts, round-robin over relations so every relation is represented.

    Relations are visited in a seeded order and facts within a relation in a seeded order, so
    consecutive picks come from different relations (shot sets then mix relations, as the
    paper's TriviaQA shots do).
    """
    if count > len(pool):
        raise KnowpackError(
            f"the few-shot pool has {len(pool)} facts but {count} are needed",
            hint="lower --prompts/--shots, pass more facts, or use --shot-pool relation")
    rng = _rng("spread", seed)
    by_relation: dict[str, list[Fact]] = defaultdict(list)
    for fact in sorted(pool, key=lambda f: f.id):
        by_relation[fact.relation].append(fact)
    relations = sorted(by_relation)
    rng.shuffle(relations)
    for rel in relations:
        rng.shuffle(by_relation[rel])
    picked: list[Fact] = []
    while len(picked) < count:
        for rel in relations:
            if by_relation[rel] and len(picked) < count:
                picked.append(by_relation[rel].pop())
    return picked


def build_shot_sets(pool: list[Fact], config: ProbeConfig) -> list[list[Fact]]:
    """The ``fixed`` pool: N sets of S distinct facts, drawn once with the seed (the paper's scheme)."""
    picked = select_spread(pool, config.prompts * config.shots, config.seed)
    s = config.shots
    return [picked[j * s:(j + 1) * s] for j in range(config.prompts)]


def group_by_relation(pool: Iterable[Fact]) -> dict[str, list[Fact]]:
    """Pool facts by relation, each list sorted by id (so draws do not depend on input order)."""
    groups: dict[str, list[Fact]] = defaultdict(list)
    for fact in pool:
        groups[fact.relation].append(fact)
    return {rel: sorted(facts, key=lambda f: f.id) for rel, facts in groups.items()}


@lru_cache(maxsize=1 << 17)
def _norm(text: str) -> str:
    return normalize(text)


def _shot_allowed(fact: Fact, candidate: Fact) -> bool:
    # A shot that shares the subject or the answer would hand the model the answer.
    if candidate.id == fact.id or _norm(candidate.subject) == _norm(fact.subject):
        return False
    return not {_norm(a) for a in fact.aliases} & {_norm(a) for a in candidate.aliases}


def relation_candidates(fact: Fact, pool_by_relation: dict[str, list[Fact]]) -> list[Fact]:
    """Same-relation shots allowed for ``fact``: not itself, not its subject, not its answer."""
    return [c for c in pool_by_relation.get(fact.relation, []) if _shot_allowed(fact, c)]


def _draw_by_rejection(fact: Fact, group: list[Fact], count: int, rng: random.Random) -> list[Fact] | None:
    # Large relations (e.g. 10k cities): filtering the whole group for every fact is quadratic,
    # so draw random members and skip disallowed ones; None when that does not find enough.
    seen: set[int] = set()
    drawn: list[Fact] = []
    for _ in range(20 * count):
        i = rng.randrange(len(group))
        if i in seen:
            continue
        seen.add(i)
        if _shot_allowed(fact, group[i]):
            drawn.append(group[i])
            if len(drawn) == count:
                return drawn
    return None


def shots_for(fact: Fact, config: ProbeConfig, shot_sets: list[list[Fact]] | None,
              pool_by_relation: dict[str, list[Fact]] | None) -> list[list[Fact]]:
    """The N shot sets used to probe ``fact``.

    ``fixed``: the shared ``shot_sets``. ``relation`` (SliCK): N sets of S same-relation facts
    drawn with a generator seeded by (seed, fact id), so the draw does not depend on which other
    facts are probed or in which order. Sets are disjoint when the relation has enough facts.
    """
    if config.shot_pool == "fixed":
        if shot_sets is None:
            raise ValueError("shot_pool='fixed' needs shot_sets (see build_shot_sets)")
        return shot_sets
    n, s = config.prompts, config.shots
    rng = _rng("relation", config.seed, fact.id)
    group = (pool_by_relation or {}).get(fact.relation, [])
    if len(group) > 8 * n * s:
        drawn = _draw_by_rejection(fact, group, n * s, rng)
        if drawn is not None:
            return [drawn[j * s:(j + 1) * s] for j in range(n)]
    candidates = relation_candidates(fact, pool_by_relation or {})
    if len(candidates) < s:
        raise KnowpackError(
            f"relation {fact.relation!r} has {len(candidates)} usable shot facts for {fact.id!r}, "
            f"{s} are needed",
            hint="lower --shots, add facts of that relation, or use --shot-pool fixed")
    if len(candidates) >= n * s:
        drawn = rng.sample(candidates, n * s)
        return [drawn[j * s:(j + 1) * s] for j in range(n)]
    return [rng.sample(candidates, s) for _ in range(n)]


def render_prompt(backend, messages: list[dict[str, str]]) -> str:
    """Render chat messages for ``backend`` (its own chat template when it has one)."""
    render = getattr(backend, "render", None)
    if render is not None:
        return render(messages)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def fewshot_prompt(backend, fact: Fact, shots: list[Fact]) -> tuple[str, str | None]:
    """The rendered few-shot prompt for ``fact`` and, as a prefix hint, the part every question
    with these shots shares (a backend computes it once)."""
    prompt = render_prompt(backend, fewshot_messages(fact.question, shots))
    # The same prompt with an empty question shares everything up to the question's first character.
    blank = render_prompt(backend, fewshot_messages("", shots))
    return prompt, os.path.commonprefix([prompt, blank]) or None
