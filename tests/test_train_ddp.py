"""Training under `accelerate launch` with two CPU processes (gloo DDP) on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, os, sys
from pathlib import Path
from knowpack.train import TrainConfig, train_adapter
config = TrainConfig(rank=2, alpha=4, targets=["q_proj", "down_proj"], lr=1e-2, epochs=2, batch_size=4, seed=1)
summary = train_adapter(config, sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), progress=False)
# One file per rank: the ranks' stdout streams interleave and can merge lines.
rank = os.environ["RANK"]
Path(sys.argv[4], f"summary-{rank}.json").write_text(
    json.dumps({"processes": summary["processes"], "global_batch": summary["global_batch"]}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launcher() -> str:
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if launcher is None:
        pytest.skip("accelerate CLI not installed")
    return launcher


def _train_file(tmp_path: Path) -> Path:
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"id": f"e{i}", "fact_id": f"f{i}", "role": "unknown",
                                         "question": f"What is the capital of Land{i}?", "answer": f"City{i}"}) + "\n"
                             for i in range(6)))
    return train


def test_two_process_ddp_writes_one_loadable_adapter(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    launcher, train = _launcher(), _train_file(tmp_path)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    reports = tmp_path / "reports"
    reports.mkdir()
    # accelerate's multi-process launcher (torchrun underneath); ACCELERATE_USE_CPU selects gloo.
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(script), str(tiny_model_dir), str(train), str(out), str(reports)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads((reports / f"summary-{rank}.json").read_text()) for rank in (0, 1)]
    assert summaries == [{"processes": 2, "global_batch": 4}] * 2
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "adapter", "checkpoints", "curve.csv", "manifest.json", "run.json", "train_summary.json"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-1", "epoch-2"]
    last = out / "checkpoints" / "epoch-2"
    assert not list(last.glob("*.pt"))  # data-only checkpoints: nothing to unpickle
    state = json.loads((last / "trainer_state.json").read_text())
    assert len(state["rng"]) == 2  # one RNG snapshot per rank, in rank order
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter")
    assert sum("lora_" in n for n, _ in model.named_parameters()) == 2 * 2 * 2  # 2 layers × 2 targets × A/B


def test_cpu_launcher_that_starts_one_process_is_an_error(tiny_model_dir, tmp_path):
    # `accelerate launch --num_processes 2 --cpu` runs ONE process without telling it the world
    # size; the run must stop with one clear line instead of silently training alone.
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [_launcher(), "launch", "--quiet", "--num_processes", "2", "--cpu", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "knowpack.cli.app", "train",
           "--model", str(tiny_model_dir), "--train", str(_train_file(tmp_path)), "--out", str(tmp_path / "out"),
           "--epochs", "1", "--rank", "2", "--targets", "q_proj", "--quiet"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    stderr = " ".join(result.stderr.split())  # the CLI wraps its message to the terminal width
    assert result.returncode != 0
    assert "error: accelerate launch was asked for several processes but started only this one" in stderr
    assert "--processes 1" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


def test_shipped_accelerate_configs_load_and_the_cpu_one_trains_on_two_ranks(tiny_model_dir, tmp_path):
    """configs/accelerate/*.yaml are what the docs tell users to launch with: both must parse as
    accelerate configs, and the CPU one must really start two ranks for `knowpack train --processes 2`."""
    from accelerate.commands.config.config_args import load_config_from_file

    gpu = load_config_from_file(str(CONFIGS / "gpu-1node-8.yaml"))
    assert (gpu.num_processes, gpu.num_machines, str(gpu.mixed_precision)) == (8, 1, "bf16")
    cpu_config = CONFIGS / "cpu-2.yaml"
    assert load_config_from_file(str(cpu_config)).num_processes == 2
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    out = tmp_path / "out"
    cmd = [_launcher(), "launch", "--config_file", str(cpu_config), "--main_process_port", str(_free_port()),
           "-m", "knowpack.cli.app", "--threads", "1", "train", "--model", str(tiny_model_dir),
           "--train", str(_train_file(tmp_path)), "--out", str(out), "--processes", "2",
           "--epochs", "1", "--rank", "2", "--targets", "q_proj", "--batch-size", "4", "--quiet"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_batch"] == 4
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
