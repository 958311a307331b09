"""The transformers backend on a tiny random Llama: fast path == naive reference, seeds, adapters."""

import json

import pytest
import torch

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.models import load_model
from knowpack.probe.backends import get_backend
from knowpack.probe.backends.engine_config import EngineConfig
from knowpack.probe.backends.hf import span_complete
from knowpack.probe.backends.reference import naive_generate
from knowpack.probe.config import ProbeConfig
from knowpack.probe.matching import answer_span, is_correct
from knowpack.probe.prompts import build_shot_sets, fewshot_messages
from knowpack.probe.runner import run_probe
from knowpack.probe.slick import categorize
from test_probe_fakes import one_thread  # noqa: F401  (fixture)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lively(tiny_model_dir):
    """The tiny model with large random weights, so greedy answers vary (default init repeats "\\n")."""
    loaded = load_model(str(tiny_model_dir))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in loaded.model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return loaded


def facts(n=14):
    return [Fact(id=f"t{i}", subject=f"Thing {i}", relation=f"r{i % 3}",
                 question=f"What is the capital of country {i}?" + " please" * (i % 4), answer=f"x{i}")
            for i in range(n)]


def prompts_for(loaded, fs, shots):
    backend = get_backend("hf", loaded)
    return [backend.render(fewshot_messages(f.question, shots)) for f in fs]


def test_span_complete():
    assert not span_complete("\n\n")
    assert not span_complete("Answer:\n")
    assert span_complete("Paris\n")
    assert not span_complete("Paris")


@pytest.mark.parametrize("prefix_reuse", [True, False])
def test_fast_greedy_equals_naive_generate(lively, prefix_reuse):
    fs = facts()
    ps = prompts_for(lively, fs, fs[:2])
    fast = get_backend("hf", lively, batch_size=4, engine_config=EngineConfig(prefix_reuse=prefix_reuse)).greedy(ps, 24)
    naive = naive_generate(lively, ps, max_new_tokens=24)
    assert [answer_span(t) for t in fast] == [answer_span(r["greedy"]) for r in naive]
    assert sum(bool(answer_span(t)) for t in fast) >= len(fs) // 2  # the comparison is not vacuous
    # stop at newline: nothing after the first answer line
    for text in fast:
        head, sep, tail = text.partition("\n")
        assert not answer_span(head) or tail == ""


def test_samples_depend_only_on_request_seed(lively):
    ps = prompts_for(lively, facts(6), [])
    backend = get_backend("hf", lively, batch_size=3)
    kw = dict(temperature=0.7, top_k=20, max_new_tokens=8)
    all_six = backend.sample(ps, 4, seeds=[10, 11, 12, 13, 14, 15], **kw)
    two = backend.sample([ps[4], ps[1]], 4, seeds=[14, 11], **kw)
    assert two == [all_six[4], all_six[1]]
    assert len({tuple(s) for s in all_six}) > 1
    assert backend.sample(ps[:1], 4, seeds=[99], **kw) != all_six[:1]


def test_run_probe_matches_naive_categories(lively, tmp_path):
    fs = facts(16)
    shots, targets = fs[:4], fs[4:]
    cfg = ProbeConfig(prompts=2, shots=2, samples=0, batch_size=5, max_new_tokens=16)
    # Make some answers right: the alias of each target is what the naive loop says for prompt 0.
    ps0 = prompts_for(lively, targets, build_shot_sets(shots, cfg)[0])
    naive0 = [answer_span(r["greedy"]) for r in naive_generate(lively, ps0, max_new_tokens=16)]
    targets = [f.model_copy(update={"answer": a or "zz", "aliases": [a or "zz"]}) for f, a in zip(targets, naive0)]
    run_probe(cfg, targets, lively, tmp_path, shot_pool=shots, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "categories.jsonl").read_text().splitlines()]
    sets = json.loads((tmp_path / "shots.json").read_text())["sets"]
    shot_sets = [[Fact.model_validate(s) for s in st] for st in sets]
    naive = [[r["greedy"] for r in naive_generate(lively, prompts_for(lively, targets, shot_sets[j]),
                                                   max_new_tokens=16)] for j in range(2)]
    for i, (fact, row) in enumerate(zip(targets, rows)):
        flags = [is_correct(naive[j][i], fact.aliases) for j in range(2)]
        assert row["category"] == categorize(flags, 0, 0)
        assert row["greedy_answers"] == [answer_span(naive[j][i]) for j in range(len(row["greedy_answers"]))]
    assert {r["category"] for r in rows} & {"HighlyKnown", "MaybeKnown"}


def _lora(model_dir, out, r=2):
    from peft import LoraConfig, get_peft_model

    loaded = load_model(str(model_dir))
    peft_model = get_peft_model(loaded.model, LoraConfig(r=r, target_modules=["up_proj", "down_proj"],
                                                         task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return peft_model, loaded


def test_adapter_loads_and_changes_answers(tiny_model_dir, tmp_path):
    peft_model, loaded = _lora(tiny_model_dir, tmp_path / "adapter")
    base = load_model(str(tiny_model_dir))
    ps = prompts_for(base, facts(4), [])
    plain = get_backend("hf", base).greedy(ps, 8)
    with_adapter = get_backend("hf", load_model(str(tiny_model_dir)), adapter=str(tmp_path / "adapter")).greedy(ps, 8)
    # an already-wrapped in-memory PeftModel (the trainer's) gives the same answers, mode restored
    peft_model.train()
    loaded.model = peft_model
    in_memory = get_backend("hf", loaded).greedy(ps, 8)
    assert peft_model.training
    assert in_memory == with_adapter and with_adapter != plain


def test_adapter_for_another_model_is_a_clear_error(tiny_model_dir, tmp_path):
    from conftest import build_tiny_llama

    other = build_tiny_llama(tmp_path / "other", hidden=32)
    _lora(other, tmp_path / "adapter")
    with pytest.raises(KnowpackError, match="does not fit"):
        get_backend("hf", load_model(str(tiny_model_dir)), adapter=str(tmp_path / "adapter"))
    with pytest.raises(KnowpackError, match="not a PEFT adapter"):
        get_backend("hf", load_model(str(tiny_model_dir)), adapter=str(tmp_path))


def test_resume_with_real_backend_is_byte_identical(lively, tmp_path):
    from test_probe_fakes import CrashingBackend

    fs = facts(14)
    cfg = ProbeConfig(prompts=2, shots=1, samples=3, batch_size=4, max_new_tokens=10)

    def backend():
        return get_backend("hf", lively, batch_size=cfg.batch_size, cache_prefixes=True)

    run_probe(cfg, fs, backend(), tmp_path / "clean", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_probe(cfg, fs, CrashingBackend(backend(), 5), tmp_path / "resumed", progress=False)
    run_probe(cfg, fs, backend(), tmp_path / "resumed", progress=False)
    for name in ("categories.jsonl", "generations.jsonl"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
