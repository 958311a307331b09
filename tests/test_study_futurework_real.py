"""The future-work axes with the real stages on two tiny random models (different seeds and sizes)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from conftest import build_tiny_llama
from test_study_integration import _facts

from knowpack.errors import KnowpackError
from knowpack.report.html import build_report
from knowpack.study.plan import load_study
from knowpack.study.runner import run_study


def _spec(tmp_path, models, **changes) -> dict:
    spec = {
        "name": "tiny-future", "facts": str(_facts(tmp_path / "facts.jsonl")),
        "probe": {"prompts": 2, "shots": 1, "samples": 0, "max_new_tokens": 4, "batch_size": 16},
        "mix": {"heldout_per_category": 2, "retention_sample": 1},
        "grid": {"unknown": [2], "extra": [1], "kind": ["paraphrase"], "seed": [1], "model": models,
                 "early_stop": [False, True]},
        "train": {"preset": "smollm2", "epochs": 2, "batch_size": 4, "plateau_patience": 1},
        # A random model knows nothing: every probed fact is Unknown, so Unknown shots are the ones at hand.
        "eval": {"benchmarks": [], "max_untrained": 4, "benchmark_shot_category": "Unknown", "noise_floor": False},
        "out": str(tmp_path / "out"),
    }
    spec.update(changes)
    return spec


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-models")
    return [str(build_tiny_llama(root / "tiny-a", seed=0, hidden=64)),
            str(build_tiny_llama(root / "tiny-b", seed=1, hidden=32))]


def _write(tmp_path, spec):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.integration
def test_two_models_both_early_stop_settings_and_unknown_shots(tmp_path, two_models):
    run = run_study(load_study(_write(tmp_path, _spec(tmp_path, two_models))), progress=False)
    assert not run.failed, run.failed
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(results) == 4 and set(results["state"]) == {"done"}
    assert sorted(results["model"]) == sorted(two_models * 2)
    assert sorted(results["early_stop"]) == [False, False, True, True]
    assert results["reliability"].between(0, 1).all() and results["positive_shift"].notna().all()
    bases = sorted((tmp_path / "out" / "base").glob("*/categories.jsonl"))
    assert len(bases) == 2  # one base probe per model
    for key in results["key"]:
        cell = tmp_path / "out" / "cells" / key
        record = json.loads((cell / "cell.json").read_text())
        metrics = json.loads(next((cell / "eval").glob("*/metrics.json")).read_text())
        base = json.loads((tmp_path / "out" / "base" / bases[0].parent.name / "summary.json").read_text())
        assert metrics["meta"]["shots"]["category"] == "Unknown" and metrics["meta"]["shots"]["ids"]
        # The shots are Unknown facts of this model's own base probe, outside the mixture.
        probe_dir = metrics["meta"]["probe_dir"]
        categories = {json.loads(line)["id"]: json.loads(line)["category"]
                      for line in open(f"{probe_dir}/categories.jsonl")}
        assert {categories[f] for f in metrics["meta"]["shots"]["ids"]} == {"Unknown"}
        assert json.loads(open(f"{probe_dir}/manifest.json").read())["inputs"]["model"] == metrics["meta"]["model_hash"]
        assert record["train"]["early_stop"] == bool(results.set_index("key").loc[key, "early_stop"])
        assert base["n"] > 0
    page = build_report(tmp_path / "out").read_text()
    assert "tiny-a vs tiny-b" in page and "1 Para | tiny-a, early stop" in page and "1 Para | tiny-b, fixed epochs" in page


@pytest.mark.integration
def test_same_relation_mixture_on_a_model_that_knows_nothing_stops_before_training(tmp_path, two_models):
    spec = _spec(tmp_path, two_models[:1], grid={"unknown": [2], "extra": [1], "kind": ["same_relation_known"],
                                                  "seed": [1], "model": two_models[:1]})
    with pytest.raises(KnowpackError, match=r"cannot run as specified(.|\n)*relation '(capital|river)_of': "
                                            r"\d Unknown fact\(s\) × 1 need \d known facts, it has 0 HighlyKnown"):
        run_study(load_study(_write(tmp_path, spec)), progress=False)
    assert not list((tmp_path / "out" / "cells").glob("*/train/adapter"))
