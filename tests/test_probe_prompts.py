"""Prompt messages, fixed shot sets and same-relation shots."""

import pytest

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.probe.config import ProbeConfig
from knowpack.probe.prompts import (SYSTEM_PROMPT, build_shot_sets, fewshot_messages, group_by_relation,
                                    shots_for, training_messages, zero_shot_messages)
from knowpack.probe.slick import categorize


def make_facts(n_rel=3, per_rel=12):
    return [Fact(id=f"{r}-{i}", subject=f"S{r}{i}", relation=f"rel{r}", question=f"Q {r} {i}?",
                 answer=f"A{r}{i % 5}") for r in range(n_rel) for i in range(per_rel)]


def test_message_shapes():
    shot = Fact(id="s", subject="x", relation="r", question="Who?", answer="Me")
    msgs = fewshot_messages("Where?", [shot, shot])
    assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert msgs[1] == {"role": "user", "content": "Question: Who?"}
    assert msgs[2] == {"role": "assistant", "content": "Answer: Me"}
    assert msgs[-1] == {"role": "user", "content": "Question: Where?"}
    assert len(msgs) == 6
    assert zero_shot_messages("Q?") == [{"role": "system", "content": SYSTEM_PROMPT},
                                        {"role": "user", "content": "Question: Q?"}]
    assert training_messages("Q?", "A")[-1] == {"role": "assistant", "content": "Answer: A"}


def test_fixed_shot_sets_are_seeded_distinct_and_spread():
    facts = make_facts()
    cfg = ProbeConfig(prompts=3, shots=4)
    sets = build_shot_sets(facts, cfg)
    assert sets == build_shot_sets(list(reversed(facts)), cfg)  # order of the pool does not matter
    ids = [f.id for s in sets for f in s]
    assert len(ids) == len(set(ids)) == 12
    assert all(len({f.relation for f in s}) >= 3 for s in sets)
    assert sets != build_shot_sets(facts, cfg.model_copy(update={"seed": 1}))
    with pytest.raises(KnowpackError):
        build_shot_sets(facts[:5], cfg)


def test_relation_shots_exclude_self_subject_and_answer():
    facts = make_facts(per_rel=30)
    facts.append(Fact(id="dup-subject", subject="S00", relation="rel0", question="Q?", answer="zzz"))
    cfg = ProbeConfig(prompts=4, shots=3, shot_pool="relation")
    pool = group_by_relation(facts)
    target = facts[0]
    sets = shots_for(target, cfg, None, pool)
    assert len(sets) == 4 and all(len(s) == 3 for s in sets)
    for s in sets:
        for shot in s:
            assert shot.relation == target.relation
            assert shot.id != target.id and shot.subject != target.subject
            assert shot.answer != target.answer
    # seeded per fact id: the same whatever else is in the pool order
    assert sets == shots_for(target, cfg, None, group_by_relation(list(reversed(facts))))


def test_relation_shots_too_few():
    facts = make_facts(per_rel=3)
    cfg = ProbeConfig(prompts=2, shots=4, shot_pool="relation")
    with pytest.raises(KnowpackError, match="rel0"):
        shots_for(facts[0], cfg, None, group_by_relation(facts))


def test_relation_shots_large_relation_uses_rejection_and_is_valid():
    facts = make_facts(n_rel=1, per_rel=400)
    cfg = ProbeConfig(prompts=10, shots=4, shot_pool="relation")
    sets = shots_for(facts[7], cfg, None, group_by_relation(facts))
    flat = [f for s in sets for f in s]
    assert len({f.id for f in flat}) == 40
    assert all(f.answer != facts[7].answer for f in flat)


@pytest.mark.parametrize("greedy, sampled, samples, expected", [
    ([True] * 3, 0, 0, "HighlyKnown"),
    ([True, False, True], 0, 0, "MaybeKnown"),
    ([False] * 3, 2, 48, "WeaklyKnown"),
    ([False] * 3, 0, 48, "Unknown"),
    ([False] * 3, 0, 0, "Unknown"),
])
def test_categorize(greedy, sampled, samples, expected):
    assert categorize(greedy, sampled, samples) == expected
