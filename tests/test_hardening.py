"""Hostile and broken input across stages: one clear error line, non-zero exit, nothing lost or half-written.

(Fact files have their own tests in test_facts_io.py; training checkpoints in test_train.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from artifact_fakes import category_row, write_probe_folder

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.io import write_jsonl
from knowpack.probe.config import ProbeConfig


def knowpack(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed CLI the way a user does (``main()``: error handling included)."""
    return subprocess.run([sys.executable, "-c", "from knowpack.cli.app import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})})


def one_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "error:" in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def facts(n: int = 12, question: str | None = None) -> list[Fact]:
    return [Fact(id=f"f{i}", subject=f"Land{i}", relation="capital", question=question or f"What is the capital of Land{i}?",
                 answer=f"City{i}") for i in range(n)]


# -- silent overwrite: a finished run with other settings is refused, never replaced -----------

def test_probe_refuses_a_finished_run_with_other_settings(tmp_path):
    from knowpack.probe.runner import run_probe
    from test_probe_fakes import ScriptedBackend, fact_set

    config = ProbeConfig(prompts=2, shots=1, samples=0)
    run_probe(config, fact_set(20), ScriptedBackend(), tmp_path, progress=False)
    before = (tmp_path / "categories.jsonl").read_bytes()
    with pytest.raises(KnowpackError, match="already holds a finished probe run with other settings"):
        run_probe(config.model_copy(update={"seed": 3}), fact_set(20), ScriptedBackend(), tmp_path, progress=False)
    assert (tmp_path / "categories.jsonl").read_bytes() == before
    again = ScriptedBackend()
    run_probe(config, fact_set(20), again, tmp_path, progress=False)  # same settings: reused
    assert again.generated == 0


def test_probe_refuses_an_unfinished_run_with_other_settings(tmp_path):
    from knowpack.probe.runner import run_probe
    from test_probe_fakes import CrashingBackend, ScriptedBackend, fact_set

    config = ProbeConfig(prompts=2, shots=1, samples=2, batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        run_probe(config, fact_set(30), CrashingBackend(ScriptedBackend(), 6), tmp_path, progress=False)
    with pytest.raises(KnowpackError, match="holds an unfinished probe run with other settings"):
        run_probe(config.model_copy(update={"prompts": 3}), fact_set(30), ScriptedBackend(), tmp_path, progress=False)


# -- data loss: a folder of the user's survives every command pointed at it --------------------

@pytest.fixture()
def user_folder(tmp_path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "data.csv").write_text("a,b\n1,2\n")
    return folder


def _untouched(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["data.csv", "notes.txt"]
    assert (folder / "notes.txt").read_text() == "my notes\n" and (folder / "data.csv").read_text() == "a,b\n1,2\n"


def test_no_command_touches_a_folder_it_did_not_create(tmp_path, user_folder, tiny_model_dir):
    write_jsonl(tmp_path / "facts.jsonl", facts())
    probe = write_probe_folder(tmp_path / "probe", [category_row(f"f{i}", "Unknown") for i in range(12)])
    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "f0#unknown", "fact_id": "f0", "question": "q?",
                                                      "answer": "a", "role": "unknown"}) + "\n")
    study = tmp_path / "study.yaml"
    study.write_text(f"name: t\nmodel: {tiny_model_dir}\nfacts: {tmp_path / 'facts.jsonl'}\n"
                     f"grid: {{unknown: [1]}}\nout: {user_folder}\n")
    commands = [
        ["facts", "build", "--sample", "5", "--out", str(user_folder)],
        ["probe", "--model", str(tiny_model_dir), "--facts", str(tmp_path / "facts.jsonl"), "--prompts", "1",
         "--shots", "0", "--samples", "0", "--out", str(user_folder)],
        ["mix", "--probe", str(probe), "--facts", str(tmp_path / "facts.jsonl"), "--unknown", "1",
         "--heldout-per-category", "0", "--out", str(user_folder)],
        ["train", "--model", str(tiny_model_dir), "--train", str(tmp_path / "train.jsonl"), "--out", str(user_folder)],
        ["report", str(user_folder)],
        ["study", "run", str(study)],
    ]
    for command in commands:
        result = knowpack(*command)
        assert result.returncode != 0, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        _untouched(user_folder)


# -- OS faults: one line, before the expensive part ---------------------------------------------

def test_output_path_that_is_a_file_or_under_a_file(tmp_path):
    write_jsonl(tmp_path / "facts.jsonl", facts())
    probe = write_probe_folder(tmp_path / "probe", [category_row(f"f{i}", "Unknown") for i in range(12)])
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "below"):
        result = knowpack("mix", "--probe", str(probe), "--facts", str(tmp_path / "facts.jsonl"), "--unknown", "1",
                          "--heldout-per-category", "0", "--out", str(out))
        one_clean_error(result)
    assert (tmp_path / "afile").read_text() == "x"


def test_output_under_proc_is_one_line(tmp_path):
    write_jsonl(tmp_path / "facts.jsonl", facts())
    probe = write_probe_folder(tmp_path / "probe", [category_row(f"f{i}", "Unknown") for i in range(12)])
    result = knowpack("mix", "--probe", str(probe), "--facts", str(tmp_path / "facts.jsonl"), "--unknown", "1",
                      "--heldout-per-category", "0", "--out", "/proc/knowpack-out")
    one_clean_error(result)


def test_disk_full_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from knowpack.cli import app as cli_app

    write_jsonl(tmp_path / "facts.jsonl", facts())
    probe = write_probe_folder(tmp_path / "probe", [category_row(f"f{i}", "Unknown") for i in range(12)])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "mix"))

    monkeypatch.setattr("knowpack.io.os.replace", full)
    monkeypatch.setattr(sys, "argv", ["knowpack", "mix", "--probe", str(probe), "--facts", str(tmp_path / "facts.jsonl"),
                                      "--unknown", "1", "--heldout-per-category", "0", "--out", str(tmp_path / "mix")])
    with pytest.raises(SystemExit) as info:
        cli_app.main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert not (tmp_path / "mix" / "train.jsonl").exists()


# -- inputs too large for the model --------------------------------------------------------------

def test_a_question_longer_than_the_context_is_refused_before_work(tmp_path, tiny_model_dir):
    from knowpack.models.loading import load_model
    from knowpack.probe.runner import run_probe

    loaded = load_model(str(tiny_model_dir))
    long = facts(6) + [Fact(id="huge", subject="Land", relation="capital", question="Where? " * 400, answer="x")]
    with pytest.raises(KnowpackError, match=r"1 fact\(s\) have few-shot prompts longer than the model's context"):
        run_probe(ProbeConfig(prompts=1, shots=0, samples=0), long, loaded, tmp_path / "p", progress=False)
    assert not (tmp_path / "p" / "categories.jsonl").exists()


# -- misleading messages about adapters ------------------------------------------------------------

def _lora(model_dir: Path, folder: Path, *, rank: int = 2, poison: bool = False) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                          LoraConfig(r=rank, lora_alpha=4, target_modules=["up_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.fill_(float("nan") if poison else 0.01)
    peft.save_pretrained(folder)
    return folder


def test_adapter_messages_say_what_is_wrong(tmp_path, tiny_model_dir):
    from conftest import build_tiny_llama

    from knowpack.models.adapters import attach_adapter
    from knowpack.models.loading import load_model

    loaded = load_model(str(tiny_model_dir))
    with pytest.raises(KnowpackError, match="(?s)holds NaN or infinite weights .* lower learning rate"):
        attach_adapter(loaded.model, _lora(tiny_model_dir, tmp_path / "nan", poison=True))
    pickled = _lora(tiny_model_dir, tmp_path / "bin")
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(KnowpackError, match="pickled weights .* safetensors only"):
        attach_adapter(loaded.model, pickled)
    wide = build_tiny_llama(tmp_path / "wide", hidden=96)
    with pytest.raises(KnowpackError, match=r"does not fit this model: size mismatch for .*lora_A.*torch.Size"):
        attach_adapter(loaded.model, _lora(wide, tmp_path / "wide-adapter"))


# -- late validation in studies --------------------------------------------------------------------

def test_study_problems_found_before_any_training(tmp_path):
    import yaml
    from test_study_runner import FakeStages

    from knowpack.study.plan import load_study
    from knowpack.study.runner import run_study

    spec = {"name": "t", "model": "tiny", "facts": "default", "facts_sample": 40,
            "probe": {"prompts": 2, "shots": 1, "samples": 0}, "mix": {"heldout_per_category": 2},
            "grid": {"unknown": [2, 500], "kind": ["highly_known"], "extra": [0, 1]},
            "eval": {"benchmarks": ["mmlu"], "mmlu_subjects": ["astrology"], "metrics": ["reliability", "vibes"]},
            "out": str(tmp_path / "out")}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(KnowpackError) as info:
        load_study(tmp_path / "s.yaml")
    assert "unknown metric 'vibes'" in str(info.value) and "unknown MMLU subject 'astrology'" in str(info.value)
    del spec["eval"]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    fakes = FakeStages()
    with pytest.raises(KnowpackError, match="needs 500 Unknown facts"):
        run_study(load_study(tmp_path / "s.yaml"), stages=fakes.stages(), progress=False)
    assert "train_adapter" not in fakes.calls and "build_mixture" not in fakes.calls


def test_duplicate_yaml_keys_are_refused(tmp_path):
    from knowpack.study.plan import load_study

    (tmp_path / "s.yaml").write_text("name: t\ngrid: {unknown: [1]}\ntrain:\n  epochs: 3\n  epochs: 5\n")
    with pytest.raises(KnowpackError, match="duplicate key 'epochs'"):
        load_study(tmp_path / "s.yaml")
