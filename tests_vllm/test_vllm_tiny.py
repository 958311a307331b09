"""The vLLM backend on the tiny random Llama: answers, stops, seeds, adapter checks, lifecycle."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import psutil
import pytest
import torch

from knowpack.errors import KnowpackError
from knowpack.models.loading import load_model
from knowpack.probe.backends import get_backend
from knowpack.probe.backends.reference import naive_generate
from knowpack.probe.backends.vllm import VLLMBackend, VLLMEngine, VLLMSettings
from knowpack.probe.matching import answer_span
from tests_vllm.conftest import save_lora

QUESTIONS = [f"Question: What is the capital of country number {i}?" for i in range(12)]


def _prompts(backend) -> list[str]:
    return [backend.render([{"role": "user", "content": q}]) for q in QUESTIONS]


def _peft_loaded(model_dir, adapter):
    from peft import PeftModel

    loaded = load_model(str(model_dir))
    loaded.model = PeftModel.from_pretrained(loaded.model, str(adapter)).eval()
    return loaded


def test_greedy_spans_match_transformers_generate(tiny_engine, tiny_model_dir):
    backend = tiny_engine.backend()
    prompts = _prompts(backend)
    answers = backend.greedy(prompts, 24)
    reference = naive_generate(load_model(str(tiny_model_dir)), prompts, max_new_tokens=24)
    assert [answer_span(a) for a in answers] == [answer_span(r["greedy"]) for r in reference]
    # the random model often opens with blank lines: those answers went through a continuation
    assert any(r["greedy"].startswith("\n") and answer_span(r["greedy"]) for r in reference)


def test_adapter_answers_match_peft_and_differ_from_base(tiny_engine, tiny_model_dir, tiny_adapter):
    base = tiny_engine.backend()
    tuned = base.with_adapter(tiny_adapter)
    assert tuned.engine is tiny_engine  # one engine serves both
    prompts = _prompts(base)
    answers = tuned.greedy(prompts, 24)
    reference = naive_generate(_peft_loaded(tiny_model_dir, tiny_adapter), prompts, max_new_tokens=24)
    assert [answer_span(a) for a in answers] == [answer_span(r["greedy"]) for r in reference]
    assert answers != base.greedy(prompts, 24)


def test_seeded_samples_do_not_depend_on_batch_mates(tiny_engine):
    backend = tiny_engine.backend()
    prompts = _prompts(backend)
    seeds = [1000 + i for i in range(len(prompts))]
    everything = backend.sample(prompts, 4, temperature=0.5, top_k=40, max_new_tokens=16, seeds=seeds)
    alone = backend.sample(prompts[3:5], 4, temperature=0.5, top_k=40, max_new_tokens=16, seeds=seeds[3:5])
    assert alone == everything[3:5]
    other_seeds = backend.sample(prompts[3:5], 4, temperature=0.5, top_k=40, max_new_tokens=16, seeds=[7, 8])
    assert other_seeds != alone
    assert all(len(set(s)) > 1 for s in everything)  # the n samples of one prompt are distinct draws


def test_over_rank_adapter_refused_and_engine_keeps_serving(tiny_engine, tiny_model_dir, tmp_path):
    wide = save_lora(tiny_model_dir, tmp_path / "rank16", rank=16, targets=["q_proj"])
    backend = tiny_engine.backend()
    with pytest.raises(KnowpackError, match="rank 16.*max_lora_rank 8"):
        backend.with_adapter(wide)
    assert backend.greedy(_prompts(backend)[:2], 8)  # still alive


def test_foreign_base_and_unknown_modules_refused(tiny_engine, tiny_adapter, tmp_path):
    foreign = tmp_path / "run" / "adapter"
    shutil.copytree(tiny_adapter, foreign)
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"stage": "train", "inputs": {"model": "0123abcd"}}))
    with pytest.raises(KnowpackError, match="trained on model 0123abcd"):
        tiny_engine.backend(foreign)
    odd = tmp_path / "odd"
    shutil.copytree(tiny_adapter, odd)
    config = json.loads((odd / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj", "wq_linear"]
    (odd / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(KnowpackError, match="does not have: wq_linear"):
        tiny_engine.backend(odd)
    backend = tiny_engine.backend()
    assert backend.greedy(_prompts(backend)[:2], 8)


def test_matching_manifest_is_accepted(tiny_engine, tiny_adapter, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_adapter, run / "adapter")
    (run / "manifest.json").write_text(json.dumps({"inputs": {"model": tiny_engine.model_hash}}))
    assert tiny_engine.backend(run / "adapter").greedy(["hello"], 4) is not None


def test_prompt_longer_than_the_engine_allows(tiny_engine):
    backend = tiny_engine.backend()
    with pytest.raises(KnowpackError, match="max_model_len 512"):
        backend.greedy([backend.render([{"role": "user", "content": "xyzzy plugh " * 400}])], 8)
    assert backend.greedy(_prompts(backend)[:1], 4)


def test_probe_refuses_a_too_long_fact_before_any_request(tiny_engine, tmp_path):
    """The backend states the engine's context (max_model_len), so the probe's pre-check names the
    offending fact up front instead of failing inside vLLM mid-run."""
    from knowpack.facts.schema import Fact
    from knowpack.probe.config import ProbeConfig
    from knowpack.probe.runner import run_probe

    backend = tiny_engine.backend()
    assert backend.context_length == tiny_engine.settings.max_model_len == 512
    facts = [Fact(id=f"c{i}", subject=f"Country {i}", relation="capital", question=q, answer=f"City{i}")
             for i, q in enumerate(QUESTIONS)]
    facts.append(Fact(id="huge", subject="Country X", relation="capital",
                      question="What is the capital of " + "xyzzy plugh " * 300 + "?", answer="Nowhere"))
    config = ProbeConfig(prompts=1, shots=1, samples=0, max_new_tokens=8)
    before = backend.forward_passes
    with pytest.raises(KnowpackError, match=r"(?<!\d)1 fact\(s\) have few-shot prompts longer than the "
                                            r"model's context of 512"):
        run_probe(config, facts, backend, tmp_path / "probe", shot_pool=facts[:2], progress=False)
    assert backend.forward_passes == before  # nothing was sent to the engine


def test_batch_invariant_mode_is_refused_on_cpu(tiny_model_dir):
    with pytest.raises(KnowpackError, match="VLLM_BATCH_INVARIANT"):
        VLLMEngine(str(tiny_model_dir), VLLMSettings(batch_invariant=True))


def test_settings_are_strict(tiny_model_dir):
    with pytest.raises(ValueError):
        VLLMSettings(kv_cache_gib=float("inf"))
    with pytest.raises(KnowpackError, match="kv_cache_gibs: unknown key"):  # before any engine starts
        get_backend("vllm", str(tiny_model_dir), kv_cache_gibs=1)


def test_auto_backend_is_transformers_without_gpu(tiny_model_dir):
    from knowpack.probe.backends.hf import HFBackend

    assert not torch.cuda.is_available()
    assert isinstance(get_backend("auto", load_model(str(tiny_model_dir))), HFBackend)


def test_probe_config_backend_vllm_runs_through_the_registry(tiny_model_dir, tmp_path):
    """`probe.backend: vllm` in a YAML: run_probe builds the engine from the name (the path every
    stage takes), with the probe's options and the hf engine's knobs in the common signature."""
    from knowpack.facts.schema import Fact
    from knowpack.probe.config import ProbeConfig
    from knowpack.probe.runner import run_probe

    facts = [Fact(id=f"c{i}", subject=f"Country {i}", relation="capital", question=q, answer=f"City{i}")
             for i, q in enumerate(QUESTIONS)]
    config = ProbeConfig(prompts=2, shots=1, samples=0, max_new_tokens=8, backend="vllm")
    summary = run_probe(config, facts, str(tiny_model_dir), tmp_path / "vllm", progress=False)
    reference = run_probe(config.model_copy(update={"backend": "hf"}), facts, str(tiny_model_dir),
                          tmp_path / "hf", progress=False)
    vllm_rows = (tmp_path / "vllm" / "categories.jsonl").read_text()
    assert summary.n == reference.n == len(facts) - 2  # two facts are the 2 × 1 shots
    assert vllm_rows == (tmp_path / "hf" / "categories.jsonl").read_text()  # greedy spans agree in fp32


def _leftovers(folder: str) -> set[str]:
    """vLLM's files in the temp folder (rendezvous files, IPC sockets, our private folders) and
    shared-memory segments (its message queues between processes)."""
    found = {name for name in os.listdir(folder) if "vllm" in name.lower()}
    if os.path.isdir("/dev/shm"):
        found |= {f"shm:{name}" for name in os.listdir("/dev/shm") if name.startswith("psm_")}
    return found


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "own-processes"])
def test_engine_leaves_no_process_socket_or_file(tiny_model_dir, in_process):
    me = psutil.Process()
    temp = tempfile.gettempdir()
    before_children = {p.pid for p in me.children(recursive=True)}
    before_files = _leftovers(temp)
    torch.set_num_threads(1)  # deliberately set: the engine must keep it, and leave it settable
    try:
        backend = get_backend("vllm", str(tiny_model_dir), kv_cache_gib=0.25, max_model_len=512,
                              in_process=in_process)
        assert isinstance(backend, VLLMBackend) and backend.owns_engine
        if not in_process:
            assert me.children(recursive=True)  # the engine core runs in its own process
            assert backend.engine._scope.private_dir.is_dir()
        assert backend.greedy(["hello there"], 4)
        private = backend.engine._scope.private_dir
        backend.close()
        backend.close()  # idempotent
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert torch.get_num_threads() == 2  # vLLM's no-op replacement was undone
    finally:
        torch.set_num_threads(2)
    deadline = time.monotonic() + 30  # not reaped here: a zombie left by close() would count
    while {p.pid for p in me.children(recursive=True)} - before_children and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [(p.pid, p.status()) for p in me.children(recursive=True) if p.pid not in before_children]
    assert not left
    assert _leftovers(temp) <= before_files
    assert private is None or not private.exists()
    with pytest.raises(KnowpackError, match="shut down"):
        backend.greedy(["hello"], 4)
