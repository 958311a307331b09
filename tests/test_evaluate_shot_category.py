"""eval.benchmark_shot_category: the fact re-probes take their few-shot exemplars from one SliCK category."""

from __future__ import annotations

import pytest
from artifact_fakes import category_row, write_mix_folder, write_probe_folder
from test_evaluate import _facts
from test_evaluate_helpers import make_adapter

from knowpack.errors import KnowpackError
from knowpack.evaluate.config import EvalConfig
from knowpack.probe.artifacts import ShotSets
from knowpack.probe.config import ProbeConfig

# The base probe's categories (hand-made, so every category has members on a random tiny model).
# c7 and r7 are the base probe's own exemplars, hence not probed (as in a real probe folder).
CATEGORY = {**{f"c{i}": "HighlyKnown" for i in range(4)}, **{f"c{i}": "Unknown" for i in range(4, 7)},
            **{f"r{i}": "HighlyKnown" for i in range(4)}, **{f"r{i}": "Unknown" for i in range(4, 7)}}
TRAINED, HELDOUT = ["c4", "c5"], {"Unknown": ["c6", "r4"], "HighlyKnown": ["c0", "r0"]}


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    from knowpack.io import write_jsonl
    from knowpack.models.loading import load_model

    root = tmp_path_factory.mktemp("shot-category")
    facts = _facts()
    by_id = {f.id: f for f in facts}
    write_jsonl(root / "facts.jsonl", facts)
    loaded = load_model(str(tiny_model_dir))
    config = ProbeConfig(prompts=2, shots=1, samples=0, max_new_tokens=3)
    probe = write_probe_folder(root / "probe", [category_row(fid, cat) for fid, cat in CATEGORY.items()],
                               config=config, shot_sets=[[by_id["r7"]], [by_id["c7"]]], model_hash=loaded.model_hash)
    rows = [{"id": f"{fid}#unknown", "fact_id": fid, "question": by_id[fid].question, "answer": by_id[fid].answer,
             "role": "unknown"} for fid in TRAINED]
    used = [*TRAINED, *(fid for ids in HELDOUT.values() for fid in ids)]
    mix = write_mix_folder(root / "mix", rows, {"trained_unknown": TRAINED, "heldout": HELDOUT,
                                                 "retention": ["c0"]}, [by_id[f] for f in used], probe_dir=probe)
    return {"root": root, "loaded": loaded, "mix": mix, "facts": facts, "probe": probe,
            "adapter": make_adapter(tiny_model_dir, root / "adapter")}


def _evaluate(setup, out, **kw):
    from knowpack.evaluate.runner import evaluate

    config = EvalConfig(benchmarks=[], **kw)
    return evaluate(config, setup["loaded"], setup["adapter"], setup["mix"], out, progress=False,
                    base_cache=setup["root"] / "reprobes", shot_facts=setup["facts"])


@pytest.mark.parametrize("category", ["HighlyKnown", "Unknown"])
def test_reprobe_shots_come_from_the_category_outside_the_mixture(setup, category):
    import pandas as pd

    out = setup["root"] / f"eval-{category}"
    # Shifts and reliability are the metrics the shots feed; the yardsticks are left out for speed.
    metrics = _evaluate(setup, out, benchmark_shot_category=category, metrics=["reliability", "shifts"],
                        noise_floor=False)
    taken = set(TRAINED) | {f for ids in HELDOUT.values() for f in ids}
    recorded = metrics.meta.shots
    assert recorded["category"] == category and recorded["mode"] == "fixed" and len(recorded["ids"]) == 2
    assert {CATEGORY[f] for f in recorded["ids"]} == {category} and not taken & set(recorded["ids"])
    # The prompts the adapted model saw hold exactly those facts, one per prompt (N=2 × S=1).
    sets = ShotSets.read(out / "probes" / "adapter").sets
    assert sorted(f.id for s in sets for f in s) == sorted(recorded["ids"])
    # The base model is re-probed with the same shots, so shifts compare like with like.
    base = [p for p in (setup["root"] / "reprobes").glob(f"shots-{category}-*")]
    assert len(base) == 1
    assert [[f.id for f in s] for s in ShotSets.read(base[0]).sets] == [[f.id for f in s] for s in sets]
    # A shot is never evaluated; the trained and held-out facts always are.
    per_fact = set(pd.read_parquet(out / "per_fact.parquet")["id"])
    assert not per_fact & set(recorded["ids"]) and taken <= per_fact
    assert ShotSets.read(setup["probe"]).sets != sets  # not the base probe's own exemplars
    manifest_config = __import__("json").loads((out / "manifest.json").read_text())["config"]
    assert manifest_config["benchmark_shot_category"] == category


def test_default_keeps_the_base_probe_shots_and_records_none(setup):
    out = setup["root"] / "eval-default"
    metrics = _evaluate(setup, out, metrics=["reliability"])
    assert metrics.meta.shots is None
    sets = ShotSets.read(out / "probes" / "adapter").sets
    assert [[f.id for f in s] for s in sets] == [["r7"], ["c7"]]


def test_a_category_without_enough_facts_is_an_error_with_counts(setup):
    with pytest.raises(KnowpackError, match=r"need 2 MaybeKnown facts outside the mixture, but only 0 .*"
                                            r"\(0 MaybeKnown facts in the base probe"):
        _evaluate(setup, setup["root"] / "eval-mk", benchmark_shot_category="MaybeKnown")
    assert not (setup["root"] / "eval-mk" / "metrics.json").exists()


def test_same_relation_shots_come_from_the_category_of_each_relation(setup):
    # A mixture that leaves Unknown facts of both relations free: c4-c6 (capital), r5-r6 (river).
    by_id = {f.id: f for f in setup["facts"]}
    rows = [{"id": "r4#unknown", "fact_id": "r4", "question": by_id["r4"].question, "answer": by_id["r4"].answer,
             "role": "unknown"}]
    mix = write_mix_folder(setup["root"] / "mix-relation", rows, {"trained_unknown": ["r4"], "heldout": {}},
                           [by_id["r4"]], probe_dir=setup["probe"])
    out = setup["root"] / "eval-relation"
    metrics = _evaluate({**setup, "mix": mix}, out, benchmark_shot_category="Unknown",
                        metrics=["reliability", "shifts"], noise_floor=False, probe={"shot_pool": "relation"})
    recorded = metrics.meta.shots
    assert recorded["mode"] == "relation" and {CATEGORY[f] for f in recorded["ids"]} == {"Unknown"}
    assert "r4" not in recorded["ids"]
    per_fact = ShotSets.read(out / "probes" / "adapter").per_fact
    assert per_fact and "r4" in per_fact
    for fid, prompts in per_fact.items():
        for shots in prompts:
            # Same relation, the category's facts only, never the fact itself.
            assert shots and all(s in recorded["ids"] and s != fid and by_id[s].relation == by_id[fid].relation
                                 for s in shots)


def test_same_relation_category_shots_short_in_a_relation_name_it(setup):
    # The module's mixture trains or holds out every Unknown capital fact (c4, c5, c6).
    with pytest.raises(KnowpackError, match=r"needs 1 Unknown facts outside the mixture in every evaluated "
                                            r"relation: 'capital' has 0"):
        _evaluate(setup, setup["root"] / "eval-relation-short", benchmark_shot_category="Unknown",
                  probe={"shot_pool": "relation"})
