"""`evaluate` end to end on the tiny model: canary, probes, every metric, outputs, reuse, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from artifact_fakes import write_mix_folder
from test_evaluate_helpers import make_adapter

from knowpack.errors import KnowpackError
from knowpack.evaluate.config import EvalConfig
from knowpack.facts.schema import Fact

CITIES = ["Paris", "Lima", "Suva", "Rome", "Oslo", "Bern", "Kyiv", "Riga"]


def _facts() -> list[Fact]:
    facts = []
    for i, city in enumerate(CITIES):
        facts.append(Fact(id=f"c{i}", subject=f"Land{i}", relation="capital", question=f"What is the capital of Land{i}?",
                          answer=city, tier=("head", "torso", "tail")[i % 3], domain="Place",
                          paraphrases=[f"Which city is the capital of Land{i}?", f"Land{i} has which capital?"]))
        facts.append(Fact(id=f"r{i}", subject=f"River{i}", relation="river_mouth", question=f"Where does River{i} end?",
                          answer=f"Sea{i}", tier=("head", "torso", "tail")[i % 3]))
    return facts


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    """Facts, a base probe, a mix pointing to it, a changed adapter and a fresh (inert) one."""
    from knowpack.io import write_jsonl
    from knowpack.models.loading import load_model
    from knowpack.probe.config import ProbeConfig
    from knowpack.probe.runner import run_probe

    root = tmp_path_factory.mktemp("evaluate")
    facts = _facts()
    write_jsonl(root / "facts.jsonl", facts)
    config = ProbeConfig(prompts=2, shots=1, samples=0, max_new_tokens=3, batch_size=32)
    run_probe(config, facts, load_model(str(tiny_model_dir)), root / "probe", progress=False)
    probed = [json.loads(line)["id"] for line in (root / "probe" / "categories.jsonl").read_text().splitlines()]
    trained = [f for f in facts if f.id in probed and f.id.startswith("c")][:2]
    rows = [{"id": f"{f.id}#unknown", "fact_id": f.id, "question": f.question, "answer": f.answer, "role": "unknown"}
            for f in trained]
    # The first paraphrase of each trained fact is trained on: it must not count as generalization.
    rows += [{"id": f"{f.id}#paraphrase-0", "fact_id": f.id, "question": f.paraphrases[0], "answer": f.answer,
              "role": "paraphrase"} for f in trained]
    heldout = [fid for fid in probed if fid not in {f.id for f in trained}][:6]
    by_id = {f.id: f for f in facts}
    mix = write_mix_folder(root / "mix", rows, {"trained_unknown": [f.id for f in trained], "trained_known": [],
                                                 "heldout": {"Unknown": heldout}, "retention": heldout[:2]},
                           [by_id[i] for i in dict.fromkeys([*(f.id for f in trained), *heldout])],
                           probe_dir=root / "probe")
    return {"root": root, "model": tiny_model_dir, "mix": mix, "facts": root / "facts.jsonl",
            "adapter": make_adapter(tiny_model_dir, root / "adapter"),
            "fresh": make_adapter(tiny_model_dir, root / "fresh", trained=False), "probed": probed,
            "trained": [f.id for f in trained]}


def _evaluate(setup, out: Path, adapter: str = "adapter", **overrides):
    from knowpack.evaluate.runner import evaluate
    from knowpack.models.loading import load_model

    config = EvalConfig(facts=str(setup["facts"]), **{"benchmarks": [], **overrides})
    return evaluate(config, load_model(str(setup["model"])), setup[adapter], setup["mix"], out, progress=False)


def test_full_evaluation_outputs(setup):
    import pandas as pd

    out = setup["root"] / "eval"
    result = _evaluate(setup, out, benchmarks=["mmlu"], mmlu_subjects=["astronomy"], mmlu_limit=2, mmlu_shots=1)
    metrics = {**result.sections, "meta": result.meta.model_dump()}
    assert list(metrics)[:9] == ["canary", "reliability", "shifts", "floors", "refusals", "collapse",
                                 "explanations", "bits", "benchmarks"]
    from safetensors.torch import load_file

    saved = load_file(str(setup["adapter"] / "adapter_model.safetensors"))
    assert metrics["bits"]["trainable_parameters"] == sum(t.numel() for t in saved.values())
    assert metrics["bits"]["likelihood"]["trained_facts"] == 2
    assert metrics["canary"]["max_abs_logit_diff"] > 0
    rel = metrics["reliability"]
    assert rel["n_facts"] == 2 and rel["n_pairs"] == 4 and 0 <= rel["reliability"] <= 1
    gen = rel["generalization"]
    assert gen["n_paraphrases"] == 2 and gen["excluded_trained_paraphrases"] == 2
    assert metrics["shifts"]["trained"]["all"]["n"] == 2
    assert metrics["shifts"]["untrained"]["all"]["n"] == len(setup["probed"]) - 2
    untrained = len(setup["probed"]) - 2
    for yardstick in ("paired_floor", "prompt_sensitivity", "second_draw"):
        assert metrics["shifts"]["untrained"][yardstick]["n"] == untrained
    assert metrics["floors"]["paired_floor"]["n"] == untrained
    assert metrics["benchmarks"]["mmlu"]["base"]["n_questions"] == 2
    assert "delta_acc" in metrics["benchmarks"]["mmlu"]
    assert metrics["meta"]["n_facts"] == len(setup["probed"])
    table = pd.read_parquet(out / "per_fact.parquet")
    assert len(table) == len(setup["probed"])
    assert {"base_category", "adapted_category", "paired_floor_category", "prompt_sensitivity_category",
            "adapted_category_other_prompts", "trained", "adapted_refusal_rate"} <= set(table.columns)
    assert table.set_index("id").loc[setup["trained"][0], "role"] == "unknown"
    with open(out / "transitions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["comparison"] for r in rows} == {"base→adapted", "base→base(same prompts)", "base→base(other prompts)",
                                              "base→adapted(other prompts)"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "evaluate" and manifest["inputs"]["adapter"] and manifest["inputs"]["model"]
    # Same inputs, same folder: the stored metrics come back without recomputation.
    again = _evaluate(setup, out, benchmarks=["mmlu"], mmlu_subjects=["astronomy"], mmlu_limit=2, mmlu_shots=1)
    assert again.to_json() == json.loads((out / "metrics.json").read_text())
    # Other settings in the same folder: refused before any work, the finished results untouched.
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(KnowpackError, match="already holds a finished evaluate run with other settings"):
        _evaluate(setup, out, benchmarks=[])
    assert (out / "metrics.json").read_bytes() == before


def test_inert_adapter_is_refused_before_any_number(setup):
    from knowpack.evaluate.runner import evaluate
    from knowpack.models.loading import load_model

    out = setup["root"] / "eval-fresh"
    loaded = load_model(str(setup["model"]))
    with pytest.raises(KnowpackError, match="does not change the model"):
        evaluate(EvalConfig(facts=str(setup["facts"]), benchmarks=[]), loaded, setup["fresh"], setup["mix"], out,
                 progress=False)
    assert not (out / "metrics.json").exists()
    # The caller's model is handed back without the adapter's layers (a study reuses it).
    assert not any("lora" in name for name, _ in loaded.model.named_modules())


def test_cli_evaluate(setup):
    from typer.testing import CliRunner

    from knowpack.cli.app import app

    out = setup["root"] / "eval-cli"
    result = CliRunner().invoke(app, [
        "evaluate", "--model", str(setup["model"]), "--adapter", str(setup["adapter"]), "--mix", str(setup["mix"]),
        "--out", str(out), "--facts", str(setup["facts"]), "--benchmarks", "none", "--no-noise-floor",
        "--metrics", "canary,reliability,shifts,floors,benchmarks", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "reliability" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["floors"]["status"] == "disabled"
    assert set(metrics) == {"canary", "reliability", "shifts", "floors", "benchmarks", "meta", "format_version"}


def test_base_answer_log2p_of_heldout_facts_are_computed_once_per_shared_cache(setup, tmp_path, monkeypatch):
    """Cells sharing a base cache reuse the base model's held-out log-probabilities; the trained
    group is measured per cell; cached values are exactly what a fresh computation gives."""
    from knowpack.evaluate import inputs
    from knowpack.models.loading import load_model

    heldout = [f for f in setup["probed"] if f not in setup["trained"]][:3]
    monkeypatch.setattr(inputs, "bits_fact_ids", lambda ctx: (list(setup["trained"]), heldout))
    config = EvalConfig(facts=str(setup["facts"]), benchmarks=[])
    loaded = load_model(str(setup["model"]))

    def log2p(adapter: str, cache: Path) -> dict:
        ctx = inputs.EvalContext(config, loaded, setup[adapter], setup["mix"], tmp_path / adapter, progress=False,
                                 base_cache=cache)
        try:
            return ctx.get("answer_log2p")
        finally:
            ctx.close()

    first = log2p("adapter", tmp_path / "shared")
    files = list((tmp_path / "shared" / "answer-log2p").glob("*.json"))
    assert len(files) == 1 and set(json.loads(files[0].read_text())) == set(heldout)
    assert set(first["base"]) == set(first["adapted"]) == set(setup["trained"]) | set(heldout)
    assert first["base"] != first["adapted"]
    # Mark the cached values: the next cell must read them instead of recomputing.
    marked = {fid: [v - 1.0 for v in values] for fid, values in json.loads(files[0].read_text()).items()}
    files[0].write_text(json.dumps(marked))
    second = log2p("fresh", tmp_path / "shared")
    assert all(second["base"][f] == marked[f] for f in heldout)
    # The trained group is not shared: measured again, the same as in the first cell.
    assert all(second["base"][f] == first["base"][f] for f in setup["trained"])
    fresh = log2p("fresh", tmp_path / "alone")
    assert all(fresh["base"][f] == first["base"][f] for f in heldout)
    # A damaged cache file is computed again (and rewritten), never trusted or fatal.
    files[0].write_text('{"truncated": [')
    again = log2p("fresh", tmp_path / "shared")
    assert all(again["base"][f] == first["base"][f] for f in heldout)
    assert set(json.loads(files[0].read_text())) == set(heldout)


def test_a_fully_fine_tuned_model_is_evaluated_against_the_untouched_base(setup, tmp_path):
    """Method full: the model folder is loaded beside the base model; the canary, the yardsticks and
    the bits compare the two, and the caller's model is the base model before and after."""
    import torch

    from knowpack.evaluate.runner import evaluate
    from knowpack.models.loading import load_model
    from knowpack.train import load_preset, train_adapter

    loaded = load_model(str(setup["model"]))
    weights = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    config = load_preset("smollm2", method="full", lr=1e-4, epochs=1, batch_size=2)
    summary = train_adapter(config, loaded, setup["mix"] / "train.jsonl", tmp_path / "train", progress=False)
    eval_config = EvalConfig(facts=str(setup["facts"]), benchmarks=[])
    result = evaluate(eval_config, loaded, tmp_path / "train" / "adapter", setup["mix"], tmp_path / "eval",
                      progress=False)
    assert result.sections["canary"]["max_abs_logit_diff"] > 0
    assert result.sections["canary"]["lora_b_all_zero"] is None
    assert result.sections["bits"]["trainable_parameters"] == summary["trainable_parameters"]
    # The paired floor compares the base model with itself: it must see the base, not the copy.
    assert result.sections["floors"]["paired_floor"]["greedy_answer_agreement"] == 1.0
    assert not hasattr(loaded.model, "peft_config")
    for name, param in loaded.model.named_parameters():
        assert torch.equal(param, weights[name]), name


def test_control_adapters_can_skip_the_benchmarks_without_changing_other_keys(tmp_path):
    from types import SimpleNamespace

    from knowpack.evaluate.inputs import EvalContext

    # Off only where asked: the default stays out of the dump that addresses existing evaluations.
    assert "benchmarks_on_controls" not in EvalConfig().model_dump()
    config = EvalConfig(benchmarks=["mmlu"], benchmarks_on_controls=False)
    control = EvalContext(config, None, tmp_path, tmp_path, tmp_path, mix=SimpleNamespace(trained_unknown=[]))
    result = control.get("benchmarks")
    assert result["base"] == result["adapted"] == {} and "control adapter" in result["skipped"]
