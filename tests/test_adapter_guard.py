"""An adapter trained on model A is refused on a different model B of the very same shapes.

PEFT only checks shapes, so two random models of one config (different seeds) accept each
other's adapters; knowpack's trainer records the base model's content hash and every stage that
applies an adapter (probe, evaluate, a study's evaluation) compares it with the loaded model.
"""

from __future__ import annotations

import pytest
from artifact_fakes import write_mix_folder
from conftest import build_tiny_llama

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.io import write_jsonl
from knowpack.models.adapters import adapter_base_model
from knowpack.models.loading import load_model


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Two same-shaped tiny models and an adapter trained on the first one."""
    from knowpack.train.config import TrainConfig
    from knowpack.train.trainer import train_adapter

    root = tmp_path_factory.mktemp("twins")
    model_a = build_tiny_llama(root / "a", seed=0)
    model_b = build_tiny_llama(root / "b", seed=1)
    facts = [Fact(id=f"f{i}", subject=f"Land{i}", relation="capital", question=f"What is the capital of Land{i}?",
                  answer=f"City{i}") for i in range(8)]
    rows = [{"id": f"{f.id}#unknown", "fact_id": f.id, "question": f.question, "answer": f.answer, "role": "unknown"}
            for f in facts[:4]]
    mix = write_mix_folder(root / "mix", rows, {"trained_unknown": [f.id for f in facts[:4]]}, facts)
    write_jsonl(root / "facts.jsonl", facts)
    config = TrainConfig(rank=2, alpha=4, epochs=1, batch_size=4, lr=5e-3, eval_every_epoch=False)
    train_adapter(config, str(model_a), mix / "train.jsonl", root / "train", progress=False)
    return {"a": model_a, "b": model_b, "adapter": root / "train" / "adapter", "mix": mix, "root": root,
            "facts": facts}


def test_the_trainer_records_the_base_model(twins, tmp_path):
    import shutil

    assert adapter_base_model(twins["adapter"]) == load_model(str(twins["a"])).model_hash
    assert load_model(str(twins["a"])).model_hash != load_model(str(twins["b"])).model_hash
    alone = shutil.copytree(twins["adapter"], tmp_path / "copied-adapter")  # users ship adapter/ by itself
    assert adapter_base_model(alone) == load_model(str(twins["a"])).model_hash


def test_probe_refuses_the_adapter_on_the_twin_model(twins, tmp_path):
    from knowpack.probe.config import ProbeConfig
    from knowpack.probe.runner import run_probe

    config = ProbeConfig(prompts=1, shots=0, samples=0, max_new_tokens=2)
    with pytest.raises(KnowpackError, match="was trained on model .*, not on the loaded model"):
        run_probe(config, twins["facts"], str(twins["b"]), tmp_path / "b", adapter=str(twins["adapter"]),
                  progress=False)
    summary = run_probe(config, twins["facts"], str(twins["a"]), tmp_path / "a", adapter=str(twins["adapter"]),
                        progress=False)
    assert summary.n == len(twins["facts"])


def test_evaluate_refuses_the_adapter_on_the_twin_model(twins, tmp_path):
    from knowpack.evaluate.config import EvalConfig
    from knowpack.evaluate.runner import evaluate

    with pytest.raises(KnowpackError, match="was trained on model .*, not on the loaded model"):
        evaluate(EvalConfig(benchmarks=[]), str(twins["b"]), twins["adapter"], twins["mix"], tmp_path / "eval",
                 progress=False)
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_cli_probe_says_it_in_one_line(twins, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "knowpack.cli.app", "probe", "--model", str(twins["b"]),
                             "--adapter", str(twins["adapter"]), "--facts", str(twins["root"] / "facts.jsonl"),
                             "--prompts", "1", "--shots", "0", "--samples", "0", "--out", str(tmp_path / "p")],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "was trained on model" in result.stderr and "Traceback" not in result.stderr
