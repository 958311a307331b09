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
    from knowpack.study.cells import CellContext, _eval_extras

    facts = [Fact(id="a", subject="s", relation="r", question="q?", answer="x")]
    plain = write_spec(tmp_path, out="plain")
    shots = write_spec(tmp_path, out="shots", eval={"benchmarks": [], "benchmark_shot_category": "Unknown"})
    from knowpack.study.plan import load_study

    def extras(path):
        ctx = CellContext(study=load_study(path), stages=None, store=None, facts=facts, model=None,
                          base_dir=tmp_path, progress=False)
        return _eval_extras(ctx)

    assert extras(plain) == {} and extras(shots) == {"shot_facts": facts}


def _grid(**axes):
    return {"unknown": [2], "extra": [0, 1], "kind": ["paraphrase"], "seed": [1], **axes}


def test_two_models_get_their_own_base_probe_cells_and_report_columns(tmp_path):
    import pandas as pd

    from knowpack.report.html import build_report
    from knowpack.study.grid import expand_grid
    from knowpack.study.plan import load_study

    path = write_spec(tmp_path, grid=_grid(model=["tiny-a", "tiny-b"]))
    spec = __import__("yaml").safe_load(path.read_text())
    spec.pop("model")
    path.write_text(__import__("yaml").safe_dump(spec))
    fakes = FakeStages()
    run = _run(path, fakes)
    assert not run.failed and len(run.cells) == 4
    assert fakes.calls["run_probe"] == 2  # one base probe per model
    # Both prepared (loaded, probed, checked) before any cell; the first is released meanwhile and
    # loaded again for its cells, so only one model is held at a time.
    assert fakes.calls["load_model"] == 3
    assert len(list((run.out_dir / "base").glob("*/categories.jsonl"))) == 2
    by_model = {m: {c.key for c in run.cells if c.model == m} for m in ("tiny-a", "tiny-b")}
    assert len(by_model["tiny-a"]) == 2 and not by_model["tiny-a"] & by_model["tiny-b"]
    # A model's cells are keyed as in a one-model study of it: adding a model keeps finished cells.
    one = write_spec(tmp_path, out="one", model="tiny-a", grid=_grid())
    assert {c.key for c in expand_grid(load_study(one))} == by_model["tiny-a"]
    for cell in run.cells:
        record = __import__("json").loads((run.out_dir / "cells" / cell.key / "cell.json").read_text())
        assert record["model"] == cell.model and record["axes"]["model"] == cell.model
    results = pd.read_csv(run.out_dir / "results.csv")
    assert sorted(results["model"]) == ["tiny-a", "tiny-a", "tiny-b", "tiny-b"]
    summary = pd.read_csv(run.out_dir / "summary.csv")
    assert set(summary["model"]) == {"tiny-a", "tiny-b"} and len(summary) == 4
    page = build_report(run.out_dir).read_text()
    assert "w/o | tiny-a" in page and "1 Para | tiny-b" in page and "tiny-a vs tiny-b" in page
    shifts = pd.read_csv(run.out_dir / "tables" / "shifts.csv")
    assert set(shifts["model"]) == {"tiny-a", "tiny-b"}
    # Each model's mixtures are compared with that model's own baseline, never across models.
    paired = pd.read_csv(run.out_dir / "tables" / "paired_tests.csv")
    assert set(zip(paired["mixture"], paired["baseline"])) == {("1 Para | tiny-a", "w/o | tiny-a"),
                                                               ("1 Para | tiny-b", "w/o | tiny-b")}


def test_model_given_twice_is_refused(tmp_path):
    from knowpack.study.plan import load_study

    path = write_spec(tmp_path, grid=_grid(model=["tiny-a", "tiny-b"]))  # write_spec sets `model: tiny`
    with pytest.raises(KnowpackError, match="either as `model` or as the grid axis `grid.model`"):
        load_study(path)
    dup = write_spec(tmp_path, out="dup", grid=_grid(model=["a", "a"]))
    with pytest.raises(KnowpackError, match="repeated values"):
        load_study(dup)


def test_early_stop_axis_runs_both_ways_with_distinct_cells(tmp_path):
    import json

    import pandas as pd

    from knowpack.report.html import build_report

    path = write_spec(tmp_path, grid=_grid(early_stop=[False, True]))
    run = _run(path, FakeStages())
    assert not run.failed and len(run.cells) == 4 and len({c.key for c in run.cells}) == 4
    trained = {c.key: json.loads((run.out_dir / "cells" / c.key / "cell.json").read_text())["train"]["early_stop"]
               for c in run.cells}
    assert sorted(trained.values()) == [False, False, True, True]
    results = pd.read_csv(run.out_dir / "results.csv")
    assert results.set_index("key")["early_stop"].to_dict() == trained
    summary = pd.read_csv(run.out_dir / "summary.csv")
    assert sorted(summary["early_stop"]) == [False, False, True, True]
    page = build_report(run.out_dir).read_text()
    assert "w/o | early stop" in page and "w/o | fixed epochs" in page
    reliability = pd.read_csv(run.out_dir / "tables" / "reliability.csv")
    assert sorted(reliability["early_stop"]) == [False, False, True, True]


def test_early_stop_column_without_the_axis(tmp_path):
    import pandas as pd

    run = _run(write_spec(tmp_path, grid=_grid()), FakeStages())
    results = pd.read_csv(run.out_dir / "results.csv")
    assert set(results["early_stop"]) == {False} and set(results["model"]) == {"tiny"}


def test_the_shipped_futurework_study_parses_into_both_early_stop_settings():
    from pathlib import Path

    from knowpack.study.grid import expand_grid
    from knowpack.study.plan import load_study

    study = load_study(Path(__file__).parents[1] / "configs" / "futurework.yaml")
    cells = expand_grid(study)
    # k = 0 is one cell per early-stop setting; k = 1 one per kind and setting.
    assert len(cells) == 2 * (1 + 3) and {c.axes["early_stop"] for c in cells} == {False, True}
    assert {c.mixture for c in cells} == {"w/o", "1 SameRel", "1 HK", "1 Para"}
    assert study.eval.benchmark_shot_category == "HighlyKnown" and study.models == ["default"]
