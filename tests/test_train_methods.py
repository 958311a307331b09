"""PEFT-method arms on the tiny model: each method trains, saves, reloads, changes the model, counts.

The count of trainable parameters must be PEFT's (DoRA's magnitude vectors train, VeRA's shared
projections do not), and the bits metric must read the same number back from the saved adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from knowpack.errors import KnowpackError
from knowpack.evaluate.metrics.bits import trainable_parameters
from knowpack.models import load_model
from knowpack.models.adapters import attach_adapter
from knowpack.train import load_preset, train_adapter
from knowpack.train.config import METHODS, TrainConfig
from knowpack.train.trainer import peft_config

PEFT_METHODS = [m for m in METHODS if m != "full"]  # full: tests/test_train_full.py
QUESTIONS = [("What is the capital of France?", "Paris"), ("What is the capital of Peru?", "Lima"),
             ("What is the capital of Chad?", "Ndjamena"), ("What is the capital of Fiji?", "Suva")]


@pytest.fixture
def train_file(tmp_path) -> Path:
    path = tmp_path / "mix" / "train.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"id": f"f{i}#unknown", "fact_id": f"f{i}", "question": q, "answer": a,
                                        "role": "unknown"}) + "\n" for i, (q, a) in enumerate(QUESTIONS)))
    return path


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("Question: What is the capital of France? Answer:", return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits.float()


def _expected_count(method: str, base, rank: int) -> int:
    """Trainable parameters by the method's definition, from the target layers' shapes."""
    layers = [m for n, m in base.named_modules() if n.rsplit(".", 1)[-1] in ("gate_proj", "up_proj", "down_proj")
              and isinstance(m, torch.nn.Linear)]
    lora = sum(rank * (m.in_features + m.out_features) for m in layers)
    if method == "dora":
        return lora + sum(m.out_features for m in layers)  # one trained magnitude per output row
    if method == "vera":
        return sum(rank + m.out_features for m in layers)  # lambda_d (r) and lambda_b (out) per layer
    return lora


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_method_trains_saves_reloads_and_counts(method, tmp_path, tiny_model_dir, train_file):
    loaded = load_model(str(tiny_model_dir))
    before = _logits(loaded.model, loaded.tokenizer)
    weights = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    config = load_preset("smollm2", method=method, rank=4, epochs=1, batch_size=2, lr=5e-2)
    summary = train_adapter(config, loaded, train_file, tmp_path / "run", progress=False)
    # The shared base model is given back untouched (PiSSA rewrites the target weights in place).
    assert not hasattr(loaded.model, "peft_config")
    for name, param in loaded.model.named_parameters():
        assert torch.equal(param, weights[name]), name
    expected = _expected_count(method, loaded.model, 4)
    assert summary["trainable_parameters"] == expected
    adapter = tmp_path / "run" / "adapter"
    assert trainable_parameters(adapter) == expected
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["peft_type"] == ("VERA" if method == "vera" else "LORA")
    assert saved.get("use_dora", False) == (method == "dora")
    wrapped = attach_adapter(loaded.model, adapter)
    after = _logits(wrapped, loaded.tokenizer)
    assert (after - before).abs().max() > 1e-4  # the adapter changes the model
    with wrapped.disable_adapter():
        # Disabled, the reloaded adapter gives the base model back exactly (PiSSA: converted to LoRA).
        assert torch.allclose(_logits(wrapped, loaded.tokenizer), before, atol=1e-5)


def test_pissa_is_saved_as_a_plain_lora_on_the_original_weights(tmp_path, tiny_model_dir, train_file):
    loaded = load_model(str(tiny_model_dir))
    config = load_preset("smollm2", method="pissa", rank=2, epochs=1, batch_size=2)
    train_adapter(config, loaded, train_file, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 4 and saved["init_lora_weights"] is True


def test_peft_configs_per_method():
    def built(method):
        return peft_config(TrainConfig(method=method, rank=8, use_rslora=False))

    assert built("lora").use_rslora is False and built("rslora").use_rslora is True
    assert built("dora").use_dora is True and built("pissa").init_lora_weights == "pissa"
    vera = built("vera")
    assert type(vera).__name__ == "VeraConfig" and vera.r == 8


def test_default_method_keeps_old_content_hashes():
    # Runs written before the method field existed must keep their folders (no retraining).
    assert "method" not in TrainConfig().model_dump() and TrainConfig(method="dora").model_dump()["method"] == "dora"


@pytest.mark.parametrize("method", ["dora", "vera", "full"])
def test_auto_backend_probes_what_vllm_cannot_serve_with_transformers(method, tmp_path, tiny_model_dir, monkeypatch,
                                                                      caplog):
    from peft import get_peft_model

    from knowpack.probe.backends import vllm

    loaded = load_model(str(tiny_model_dir))
    adapter = tmp_path / "adapter"
    if method == "full":  # a whole fine-tuned model folder: vLLM serves it only as a model of its own
        load_model(str(tiny_model_dir)).model.save_pretrained(adapter, safe_serialization=True)
    else:
        get_peft_model(load_model(str(tiny_model_dir)).model, peft_config(TrainConfig(method=method, rank=2))
                       ).save_pretrained(adapter)
    monkeypatch.setattr(vllm, "vllm_importable", lambda: True)
    monkeypatch.setattr(vllm, "gpu_present", lambda: True)
    monkeypatch.setattr(vllm, "VLLMBackend", lambda *a, **k: pytest.fail("vLLM must not serve this adapter"))
    with caplog.at_level("WARNING", logger="knowpack.probe.backends.vllm"):
        backend = vllm.auto_backend(loaded, adapter=str(adapter), batch_size=4)
    assert type(backend).__module__ == "knowpack.probe.backends.hf"
    assert "transformers engine instead" in caplog.text
    assert {"dora": "DoRA", "vera": "VERA", "full": "fully fine-tuned model"}[method] in caplog.text


def test_method_is_a_grid_axis_and_lora_cells_keep_their_keys(tmp_path):
    from test_study_runner import write_spec

    from knowpack.study.grid import expand_grid
    from knowpack.study.plan import load_study

    plain = write_spec(tmp_path, out="plain", grid={"unknown": [2], "seed": [1]})
    arms = write_spec(tmp_path, out="arms", grid={"unknown": [2], "seed": [1], "method": ["lora", "dora"]})
    (before,) = expand_grid(load_study(plain))
    lora, dora = expand_grid(load_study(arms))
    assert (lora.train.method, dora.train.method) == ("lora", "dora")
    assert lora.key == before.key and dora.key != lora.key
    assert "method=dora" in dora.title()
    with pytest.raises(KnowpackError) as err:
        load_study(write_spec(tmp_path, out="bad", grid={"unknown": [2], "method": ["qlora"]}))
    assert "unknown method(s) ['qlora']" in err.value.message
