"""Full fine-tuning (method ``full``) on the tiny model: a whole model folder instead of an adapter.

What must hold: every weight trains on a copy (the caller's model stays the base), the result is
a standard transformers folder (config, safetensors, tokenizer) that loads beside the base model,
a killed run resumes to the same bytes, only the newest full checkpoint is kept, and a LoRA
learning rate is refused before anything trains.
"""

from __future__ import annotations

import pytest
import torch
from test_train_hardening import Killed, _kill_after
from test_train_methods import train_file  # noqa: F401  (fixture)

from knowpack.errors import KnowpackError
from knowpack.evaluate.metrics.bits import trainable_parameters
from knowpack.models import load_model
from knowpack.models.adapters import adapter_hash, attach_adapter, check_adapter_folder, is_model_folder
from knowpack.train import load_preset, train_adapter
from knowpack.train.config import TrainConfig


def _config(**overrides) -> TrainConfig:
    return load_preset("smollm2", **{"method": "full", "lr": 1e-4, "epochs": 2, "batch_size": 2, **overrides})


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("Question: What is the capital of France? Answer:", return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits.float()


def _unique_parameters(model) -> int:
    return sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())


def test_full_fine_tuning_writes_a_model_folder_and_leaves_the_base_alone(tmp_path, tiny_model_dir, train_file):
    loaded = load_model(str(tiny_model_dir))
    before = _logits(loaded.model, loaded.tokenizer)
    weights = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    listings = []  # after each epoch's checkpoint: only the newest whole-model checkpoint is kept
    summary = train_adapter(_config(), loaded, train_file, tmp_path / "run", progress=False,
                            on_epoch_end=lambda row: listings.append(
                                sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())))
    for name, param in loaded.model.named_parameters():
        assert torch.equal(param, weights[name]), name
    assert summary["trainable_parameters"] == _unique_parameters(loaded.model)  # tied embeddings count once
    folder = tmp_path / "run" / "adapter"
    assert is_model_folder(folder) and not (folder / "adapter_config.json").exists()
    assert (folder / "tokenizer.json").is_file() and (folder / "manifest.json").is_file()
    assert check_adapter_folder(folder) == folder and len(adapter_hash(folder)) == 16
    assert trainable_parameters(folder) == summary["trainable_parameters"]
    tuned = attach_adapter(loaded.model, folder, model_hash=loaded.model_hash)
    assert tuned is not loaded.model and not hasattr(tuned, "peft_config")
    assert (_logits(tuned, loaded.tokenizer) - before).abs().max() > 1e-4
    assert torch.equal(_logits(loaded.model, loaded.tokenizer), before)
    # Only the newest whole-model checkpoint is kept while training (each is the model plus its AdamW
    # state), and none once the run is finished; a rerun returns the finished run as it is.
    assert listings == [["epoch-1"], ["epoch-2"]]
    assert not (tmp_path / "run" / "checkpoints").exists()
    again = train_adapter(_config(), loaded, train_file, tmp_path / "run", progress=False)
    assert again == summary
    # A standard folder: transformers loads it with no knowpack code.
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True)
    assert torch.allclose(_logits(plain, loaded.tokenizer), _logits(tuned, loaded.tokenizer))


def test_killed_full_run_resumes_to_the_same_weights(tmp_path, tiny_model_dir, train_file):
    from safetensors.torch import load_file

    config = _config(epochs=3, warmup_ratio=0.2)
    train_adapter(config, str(tiny_model_dir), train_file, tmp_path / "straight", progress=False)
    with pytest.raises(Killed):
        train_adapter(config, str(tiny_model_dir), train_file, tmp_path / "resumed", progress=False,
                      on_epoch_end=_kill_after(1))
    summary = train_adapter(config, str(tiny_model_dir), train_file, tmp_path / "resumed", progress=False)
    assert summary["resumed_from"].endswith("epoch-1")
    straight = load_file(str(tmp_path / "straight" / "adapter" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "adapter" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name  # bit for bit


def test_a_damaged_full_checkpoint_is_refused_on_resume(tmp_path, tiny_model_dir, train_file):
    from knowpack.train.resume import last_intact_checkpoint

    out = tmp_path / "run"
    with pytest.raises(Killed):  # killed after epoch 1 of 2: its checkpoint is what a rerun resumes from
        train_adapter(_config(epochs=2), str(tiny_model_dir), train_file, out, progress=False,
                      on_epoch_end=_kill_after(1))
    weights = out / "checkpoints" / "epoch-1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert last_intact_checkpoint(out) is None  # skipped with a warning: the run starts over


def test_a_lora_learning_rate_is_refused_for_full_fine_tuning():
    with pytest.raises(KnowpackError) as err:
        load_preset("smollm2", method="full")  # the preset's lr 2e-3
    assert "full fine-tuning" in err.value.message and "lr <= 0.0001" in err.value.message
    assert TrainConfig(method="full", lr=5e-5).model_dump()["method"] == "full"


def test_a_fine_tuned_folder_of_another_shape_is_refused(tmp_path, tiny_model_dir):
    from transformers import AutoConfig

    loaded = load_model(str(tiny_model_dir))
    other = tmp_path / "other"
    config = AutoConfig.from_pretrained(str(tiny_model_dir))
    config.num_hidden_layers += 1
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_config(config).save_pretrained(other, safe_serialization=True)
    with pytest.raises(KnowpackError) as err:
        attach_adapter(loaded.model, other)
    assert "num_hidden_layers" in err.value.message


def test_pickled_model_weights_are_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(KnowpackError) as err:
        check_adapter_folder(folder)
    assert "safetensors only" in err.value.message


def test_cli_trains_the_whole_model_and_refuses_a_lora_rate(tmp_path, tiny_model_dir, train_file):
    from typer.testing import CliRunner

    from knowpack.cli.app import app

    base = ["train", "--model", str(tiny_model_dir), "--train", str(train_file), "--method", "full", "--quiet"]
    refused = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bad")])
    assert refused.exit_code != 0 and isinstance(refused.exception, KnowpackError)
    assert "full fine-tuning" in refused.exception.message and not (tmp_path / "bad").exists()
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "out"), "--lr", "1e-4", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert is_model_folder(tmp_path / "out" / "adapter")
