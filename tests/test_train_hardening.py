"""Training on hostile or broken input: crafted pickles, damaged checkpoints, divergence, bad options,
a launch with the wrong number of processes, and the thread count every rank sets."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

from knowpack.errors import KnowpackError
from knowpack.train import TrainConfig, load_preset, train_adapter
from knowpack.train.artifacts import CheckpointState, RunIdentity, TrainSummary
from test_train import _adapter_weights, _config, train_file  # noqa: F401  (fixture)

SRC = Path(__file__).resolve().parents[1] / "src" / "knowpack"


class Killed(RuntimeError):
    pass


def _kill_after(epoch: int):
    def hook(row):
        if row["epoch"] == epoch:
            raise Killed
    return hook


class _Planted:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_no_torch_load_without_weights_only_in_src():
    calls = []
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start(): text.find(")", match.end()) + 1]
            calls.append((path.name, call))
    assert all("weights_only=True" in call for _, call in calls), calls


def test_crafted_pickle_checkpoint_is_refused_and_never_unpickled(tiny_model_dir, train_file, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "code-ran"
    config = _config(epochs=3)
    with pytest.raises(Killed):
        train_adapter(config, str(tiny_model_dir), train_file, out, progress=False, on_epoch_end=_kill_after(1))
    # Where the trainer of knowpack before format 1 looked: epoch-N/trainer_state.pt and rng-0.pt.
    planted = out / "checkpoints" / "epoch-2"
    planted.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (planted / name).write_bytes((out / "checkpoints" / "epoch-1" / name).read_bytes())
    for name in ("trainer_state.pt", "rng-0.pt"):
        with open(planted / name, "wb") as fh:
            pickle.dump({"epoch": 2, "payload": _Planted(marker)}, fh)
    with pytest.raises(KnowpackError) as err:
        train_adapter(config, str(tiny_model_dir), train_file, out, progress=False)
    assert "pickle" in err.value.message and "epoch-2" in err.value.message and "delete" in err.value.hint
    assert not marker.exists()
    assert not (out / "adapter").exists()


@pytest.mark.parametrize("damaged", ["adapter_model.safetensors", "optimizer.safetensors", "trainer_state.json"])
def test_truncated_last_checkpoint_falls_back_to_the_one_before(tiny_model_dir, train_file, tmp_path, caplog,
                                                                damaged):
    config = _config(epochs=3, grad_accum=2, warmup_ratio=0.2)
    train_adapter(config, str(tiny_model_dir), train_file, tmp_path / "straight", progress=False)
    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        train_adapter(config, str(tiny_model_dir), train_file, out, progress=False, on_epoch_end=_kill_after(2))
    target = out / "checkpoints" / "epoch-2" / damaged
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])  # what a crash or a full disk during saving leaves
    with caplog.at_level(logging.WARNING, logger="knowpack.train.resume"):
        summary = train_adapter(config, str(tiny_model_dir), train_file, out, progress=False)
    assert summary["resumed_from"].endswith("epoch-1")
    assert any("epoch-2" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    straight, resumed = _adapter_weights(tmp_path / "straight" / "adapter"), _adapter_weights(out / "adapter")
    assert all(torch.equal(straight[n], resumed[n]) for n in straight)
    assert [r["epoch"] for r in summary["curve"]] == [1, 2, 3]


def test_checkpoints_are_flushed_to_disk_before_the_rename(tiny_model_dir, train_file, tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync, real_rename = os.fsync, Path.rename
    renamed: list[tuple[str, list[str]]] = []

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def rename(self, target):
        renamed.append((str(self), list(synced)))
        return real_rename(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "rename", rename)
    out = tmp_path / "out"
    train_adapter(_config(epochs=1), str(tiny_model_dir), train_file, out, progress=False)
    staging, before = next((s, done) for s, done in renamed if s.endswith("epoch-1.partial"))
    files = [str(p) for p in Path(staging.replace(".partial", "")).iterdir()]
    assert all(f.replace("epoch-1", "epoch-1.partial") in before for f in files)
    assert staging in before  # the folder's entries
    assert str(out / "checkpoints") in synced  # the rename itself


def test_diverging_run_stops_with_one_clear_error(tiny_model_dir, train_file, tmp_path):
    # A LoRA scale beyond float32's range: valid as a config, NaN from the first forward pass on.
    out = tmp_path / "out"
    with pytest.raises(KnowpackError) as err:
        train_adapter(_config(alpha=1e39, epochs=2), str(tiny_model_dir), train_file, out, progress=False)
    assert "diverged in epoch 1" in err.value.message and "at batch 1 of 3" in err.value.message
    assert "--lr" in err.value.hint and "--alpha" in err.value.hint
    assert not (out / "adapter").exists() and not TrainSummary.exists(out)
    assert not (out / "checkpoints" / "epoch-1").exists()


def test_nan_mid_run_keeps_the_last_good_checkpoint_and_resumes_from_it(tiny_model_dir, train_file, tmp_path):
    from knowpack.models import load_model

    loaded = load_model(str(tiny_model_dir))
    out = tmp_path / "out"

    def poison(row):  # a blow-up inside epoch 2, after epoch 1 was checkpointed
        if row["epoch"] == 1:
            for name, param in loaded.model.named_parameters():
                if "lora_B" in name:
                    param.data.fill_(float("nan"))

    with pytest.raises(KnowpackError) as err:
        train_adapter(_config(epochs=3), loaded, train_file, out, progress=False, on_epoch_end=poison)
    assert "diverged in epoch 2" in err.value.message and "at batch 1 of 3" in err.value.message
    assert "last good checkpoint is epoch 1" in err.value.message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-1"]
    assert not (out / "adapter").exists() and not TrainSummary.exists(out)
    summary = train_adapter(_config(epochs=3), loaded, train_file, out, progress=False)
    assert summary["resumed_from"].endswith("epoch-1") and summary["epochs_run"] == 3
    assert all(torch.isfinite(t).all() for t in _adapter_weights(out / "adapter").values())


def test_non_finite_and_boolean_numbers_are_rejected():
    for text in ("epochs: true", "lr: .inf", "lr: .nan", "rank: false"):
        with pytest.raises(ValidationError):
            TrainConfig(**yaml.safe_load(text))
    with pytest.raises(KnowpackError, match=r"lr: .*finite"):
        load_preset("smollm2", lr=float("inf"))
    with pytest.raises(KnowpackError, match=r"lr: .*less than or equal to 1"):
        load_preset("smollm2", lr=1e39)  # finite, but overflows float32 in the optimizer
    with pytest.raises(KnowpackError, match=r"epochs: expected a number, got a boolean"):
        load_preset("paper", epochs=True)
    with pytest.raises(KnowpackError, match=r"learning_rate: unknown key"):
        load_preset("paper", learning_rate=1e-3)


def test_cli_rejects_lr_inf_before_training(tiny_model_dir, train_file, tmp_path):
    from typer.testing import CliRunner

    from knowpack.cli.app import app

    result = CliRunner().invoke(app, ["train", "--model", str(tiny_model_dir), "--train", str(train_file),
                                      "--out", str(tmp_path / "out"), "--lr", "inf"])
    assert result.exit_code != 0 and isinstance(result.exception, KnowpackError)
    assert "lr" in result.exception.message and "finite" in result.exception.message
    assert not (tmp_path / "out").exists()


def test_expected_process_count_is_asserted(tiny_model_dir, train_file, tmp_path, monkeypatch):
    from knowpack.train.guards import check_world_size

    with pytest.raises(KnowpackError, match=r"asked for 2 training process\(es\) but running in 1"):
        train_adapter(_config(epochs=1), str(tiny_model_dir), train_file, tmp_path / "out", progress=False,
                      expected_processes=2)
    assert not (tmp_path / "out").exists()
    # What `accelerate launch --num_processes 2 --cpu` leaves in the environment of its one process.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_PORT", "29500")
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(KnowpackError, match="started only this one") as err:
        check_world_size(1, None)
    assert "--processes 1" in err.value.hint
    check_world_size(1, 1)  # the user confirmed a single process
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_world_size(1, None)  # a torchrun-style launch of one process


def test_thread_count_is_the_share_of_usable_cores(monkeypatch):
    import knowpack.runtime as runtime

    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "_explicit", None)
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)  # a parent's --threads would win over the default
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    try:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert runtime.configure_threads(None) == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
        assert runtime.configure_threads() == 1
        monkeypatch.delenv("LOCAL_WORLD_SIZE")
        assert runtime.configure_threads(3) == 3 and torch.get_num_threads() == 3
        assert runtime.configure_threads(None) == 3  # a stage's setup keeps the user's choice
        with pytest.raises(KnowpackError, match="thread count"):
            runtime.configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_training_files_are_versioned_json_with_every_key(tiny_model_dir, train_file, tmp_path):
    out = tmp_path / "out"
    summary = train_adapter(_config(epochs=1), str(tiny_model_dir), train_file, out, progress=False)
    saved = json.loads(TrainSummary.path(out).read_text())
    assert saved.pop("format_version") == TrainSummary.version
    assert set(saved) == set(summary) == set(TrainSummary.model_fields)
    assert json.loads(RunIdentity.path(out).read_text())["format_version"] == 1
    state = CheckpointState.read(out / "checkpoints" / "epoch-1")
    assert state.epoch == 1 and len(state.rng) == 1 and state.scheduler["last_epoch"] == 3
    del saved["train_examples"]
    TrainSummary.path(out).write_text(json.dumps(saved))
    with pytest.raises(KnowpackError, match="train_examples: required key is missing"):
        TrainSummary.read(out)
