"""Adapter canary: an adapter that changes nothing (fresh LoRA, B = 0) is refused before any number."""

from __future__ import annotations

import pytest
from test_evaluate_helpers import make_adapter

from knowpack.errors import KnowpackError
from knowpack.evaluate.metrics.canary import adapter_canary, lora_b_all_zero

EXAMPLES = [{"fact_id": "f1", "question": "What is the capital of France?", "answer": "Paris"},
            {"fact_id": "f2", "question": "What is the capital of Peru?", "answer": "Lima"}]


def _adapter(tiny_model_dir, folder, *, trained: bool):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from knowpack.models.loading import load_tokenizer, resolve_model_source

    make_adapter(tiny_model_dir, folder, trained=trained)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), folder)
    return model, load_tokenizer(resolve_model_source(str(tiny_model_dir)))


def test_fresh_lora_is_refused(tiny_model_dir, tmp_path):
    model, tok = _adapter(tiny_model_dir, tmp_path / "fresh", trained=False)
    assert lora_b_all_zero(tmp_path / "fresh") is True
    with pytest.raises(KnowpackError, match="does not change the model"):
        adapter_canary(model, tok, tmp_path / "fresh", EXAMPLES, tolerance=1e-5, max_new_tokens=4)


def test_changed_adapter_passes_and_reports_changes(tiny_model_dir, tmp_path):
    model, tok = _adapter(tiny_model_dir, tmp_path / "trained", trained=True)
    out = adapter_canary(model, tok, tmp_path / "trained", EXAMPLES, tolerance=1e-5, max_new_tokens=4)
    assert out["lora_b_all_zero"] is False
    assert out["max_abs_logit_diff"] > 1e-3
    assert out["n_examples"] == 2
    assert out["mean_answer_logprob_base"] != out["mean_answer_logprob_adapted"]
