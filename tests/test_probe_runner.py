"""run_probe on a scripted backend: outputs, early exit, resume, bad input."""

import json

import pytest

from knowpack.errors import KnowpackError
from knowpack.probe.config import ProbeConfig
from knowpack.probe.artifacts import CategoryRow
from knowpack.probe.runner import greedy_answers_for, reliability, run_probe
from test_probe_fakes import CrashingBackend, ScriptedBackend, fact_set

CFG = ProbeConfig(prompts=6, shots=2, samples=8, batch_size=8)


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_outputs_follow_the_contract(tmp_path):
    facts = fact_set(60)
    summary = run_probe(CFG, facts, ScriptedBackend(), tmp_path, progress=False)
    rows = read_lines(tmp_path / "categories.jsonl")
    held = set(summary.held_out_ids)
    assert len(held) == CFG.prompts * CFG.shots
    assert [r["id"] for r in rows] == [f.id for f in facts if f.id not in held]
    assert all(list(r) == list(CategoryRow.model_fields) for r in rows)
    by_kind = {}
    for fact in facts:
        if fact.id not in held:
            by_kind.setdefault(fact.question[1:fact.question.index("]")], set()).add(
                next(r["category"] for r in rows if r["id"] == fact.id))
    assert by_kind["hk"] == {"HighlyKnown"}
    assert by_kind["mk"] <= {"MaybeKnown", "HighlyKnown", "Unknown", "WeaklyKnown"} and "MaybeKnown" in by_kind["mk"]
    assert by_kind["uk"] == {"Unknown"}
    assert "WeaklyKnown" in by_kind["wk"]
    refused = {r["id"] for r in rows if r["refused"]}
    assert refused and all("ref" in next(f.question for f in facts if f.id == i) for i in refused)
    for name in ("generations.jsonl", "summary.json", "manifest.json", "shots.json"):
        assert (tmp_path / name).is_file()
    assert not (tmp_path / "categories.partial.jsonl").exists()
    assert sum(summary.counts.values()) == len(rows)
    assert set(summary.per_tier) == {"head", "torso", "tail"}
    gens = read_lines(tmp_path / "generations.jsonl")
    assert {g["kind"] for g in gens} == {"greedy", "sample"}
    assert len(gens) == summary.greedy_generations + summary.sampled_generations
    shots = json.loads((tmp_path / "shots.json").read_text())
    assert len(shots["sets"]) == CFG.prompts and {s["id"] for st in shots["sets"] for s in st} == held


def test_early_exit_keeps_categories_and_saves_work(tmp_path):
    facts = fact_set(80)
    fast, full = ScriptedBackend(), ScriptedBackend()
    run_probe(CFG, facts, fast, tmp_path / "fast", progress=False)
    run_probe(CFG.model_copy(update={"early_exit": False}), facts, full, tmp_path / "full", progress=False)
    a = read_lines(tmp_path / "fast" / "categories.jsonl")
    b = read_lines(tmp_path / "full" / "categories.jsonl")
    assert [r["category"] for r in a] == [r["category"] for r in b]
    assert [r["refused"] for r in a] == [r["refused"] for r in b]
    assert all(r["samples"] == CFG.prompts * CFG.samples for r in b)
    assert fast.generated < 0.5 * full.generated


def test_relation_pool_and_three_categories(tmp_path):
    cfg = CFG.model_copy(update={"shot_pool": "relation", "samples": 0})
    summary = run_probe(cfg, fact_set(40), ScriptedBackend(), tmp_path, progress=False)
    assert summary.held_out_ids == [] and summary.n == 40
    assert summary.counts["WeaklyKnown"] == 0


@pytest.mark.parametrize("crash_at", [1, 3, 7, 40])
def test_resume_after_kill_is_byte_identical(tmp_path, crash_at):
    facts = fact_set(50)
    first = ScriptedBackend()
    run_probe(CFG, facts, first, tmp_path / "clean", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_probe(CFG, facts, CrashingBackend(ScriptedBackend(), crash_at), tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "categories.jsonl").exists()
    partial = (tmp_path / "resumed" / "categories.partial.jsonl").read_text().splitlines()
    second = ScriptedBackend()
    run_probe(CFG, facts, second, tmp_path / "resumed", progress=False)
    if len(partial) > 1:  # whole chunks finished before the kill are not probed again
        assert second.generated < first.generated
    for name in ("categories.jsonl", "generations.jsonl"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


def test_finished_run_is_reused(tmp_path):
    facts = fact_set(30)
    run_probe(CFG, facts, ScriptedBackend(), tmp_path, progress=False)
    again = ScriptedBackend()
    run_probe(CFG, facts, again, tmp_path, progress=False)
    assert again.generated == 0


def test_limit_probes_first_facts(tmp_path):
    summary = run_probe(CFG, fact_set(40), ScriptedBackend(), tmp_path, progress=False, limit=5)
    assert summary.n == 5


@pytest.mark.parametrize("update, n_facts, match", [
    ({"prompts": 10, "shots": 10}, 30, "packaged exemplar pool"),
    ({"shot_pool": "relation", "shots": 12}, 30, "usable shot facts"),
])
def test_pool_too_small_errors_before_writing(tmp_path, update, n_facts, match):
    with pytest.raises(KnowpackError, match=match):
        run_probe(CFG.model_copy(update=update), fact_set(n_facts), ScriptedBackend(), tmp_path / "out",
                  progress=False)
    assert not (tmp_path / "out").exists()


def test_small_file_takes_its_shots_from_the_packaged_pool(tmp_path):
    """The paper's 10 prompts × 4 shots on a 40-fact file: every fact probed, shots from the pool."""
    from knowpack.probe.exemplars import EXEMPLAR_POOL_NAME, load_exemplar_pool

    facts = fact_set(40)
    summary = run_probe(ProbeConfig(prompts=10, shots=4, samples=0), facts, ScriptedBackend(), tmp_path,
                        progress=False)
    assert summary.n == 40 and summary.held_out_ids == [] and summary.exemplars == EXEMPLAR_POOL_NAME
    shots = json.loads((tmp_path / "shots.json").read_text())
    pool_ids = {f.id for f in load_exemplar_pool()}
    used = [f["id"] for s in shots["sets"] for f in s]
    assert len(used) == 40 and len(set(used)) == 40 and set(used) <= pool_ids
    again = run_probe(ProbeConfig(prompts=10, shots=4, samples=0), fact_set(81), ScriptedBackend(),
                      tmp_path / "big", progress=False)
    assert again.exemplars == "held_out" and len(again.held_out_ids) == 40  # a large file keeps the paper's scheme


def test_duplicate_ids_and_empty_input(tmp_path):
    facts = fact_set(20)
    with pytest.raises(KnowpackError, match="more than once"):
        run_probe(CFG, facts + facts[:1], ScriptedBackend(), tmp_path, progress=False)
    with pytest.raises(KnowpackError):
        run_probe(CFG, [], ScriptedBackend(), tmp_path, progress=False)


def test_greedy_answers_and_reliability():
    facts = fact_set(30)
    pool, targets = facts[:12], facts[12:]
    cfg = CFG.model_copy(update={"prompts": 3, "shots": 4})
    answers = greedy_answers_for(targets, ScriptedBackend(), cfg, shot_pool=pool)
    assert set(answers) == {f.id for f in targets} and all(len(v) == 3 for v in answers.values())
    result = reliability(targets, ScriptedBackend(), cfg, shot_pool=pool)
    for fact in targets:
        if fact.question.startswith("[hk]"):
            assert result["per_fact"][fact.id] == 1.0
        if fact.question.startswith("[uk]"):
            assert result["per_fact"][fact.id] == 0.0
    assert 0 < result["reliability"] < 1
