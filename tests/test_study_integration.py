"""The real stages end to end on the tiny random model: study run → results.csv → report.html."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from knowpack.report.html import build_report
from knowpack.study.runner import run_study
from knowpack.study.plan import load_study


def _facts(path, n=24):
    rows = [{"id": f"f{i:02d}", "subject": f"Place{i}", "relation": "capital_of" if i % 2 else "river_of",
             "question": f"What is the capital of Place{i}?", "answer": f"Town{i}", "aliases": [f"Town{i}"],
             "paraphrases": [f"Which city is the capital of Place{i}?", f"Name the capital of Place{i}."]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.integration
def test_study_with_real_stages(tmp_path, tiny_model_dir):
    spec = {
        "name": "tiny", "model": str(tiny_model_dir), "facts": str(_facts(tmp_path / "facts.jsonl")),
        "probe": {"prompts": 2, "shots": 1, "samples": 0, "max_new_tokens": 4, "batch_size": 16},
        "mix": {"heldout_per_category": 2, "retention_sample": 1},
        "grid": {"unknown": [2], "extra": [1], "kind": ["paraphrase"], "seed": [1]},
        "train": {"preset": "smollm2", "epochs": 2, "batch_size": 4},
        "eval": {"benchmarks": [], "max_untrained": 4},
        "out": str(tmp_path / "out"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = run_study(load_study(path), progress=False)
    assert not run.failed, run.failed
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(results["state"]) == ["done"]
    assert results["epochs"].eq(2).all() and results["reliability"].between(0, 1).all()
    assert results["positive_shift"].notna().all() and results["prompt_sensitivity_negative"].notna().all()
    again = run_study(load_study(path), progress=False)
    assert len(again.skipped) == 1
    page = build_report(tmp_path / "out").read_text()
    assert "Reliability vs epoch" in page and "data:image/png;base64," in page
