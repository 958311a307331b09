"""`knowpack capacity`: spec validation, the trial function on fake study stages, the CLI and report."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml
from test_study_fakes import N_FACTS
from test_study_integration import _facts
from test_study_runner import FakeStages
from typer.testing import CliRunner

from knowpack.capacity.artifacts import CapacityResults
from knowpack.capacity.driver import run_capacity
from knowpack.capacity.spec import load_capacity, parse_capacity
from knowpack.capacity.trials import ArmTrials, harms_of
from knowpack.cli.app import app
from knowpack.errors import KnowpackError
from knowpack.study import runner


def base_spec(tmp_path, **capacity) -> dict:
    return {
        "name": "cap", "model": "tiny", "facts": "default", "facts_sample": N_FACTS,
        "probe": {"prompts": 2, "shots": 1, "samples": 0},
        "mix": {"heldout_per_category": 2, "retention_sample": 1},
        "train": {"preset": "smollm2", "epochs": 1},
        "eval": {"benchmarks": ["mmlu"]},
        "out": str(tmp_path / "cap"),
        "capacity": {"ranks": [1, 4], "seeds": [1, 2], "reliability": None, "max_mmlu_drop": 0.0055,
                     "n_min": 1, "n_max": 64, **capacity},
    }


def write(tmp_path, spec: dict):
    path = tmp_path / "cap.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# ---------------------------------------------------------------- validation before any training

@pytest.mark.parametrize("change, message", [
    ({"methods": ["lora", "qlora"]}, "unknown method(s) ['qlora']"),
    ({"ranks": [0, 4]}, "every rank must be >= 1"),
    ({"n_min": 8, "n_max": 4}, "n_max (4) is below n_min (8)"),
    ({"max_mmlu_drop": float("nan")}, "capacity.max_mmlu_drop"),
    ({"reliability": None, "max_mmlu_drop": None}, "no limit given"),
    ({"kind": "control"}, "every trial gets its control itself"),
    ({"seeds": []}, "capacity.seeds"),
    ({"controls": False, "max_negative_shift": 0.1}, "controls must be on"),
])
def test_bad_capacity_section_is_one_clear_error(tmp_path, change, message):
    with pytest.raises(KnowpackError) as err:
        parse_capacity(base_spec(tmp_path, **change))
    assert message in err.value.message and "invalid capacity spec" in err.value.message


def test_grid_key_and_bad_train_keys_are_refused(tmp_path):
    spec = base_spec(tmp_path)
    spec["grid"] = {"unknown": [4]}
    spec["train"]["epochs"] = 0
    with pytest.raises(KnowpackError) as err:
        parse_capacity(spec)
    assert "a capacity spec has no grid" in err.value.message
    spec.pop("grid")
    with pytest.raises(KnowpackError) as err:
        parse_capacity(spec)
    assert "train.epochs" in err.value.message


def test_cli_flags_override_the_yaml(tmp_path):
    path = write(tmp_path, base_spec(tmp_path))
    run = load_capacity(path, options={"ranks": [2], "methods": ["dora"], "n_max": 9, "model": "other"})
    assert run.section.ranks == [2] and run.section.methods == ["dora"] and run.section.n_max == 9
    assert run.spec.model == "other" and run.section.seeds == [1, 2]


def test_target_modules_missing_from_the_model_fail_before_training(tmp_path, tiny_model_dir, monkeypatch):
    fakes = FakeStages()

    def real_model(spec):
        from knowpack.models import load_model
        return load_model(str(tiny_model_dir))

    stages = fakes.stages()
    stages.load_model = real_model
    spec = base_spec(tmp_path)
    spec["train"]["targets"] = ["gate_proj", "no_such_proj"]
    with pytest.raises(KnowpackError) as err:
        run_capacity(parse_capacity(spec), stages=stages, progress=False)
    assert "no_such_proj" in err.value.message
    assert "train_adapter" not in fakes.calls


# ---------------------------------------------------------------- the trial function on fake stages

def test_trial_gives_per_seed_values_and_pairs_controls_by_seed(tmp_path):
    run = parse_capacity(base_spec(tmp_path, max_negative_shift=1.0))
    arm = ArmTrials(run, "lora", 4, stages=FakeStages().stages(), progress=False)
    details = arm.details_for(6)
    assert sorted(details.cells) == [1, 2] and sorted(details.controls) == [1, 2]
    cells = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "cap" / "cells").glob("*/cell.json")}
    for seed in (1, 2):
        treated, control = cells[details.cells[seed]], cells[details.controls[seed]]
        assert treated["axes"]["seed"] == control["axes"]["seed"] == seed
        assert treated["axes"]["kind"] == "paraphrase" and control["axes"]["kind"] == "control"
        assert treated["axes"]["unknown"] == control["axes"]["unknown"] == 6
        assert treated["train"]["rank"] == control["train"]["rank"] == 4
    # Each seed's harm is its own cell minus its own control (the fake shifts differ per seed).
    metrics = {key: json.loads((tmp_path / "cap" / "cells" / key / "eval").glob("*/metrics.json").__next__()
                               .read_text()) for key in [*details.cells.values(), *details.controls.values()]}
    for seed in (1, 2):
        cell = metrics[details.cells[seed]]["shifts"]["untrained"]["all"]["negative_share"]
        ctrl = metrics[details.controls[seed]]["shifts"]["untrained"]["all"]["negative_share"]
        assert details.harms[seed]["negative_shift"] == pytest.approx(cell - ctrl)
        assert details.harms[seed]["mmlu_drop"] == pytest.approx(0.006)
    result = details.result({"negative_shift": 1.0, "mmlu_drop": 0.0055})
    assert len(result.reliability) == 2 and set(result.harms) == {"negative_shift", "mmlu_drop"}
    # A second call with the same n reads the trial back; a new arm object reuses the finished cells.
    again = FakeStages()
    ArmTrials(run, "lora", 4, stages=again.stages(), progress=False).details_for(6)
    assert "train_adapter" not in again.calls


def test_harms_of_uses_the_control_only_for_the_shift():
    cell = {"negative_shift": 0.3, "mmlu_base": 0.5, "mmlu": 0.45, "refusal_rate": 0.2, "refusal_rate_base": 0.1}
    control = {"negative_shift": 0.1, "mmlu_base": 0.5, "mmlu": 0.1, "refusal_rate": 0.9, "refusal_rate_base": 0.0}
    assert harms_of(cell, control) == pytest.approx({"negative_shift": 0.2, "mmlu_drop": 0.05,
                                                     "refusal_change": 0.1})


def test_missing_budgeted_measure_is_a_clear_error(tmp_path):
    spec = base_spec(tmp_path)
    spec["eval"]["benchmarks"] = []
    run = parse_capacity(spec)
    fakes = FakeStages()
    stages = fakes.stages()
    evaluate = stages.evaluate

    def without_mmlu(config, model, adapter_dir, mix_dir, out_dir, **kw):
        evaluate(config, model, adapter_dir, mix_dir, out_dir, **kw)
        data = json.loads((out_dir / "metrics.json").read_text())
        data["benchmarks"] = {"status": "not configured"}
        (out_dir / "metrics.json").write_text(json.dumps(data))

    stages.evaluate = without_mmlu
    with pytest.raises(KnowpackError) as err:
        run_capacity(run, stages=stages, progress=False)
    assert "mmlu_drop could not be measured" in err.value.message and "eval.benchmarks" in err.value.hint


# ---------------------------------------------------------------- a whole run through the CLI

@pytest.fixture
def fake_stages(monkeypatch):
    fakes = FakeStages()
    monkeypatch.setattr(runner.Stages, "real", classmethod(lambda cls: fakes.stages()))
    return fakes


def test_cli_run_finds_the_budget_boundary_and_reports_it(tmp_path, fake_stages):
    path = write(tmp_path, base_spec(tmp_path))
    cli = CliRunner()
    result = cli.invoke(app, ["capacity", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "cap"
    frame = pd.read_csv(out / "capacity.csv")
    # The fake MMLU drop is 0.001 * n, so a 0.0055 budget holds n = 5 at every rank.
    assert list(frame["rank"]) == [1, 4] and list(frame["n_found"]) == [5, 5]
    assert set(frame["bound_by"]) == {"mmlu_drop"} and list(frame["first_failure"]) == [6, 6]
    assert frame["mmlu_drop_bound"].tolist() == pytest.approx([0.005, 0.005])
    assert frame["mmlu_drop_budget"].tolist() == [0.0055, 0.0055]
    assert frame["limits_failed"].tolist() == ["mmlu drop upper bound 0.006 above the budget 0.0055"] * 2
    results = CapacityResults.read(out)
    assert [t.n for t in results.arms[0].search.trials] == [1, 2, 4, 8, 6, 5]
    # Every cell of both searches is in results.csv: 6 trials x 2 seeds per rank; no negative-shift
    # budget, so no control cells.
    cells = pd.read_csv(out / "results.csv")
    assert len(cells) == 2 * 6 * 2 and "control" not in set(cells["kind"])
    calls = dict(fake_stages.calls)
    report = cli.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    page = (out / "report.html").read_text()
    assert "Capacity" in page and "holds 5 facts; at n = 6 mmlu drop upper bound 0.006 above the budget 0.0055" in page
    assert (out / "plots" / "capacity_vs_rank.png").is_file()
    # The fakes measure no trainable parameters: no figure over them rather than an empty one.
    assert not (out / "plots" / "capacity_vs_parameters.png").exists()
    # A rerun (a resumed or repeated search) trains nothing.
    rerun = cli.invoke(app, ["capacity", str(path), "--quiet"])
    assert rerun.exit_code == 0 and fake_stages.calls["train_adapter"] == calls["train_adapter"]


def test_n_max_is_lowered_to_what_the_base_probe_supplies(tmp_path, fake_stages):
    spec = base_spec(tmp_path, ranks=[1], reliability=0.0, max_mmlu_drop=None)
    results = run_capacity(parse_capacity(spec), progress=False)
    arm = results.arms[0]
    # 60 facts: 15 Unknown and 15 HighlyKnown, 2 of each held out; the control of n needs n HighlyKnown.
    assert arm.n_max_searched == 13 and arm.search.status == "n_max_reached" and arm.search.n_found == 13
    assert any("n_max lowered from 64 to 13" in note for note in arm.search.notes)
    assert not math.isnan(pd.read_csv(tmp_path / "cap" / "capacity.csv")["reliability_mean"][0])


def tiny_spec(tmp_path, tiny_model_dir, name: str, **capacity) -> dict:
    """A capacity spec on the tiny model with real stages: 1 epoch, every trial passes (reliability 0,
    a loose refusal budget), one seed; ``capacity`` sets the arms and n_max."""
    return {
        "name": name, "model": str(tiny_model_dir), "facts": str(_facts(tmp_path / "facts.jsonl")),
        "probe": {"prompts": 1, "shots": 1, "samples": 0, "max_new_tokens": 4, "batch_size": 16},
        "mix": {"heldout_per_category": 2, "retention_sample": 1},
        "train": {"preset": "smollm2", "epochs": 1, "batch_size": 4, "eval_every_epoch": False},
        "eval": {"benchmarks": [], "max_untrained": 2, "noise_floor": False, "second_draw": False},
        "out": str(tmp_path / "cap"),
        "capacity": {"seeds": [1], "reliability": 0.0, "max_refusal_change": 1.0, "n_min": 1, **capacity},
    }


@pytest.mark.integration
def test_capacity_with_real_stages_on_the_tiny_model(tmp_path, tiny_model_dir):
    """2 ranks x LoRA, n in 1..4, 1 epoch: real training, evaluation, bits and the report section."""
    # A random model learns nothing in one epoch: a zero reliability target and a loose refusal
    # budget let every trial pass, so the search walks 1, 2, 4 and stops at n_max.
    spec = tiny_spec(tmp_path, tiny_model_dir, "tiny-capacity", ranks=[1, 4], n_max=4)
    path = write(tmp_path, spec)
    # No --threads here: it would be remembered in this test process (and its environment) for
    # every later test; the suite runs with OMP_NUM_THREADS=1 anyway.
    result = CliRunner().invoke(app, ["capacity", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "cap"
    frame = pd.read_csv(out / "capacity.csv")
    assert list(frame["rank"]) == [1, 4] and list(frame["n_found"]) == [4, 4]
    assert set(frame["status"]) == {"n_max_reached"} and list(frame["trials_used"]) == [3, 3]
    # The trainable parameters come from the trained adapters and grow with the rank.
    params = frame["trainable_parameters"].tolist()
    assert params[0] > 0 and params[1] == 4 * params[0]
    assert frame["bits_written"].notna().all() and frame["refusal_change_bound"].notna().all()
    summaries = [json.loads(p.read_text()) for p in (out / "cells").glob("*/train/train_summary.json")]
    assert {s["trainable_parameters"] for s in summaries} == set(params)
    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    page = (out / "report.html").read_text()
    assert "Capacity: facts an adapter holds" in page and "every trial passed up to n = 4" in page
    assert f"knowpack capacity {path}" in page
    assert "knowpack study run" not in page  # the folder is rerun by `knowpack capacity`, not as a study
    for name in ("capacity_vs_rank", "capacity_vs_parameters", "capacity_bits"):
        assert (out / "plots" / f"{name}.png").is_file()


def test_full_fine_tuning_is_one_arm_without_a_rank_at_its_own_learning_rate(tmp_path):
    from knowpack.capacity.trials import trial_study
    from knowpack.study.grid import expand_grid

    run = parse_capacity(base_spec(tmp_path, methods=["lora", "full"], full_lr=2e-5))
    assert run.section.arms() == [("lora", 1), ("lora", 4), ("full", None)]
    cells = expand_grid(trial_study(run, 3, method="full", rank=None))
    assert {(c.train.method, c.train.lr) for c in cells} == {("full", 2e-5)}
    with pytest.raises(KnowpackError) as err:
        parse_capacity(base_spec(tmp_path, methods=["full"], full_lr=1e-3))
    assert "capacity.full_lr" in err.value.message


@pytest.mark.integration
def test_full_fine_tuning_arm_beside_lora_on_the_tiny_model(tmp_path, tiny_model_dir):
    """A LoRA arm and the full fine-tuning arm in one search: real training of both, one table."""
    spec = tiny_spec(tmp_path, tiny_model_dir, "tiny-full", ranks=[2], methods=["lora", "full"], n_max=2)
    result = CliRunner().invoke(app, ["capacity", str(write(tmp_path, spec)), "--quiet"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "cap"
    frame = pd.read_csv(out / "capacity.csv")
    assert frame["method"].tolist() == ["lora", "full"] and math.isnan(frame["rank"][1])
    from knowpack.models import load_model

    model = load_model(str(tiny_model_dir)).model
    every = sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())
    assert frame["trainable_parameters"].tolist()[1] == every > frame["trainable_parameters"][0]
    full_cells = [p.parent for p in (out / "cells").glob("*/train/adapter/config.json")]
    assert full_cells and all((p / "model.safetensors").is_file() for p in full_cells)
    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert "full (" in (out / "report.html").read_text()


def test_rerun_command_carries_every_flag_and_override_back_to_the_same_spec(tmp_path, monkeypatch):
    """The report's rerun command must make the same search: a command that dropped --ranks or --out
    would search other arms, or write over the folder the spec names."""
    import shlex

    import knowpack.capacity.driver as driver

    path = write(tmp_path, base_spec(tmp_path))
    run = load_capacity(path, overrides=["train.epochs=2", "capacity.max_mmlu_drop=0.01"],
                        options={"ranks": [1, 4], "methods": ["lora", "dora"], "seeds": [3],
                                 "out": str(tmp_path / "another folder"), "max_negative_shift": 0.2})
    command = run.command()
    assert command.startswith(f"knowpack capacity {path} --max-negative-shift 0.2 --methods lora,dora --out ")
    assert "--ranks 1,4 --seeds 3 --set train.epochs=2 --set capacity.max_mmlu_drop=0.01" in command
    captured = []
    monkeypatch.setattr(driver, "run_capacity", lambda run, progress=True: captured.append(run))
    monkeypatch.setattr("knowpack.cli.capacity._summary", lambda results, out_dir: None)
    result = CliRunner().invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 0, result.output
    assert captured[0].spec == run.spec and captured[0].command() == command
    assert captured[0].out_dir == tmp_path / "another folder" and captured[0].spec.train.epochs == 2
