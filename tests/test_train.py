"""LoRA training on the tiny model: label masks, presets, targets, curves, checkpoints, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.train import TrainConfig, load_preset, train_adapter
from knowpack.train.data import IGNORE_INDEX, Collator, encode_example

QUESTIONS = [("What is the capital of France?", "Paris"), ("What is the capital of Peru?", "Lima"),
             ("What is the capital of Chad?", "Ndjamena"), ("What is the capital of Fiji?", "Suva"),
             ("What is the capital of Iran?", "Tehran"), ("What is the capital of Mali?", "Bamako")]


def _facts() -> list[Fact]:
    return [Fact(id=f"f{i}", subject=q.split()[-1][:-1], relation="capital", question=q, answer=a)
            for i, (q, a) in enumerate(QUESTIONS)]


@pytest.fixture
def train_file(tmp_path) -> Path:
    path = tmp_path / "mix" / "train.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"id": f"{f.id}#unknown", "fact_id": f.id, "question": f.question,
                                        "answer": f.answer, "role": "unknown"}) + "\n" for f in _facts()))
    return path


@pytest.fixture
def tokenizer(tiny_model_dir):
    from knowpack.models.loading import load_tokenizer, resolve_model_source

    return load_tokenizer(resolve_model_source(str(tiny_model_dir)))


@pytest.fixture
def fake_greedy(monkeypatch):
    """Greedy answers without generation: facts listed in ``known`` are answered correctly."""
    state = {"known": set(), "calls": 0}

    def answers(facts, model, config, shot_sets):
        state["calls"] += 1
        assert shot_sets is not None and len(shot_sets) == config.prompts
        return {f.id: [f"Answer: {f.answer if f.id in state['known'] else 'nothing'}"] * config.prompts
                for f in facts}

    monkeypatch.setattr("knowpack.train.curves.greedy_answers", answers)
    return state


def _probe():
    from knowpack.probe.config import ProbeConfig

    return ProbeConfig(prompts=2, shots=1, samples=0)


def _config(**overrides) -> TrainConfig:
    base = dict(rank=2, alpha=4, dropout=0.1, targets=["q_proj", "gate_proj"], lr=1e-2, epochs=2,
                batch_size=2, seed=3)
    return TrainConfig(**(base | overrides))


def _labelled_text(tokenizer, encoded) -> str:
    return tokenizer.decode([t for t, l in zip(encoded["input_ids"], encoded["labels"]) if l != IGNORE_INDEX])


def test_answer_loss_masks_everything_but_answer_and_end_of_turn(tokenizer):
    enc = encode_example(tokenizer, "What is the capital of France?", "Paris", loss="answer", max_length=256)
    assert _labelled_text(tokenizer, enc) == "Answer: Paris<|im_end|>"
    # The labelled tokens are one contiguous run at the end (only the trailing newline after it).
    labelled = [i for i, l in enumerate(enc["labels"]) if l != IGNORE_INDEX]
    assert labelled == list(range(labelled[0], labelled[-1] + 1))
    assert tokenizer.decode(enc["input_ids"][labelled[-1] + 1:]) == "\n"


def test_all_loss_covers_every_real_token_but_not_padding(tokenizer):
    enc = encode_example(tokenizer, "What is the capital of France?", "Paris", loss="all", max_length=256)
    assert _labelled_text(tokenizer, enc) == (
        "<|im_start|>system\nAnswer the following question.<|im_end|>\n"
        "<|im_start|>user\nQuestion: What is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nAnswer: Paris<|im_end|>\n")
    short = encode_example(tokenizer, "Q?", "A", loss="all", max_length=256)
    batch = Collator(tokenizer.pad_token_id)([enc, short])
    # Padding reuses <|im_end|>: only the attention mask tells it apart, and it carries no loss.
    pad = batch["attention_mask"][1] == 0
    assert pad.any() and (batch["labels"][1][pad] == IGNORE_INDEX).all()
    assert (batch["labels"][1][~pad] == batch["input_ids"][1][~pad]).all()


def test_too_long_example_is_an_error_not_a_truncation(tokenizer):
    with pytest.raises(KnowpackError, match="max_length"):
        encode_example(tokenizer, "What is the capital of France? " * 10, "Paris", loss="answer", max_length=16)


def test_presets_load_and_override():
    paper = load_preset("paper")
    assert (paper.rank, paper.alpha, paper.dropout, paper.lr, paper.epochs, paper.batch_size) == (1, 2, 0.1, 1e-3, 10, 16)
    assert paper.targets == ["gate_proj", "up_proj", "down_proj"] and paper.use_rslora and paper.loss == "answer"
    smol = load_preset("smollm2", epochs=3, lr=None)
    assert smol.epochs == 3 and smol.rank >= 8 and smol.lr == load_preset("smollm2").lr
    with pytest.raises(KnowpackError, match="unknown training preset"):
        load_preset("nope")
    with pytest.raises(KnowpackError, match="rank"):
        load_preset("paper", rank=0)


def test_unknown_target_lists_available_modules(tiny_model_dir, train_file, tmp_path):
    with pytest.raises(KnowpackError) as err:
        train_adapter(_config(targets=["c_attn"]), str(tiny_model_dir), train_file, tmp_path / "out")
    assert "c_attn" in str(err.value) and "gate_proj" in err.value.hint and "q_proj" in err.value.hint


def test_curves_checkpoints_and_adapter(tiny_model_dir, train_file, tmp_path, fake_greedy):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    facts = _facts()
    fake_greedy["known"] = {"f0", "f4", "f5"}
    out = tmp_path / "out"
    summary = train_adapter(_config(), str(tiny_model_dir), train_file, out, curve_facts=facts[:4],
                            retention_facts=facts[4:], probe_config=_probe(), progress=False)
    rows = list(csv.DictReader((out / "curve.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "loss", "reliability", "retention", "seconds"]
    assert float(rows[-1]["reliability"]) == pytest.approx(0.25) and float(rows[-1]["retention"]) == 1.0
    assert summary["epochs_run"] == 2 and not summary["stopped_early"]
    for epoch in (1, 2):
        ckpt = out / "checkpoints" / f"epoch-{epoch}"
        assert {"adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "optimizer.safetensors"} <= {
            p.name for p in ckpt.iterdir()}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, out / "adapter")
    assert any("lora_A" in n for n, _ in model.named_parameters())
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 2
    # A finished run is found and returned, not redone.
    fake_greedy["calls"] = 0
    again = train_adapter(_config(), str(tiny_model_dir), train_file, out, curve_facts=facts[:4],
                          retention_facts=facts[4:], probe_config=_probe(), progress=False)
    assert again["final"] == summary["final"] and fake_greedy["calls"] == 0


def test_other_config_in_same_folder_is_refused(tiny_model_dir, train_file, tmp_path):
    out = tmp_path / "out"
    train_adapter(_config(epochs=1), str(tiny_model_dir), train_file, out, progress=False)
    with pytest.raises(KnowpackError, match="different settings"):
        train_adapter(_config(epochs=1, lr=5e-3), str(tiny_model_dir), train_file, out, progress=False)


def test_early_stop_records_reason(tiny_model_dir, train_file, tmp_path, fake_greedy):
    facts = _facts()
    fake_greedy["known"] = set()  # reliability stays at 0 and retention at 0 → retention rule fires
    summary = train_adapter(_config(epochs=3, early_stop=True, retention_threshold=0.5),
                            str(tiny_model_dir), train_file, tmp_path / "out", curve_facts=facts[:3],
                            retention_facts=facts[3:], probe_config=_probe(), progress=False)
    assert summary["stopped_early"] and summary["epochs_run"] == 1
    saved = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert "retention" in saved["stop_reason"]
    fake_greedy["known"] = {f.id for f in facts[3:]}
    plateau = train_adapter(_config(epochs=3, early_stop=True, plateau_patience=1),
                            str(tiny_model_dir), train_file, tmp_path / "out2", curve_facts=facts[:3],
                            retention_facts=facts[3:], probe_config=_probe(), progress=False)
    assert plateau["epochs_run"] == 2 and "plateau" in plateau["stop_reason"]


def _adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_killed_run_resumes_to_the_same_adapter(tiny_model_dir, train_file, tmp_path):
    # 6 examples, batch 2 and grad_accum 2: the scheduler and optimizer state both matter.
    config = _config(epochs=3, grad_accum=2, warmup_ratio=0.2)
    train_adapter(config, str(tiny_model_dir), train_file, tmp_path / "straight", progress=False)

    class Killed(RuntimeError):
        pass

    def kill_after_first(row):
        if row["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        train_adapter(config, str(tiny_model_dir), train_file, tmp_path / "resumed", progress=False,
                      on_epoch_end=kill_after_first)
    assert not (tmp_path / "resumed" / "adapter").exists()
    summary = train_adapter(config, str(tiny_model_dir), train_file, tmp_path / "resumed", progress=False)
    assert summary["resumed_from"].endswith("epoch-1")
    straight = _adapter_weights(tmp_path / "straight" / "adapter")
    resumed = _adapter_weights(tmp_path / "resumed" / "adapter")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name  # bit for bit
    first = _adapter_weights(tmp_path / "straight" / "checkpoints" / "epoch-1")
    assert any(not torch.allclose(first[n], straight[n]) for n in first)


def test_loaded_model_is_given_back_without_lora(tiny_model_dir, train_file, tmp_path):
    from knowpack.models import load_model

    loaded = load_model(str(tiny_model_dir))
    before = {n: p.clone() for n, p in loaded.model.named_parameters()}
    train_adapter(_config(epochs=1), loaded, train_file, tmp_path / "out", progress=False)
    after = dict(loaded.model.named_parameters())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_cli_reads_eval_sets_and_probe_shots(tiny_model_dir, tmp_path, fake_greedy):
    from typer.testing import CliRunner

    from knowpack.cli.app import app
    from artifact_fakes import category_row, write_probe_folder
    from knowpack.mix import MixConfig, build_mixture

    facts = [Fact(id=f"f{i}", subject=f"Land{i}", relation="capital", question=f"What is the capital of Land{i}?",
                  answer=f"City{i}") for i in range(12)]
    cats = [{"id": f.id, "category": "Unknown" if i < 6 else "HighlyKnown"} for i, f in enumerate(facts)]
    probe = write_probe_folder(tmp_path / "probe", [category_row(c["id"], c["category"]) for c in cats],
                               config=_probe(), shot_sets=[[facts[11]]] * 2)
    build_mixture(MixConfig(unknown=4, heldout_per_category=2, retention_sample=2), facts, cats,
                  tmp_path / "mix", probe_dir=probe)
    fake_greedy["known"] = {f.id for f in facts[6:]}
    result = CliRunner().invoke(app, ["train", "--model", str(tiny_model_dir), "--train",
                                      str(tmp_path / "mix" / "train.jsonl"), "--out", str(tmp_path / "out"),
                                      "--preset", "paper", "--epochs", "1", "--rank", "2", "--targets",
                                      "q_proj,v_proj", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "reliability 0.000" in result.output and "retention 1.000" in result.output
    config = json.loads((tmp_path / "out" / "run.json").read_text())
    assert config["config"]["targets"] == ["q_proj", "v_proj"] and config["config"]["rank"] == 2
    assert len(config["curve_ids"]) == 4 and len(config["retention_ids"]) == 2
    assert config["probe_config"]["prompts"] == 2
