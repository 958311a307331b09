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


def test_category_shots_short_of_facts_stop_the_study_before_training(tmp_path):
    # 10 prompts × 4 shots = 40 WeaklyKnown exemplars; the fake probe finds 15 (2 held out).
    path = write_spec(tmp_path, probe={"prompts": 10, "shots": 4, "samples": 0},
                      grid={"unknown": [2], "extra": [0], "seed": [1]},
                      eval={"benchmarks": [], "benchmark_shot_category": "WeaklyKnown"})
    fakes = FakeStages()
    with pytest.raises(KnowpackError, match="cannot run as specified") as err:
        _run(path, fakes)
    assert "needs 40 WeaklyKnown facts, 40 of them few-shot exemplars, the base probe has 15 (2 held out" \
        in err.value.message
    assert "train_adapter" not in fakes.calls


def test_category_shots_reach_the_evaluation_with_the_study_facts(tmp_path):
    from knowpack.study.runner import CellContext, _eval_extras

    facts = [Fact(id="a", subject="s", relation="r", question="q?", answer="x")]
    plain = write_spec(tmp_path, out="plain")
    shots = write_spec(tmp_path, out="shots", eval={"benchmarks": [], "benchmark_shot_category": "Unknown"})
    from knowpack.study.plan import load_study

    def extras(path):
        ctx = CellContext(study=load_study(path), stages=None, store=None, facts=facts, model=None,
                          base_dir=tmp_path, progress=False)
        return _eval_extras(ctx)

    assert extras(plain) == {} and extras(shots) == {"shot_facts": facts}
