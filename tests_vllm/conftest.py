"""Fixtures of the vLLM suite: real vLLM engines on the tiny random Llama and on the default model.

Run in the vLLM environment: ``.venv-vllm/bin/python -m pytest -q tests_vllm`` (``make test-vllm``).
Engines are session-scoped — each start-up costs tens of seconds on two cores.

The transformers engine is the reference. vLLM pins transformers < 5.20, and knowpack's
transformers engine passes its cache as ``cache=`` (the keyword of transformers 5.24), which
5.19 ignores, so it cannot decode there; the reference runs therefore use knowpack's main
environment (``KNOWPACK_HF_PYTHON``, default: the repository's .venv), with this checkout's code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE_OPTIONS = ["--prompts", "4", "--shots", "4", "--samples", "0", "--batch-size", "16"]
DEFAULT_FACTS = 64  # 16 are held out as shots, 48 are probed


def _main_suite_conftest():
    spec = importlib.util.spec_from_file_location("knowpack_main_conftest", ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_tiny_llama = _main_suite_conftest().build_tiny_llama


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def knowpack_cli(python: str | Path, *args: str, timeout: int = 3000) -> subprocess.CompletedProcess:
    """Run ``knowpack ARGS`` under ``python`` with this checkout's sources first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([str(python), "-m", "knowpack.cli.app", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"knowpack {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="session")
def hf_python() -> Path:
    """The Python of knowpack's main environment (where the transformers engine runs)."""
    python = Path(os.environ.get("KNOWPACK_HF_PYTHON", ROOT / ".venv" / "bin" / "python"))
    if not python.exists():
        pytest.fail(f"knowpack's main environment is missing ({python}); run `make venv` first "
                    "or point KNOWPACK_HF_PYTHON at its python")
    return python


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random Llama, with head_dim 64: vLLM's CPU attention has no kernel for head_dim 16."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), hidden=256)


def save_lora(model_dir: Path, out: Path, *, rank: int, targets: list[str], seed: int = 0) -> Path:
    """A PEFT LoRA adapter on ``model_dir`` with random (non-zero) B matrices, so it changes answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets,
                                                  init_lora_weights=False, lora_dropout=0.0))
    with torch.no_grad():  # large enough to move a random tiny model's argmax
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(4.0)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return save_lora(tiny_model_dir, tmp_path_factory.mktemp("tiny-lora") / "adapter", rank=8,
                     targets=["q_proj", "v_proj", "down_proj"])


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir, tiny_adapter):
    from knowpack.probe.backends.vllm import VLLMEngine, VLLMSettings

    with VLLMEngine(str(tiny_model_dir), VLLMSettings(kv_cache_gib=0.25, max_model_len=512, max_num_seqs=64,
                                                      adapters=[str(tiny_adapter)])) as engine:
        yield engine


@pytest.fixture(scope="session")
def default_facts(tmp_path_factory) -> Path:
    """A stratified sample of the default fact set."""
    out = tmp_path_factory.mktemp("facts") / "facts.jsonl"
    knowpack_cli(sys.executable, "facts", "build", "--sample", str(DEFAULT_FACTS), "--out", str(out))
    return out


@pytest.fixture(scope="session")
def default_adapter(default_facts, hf_python, tmp_path_factory) -> Path:
    """A small adapter trained by `knowpack train --preset smollm2 --epochs 2` on 8 facts, batch 2
    (8 optimizer steps: enough to move some answers, cheap on two cores)."""
    rows = [json.loads(line) for line in default_facts.read_text().splitlines()][-8:]
    folder = tmp_path_factory.mktemp("train")
    train = folder / "train.jsonl"
    train.write_text("".join(json.dumps({"id": f"t{i}", "fact_id": r["id"], "question": r["question"],
                                         "answer": r["answer"], "role": "unknown"}) + "\n"
                             for i, r in enumerate(rows)))
    knowpack_cli(hf_python, "train", "--preset", "smollm2", "--epochs", "2", "--batch-size", "2",
                 "--train", str(train), "--out", str(folder / "run"), "--quiet")
    return folder / "run" / "adapter"


@pytest.fixture(scope="session")
def hf_probes(default_facts, default_adapter, hf_python, tmp_path_factory) -> dict[str, Path]:
    """`knowpack probe --backend hf` on the default model, without and with the adapter."""
    out = tmp_path_factory.mktemp("hf-probes")
    knowpack_cli(hf_python, "probe", "--facts", str(default_facts), "--out", str(out / "base"), *PROBE_OPTIONS)
    knowpack_cli(hf_python, "probe", "--facts", str(default_facts), "--out", str(out / "adapter"),
                 "--adapter", str(default_adapter), *PROBE_OPTIONS)
    return {"base": out / "base", "adapter": out / "adapter"}


@pytest.fixture(scope="session")
def default_engine(default_adapter):
    """One vLLM engine on the default model, fp32, serving the base model and the trained adapter."""
    from knowpack.probe.backends.vllm import VLLMEngine, VLLMSettings

    with VLLMEngine("default", VLLMSettings(dtype="float32", kv_cache_gib=1.0,
                                            adapters=[str(default_adapter)])) as engine:
        yield engine
