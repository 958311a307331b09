"""The vLLM backend on the default model against knowpack's transformers engine, in fp32.

The same probe (48 default facts × 4 few-shot prompts, greedy only, so every category is decided
by greedy answers) runs through `knowpack probe --backend hf` and through one vLLM engine, with
and without an adapter trained by `knowpack train`: answer spans and categories must be identical.
"""

from __future__ import annotations

import json
from pathlib import Path

from knowpack.facts.io import read_facts
from knowpack.probe.config import ProbeConfig
from knowpack.probe.runner import run_probe
from tests_vllm.conftest import DEFAULT_FACTS

CONFIG = ProbeConfig(prompts=4, shots=4, samples=0, batch_size=16)


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "categories.jsonl").read_text().splitlines()]


def _texts(folder: Path) -> list[str]:
    """Every greedy generation of a probe, whole (not just its answer span)."""
    return [json.loads(line)["text"] for line in (folder / "generations.jsonl").read_text().splitlines()]


def _vllm_probe(backend, facts: Path, out: Path) -> list[dict]:
    run_probe(CONFIG, read_facts(facts), backend, out, progress=False)
    return _rows(out)


def _assert_same(ours: Path, theirs: Path) -> None:
    rows, reference = _rows(ours), _rows(theirs)
    assert len(rows) == DEFAULT_FACTS - CONFIG.prompts * CONFIG.shots >= 40
    assert [r["id"] for r in rows] == [r["id"] for r in reference]
    assert [(r["id"], r["greedy_answers"]) for r in rows] == [(r["id"], r["greedy_answers"]) for r in reference]
    assert [r["category"] for r in rows] == [r["category"] for r in reference]
    assert _texts(ours) == _texts(theirs)  # the stops agree too, not only the spans


def test_base_model_answers_and_categories_match_transformers(default_engine, default_facts, hf_probes, tmp_path):
    ours = _vllm_probe(default_engine.backend(), default_facts, tmp_path / "vllm")
    _assert_same(tmp_path / "vllm", hf_probes["base"])
    assert len({r["category"] for r in ours}) >= 2  # a probe that tells facts apart


def test_adapter_answers_and_categories_match_transformers(default_engine, default_facts, default_adapter,
                                                           hf_probes, tmp_path):
    tuned = default_engine.backend().with_adapter(default_adapter)
    _vllm_probe(tuned, default_facts, tmp_path / "vllm-adapter")
    _assert_same(tmp_path / "vllm-adapter", hf_probes["adapter"])
    assert _texts(tmp_path / "vllm-adapter") != _texts(hf_probes["base"])  # the adapter acts


def test_seeded_samples_reproducible_on_the_default_model(default_engine, default_facts):
    backend = default_engine.backend()
    facts = read_facts(default_facts)[:6]
    prompts = [backend.render([{"role": "user", "content": f"Question: {f.question}"}]) for f in facts]
    seeds = [11 * i + 5 for i in range(len(prompts))]
    first = backend.sample(prompts, 4, temperature=0.5, top_k=40, max_new_tokens=32, seeds=seeds)
    again = backend.sample(prompts[::-1], 4, temperature=0.5, top_k=40, max_new_tokens=32, seeds=seeds[::-1])
    assert again[::-1] == first
