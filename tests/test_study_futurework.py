"""Study-level checks of the future-work axes: same-relation mixtures, several models, early stopping."""

from __future__ import annotations

import pytest
from test_study_runner import FakeStages, _run, write_spec

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.io import write_jsonl
from knowpack.probe.slick import CATEGORIES


def _facts_with_a_small_relation(tmp_path):
    """40 facts; the fake probe gives fact i the category CATEGORIES[i % 4]. Relation `small` holds
    only Unknown facts (four of them), relation `big` everything else."""
    unknown_at = CATEGORIES.index("Unknown")
    facts = [Fact(id=f"f{i:03d}", subject=f"s{i}", relation="small" if i < 16 and i % 4 == unknown_at else "big",
                  question=f"q{i}?", answer=f"a{i}") for i in range(40)]
    path = tmp_path / "facts.jsonl"
    write_jsonl(path, facts)
    return path


def test_same_relation_shortage_stops_the_study_before_training(tmp_path):
    facts = _facts_with_a_small_relation(tmp_path)
    path = write_spec(tmp_path, facts=str(facts), facts_sample=None,
                      mix={"heldout_per_category": 0, "retention_sample": 0},
                      grid={"unknown": [10], "extra": [1], "kind": ["same_relation_known"], "seed": [1]})
    fakes = FakeStages()
    with pytest.raises(KnowpackError, match="cannot run as specified") as err:
        _run(path, fakes)
    assert "relation 'small': 4 Unknown fact(s) × 1 need 4 known facts, it has 0 HighlyKnown + 0 MaybeKnown" \
        in err.value.message
    assert "10 UK + 1 SameRel" in err.value.message
    assert "train_adapter" not in fakes.calls and "build_mixture" not in fakes.calls
