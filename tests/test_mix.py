"""Mixtures: sizes, disjointness, seeds, paraphrases, errors that never truncate, the CLI."""

from __future__ import annotations

import json

import pytest
from artifact_fakes import category_row, write_probe_folder

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.io import read_json, read_jsonl
from knowpack.mix import MixConfig, build_mixture

COUNTS = {"HighlyKnown": 30, "MaybeKnown": 15, "WeaklyKnown": 5, "Unknown": 40}


def _world(paraphrases: int = 2) -> tuple[list[Fact], list[dict]]:
    facts, categories = [], []
    for cat, n in COUNTS.items():
        for i in range(n):
            fid = f"{cat[:2]}{i}"
            facts.append(Fact(id=fid, subject=f"Land {fid}", relation="capital",
                              question=f"What is the capital of Land {fid}?", answer=f"City {fid}",
                              paraphrases=[f"Which city is the capital of Land {fid}?",
                                           f"Land {fid} has which capital?"][:paraphrases]))
            categories.append({"id": fid, "category": cat, "p_greedy": 0.0, "p_sample": 0.0})
    return facts, categories


def _config(**kw) -> MixConfig:
    return MixConfig(**({"unknown": 5, "heldout_per_category": 4, "retention_sample": 3} | kw))


@pytest.mark.parametrize("kind", ["highly_known", "maybe_known", "paraphrase"])
def test_sizes_roles_and_disjoint_sets(tmp_path, kind):
    facts, cats = _world()
    summary = build_mixture(_config(extra=2, kind=kind), facts, cats, tmp_path)
    rows = read_jsonl(tmp_path / "train.jsonl")
    assert summary.train_examples == len(rows) == 5 * 3
    assert len({r["id"] for r in rows}) == len(rows)
    assert sum(r["role"] == "unknown" for r in rows) == 5 and sum(r["role"] == kind for r in rows) == 10
    sets = read_json(tmp_path / "eval_sets.json")
    held = {fid for ids in sets["heldout"].values() for fid in ids}
    trained = set(sets["trained_unknown"]) | set(sets["trained_known"])
    assert not held & trained
    assert {r["fact_id"] for r in rows} == trained
    assert set(sets["retention"]) <= set(sets["heldout"]["HighlyKnown"]) and len(sets["retention"]) == 3
    assert {k: len(v) for k, v in sets["heldout"].items()} == dict.fromkeys(COUNTS, 4)
    category = dict((c["id"], c["category"]) for c in cats)
    assert {category[f] for f in sets["trained_unknown"]} == {"Unknown"}
    if kind == "paraphrase":
        assert not sets["trained_known"]
        paras = [r for r in rows if r["role"] == "paraphrase"]
        assert all(r["question"] != next(f.question for f in facts if f.id == r["fact_id"]) for r in paras)
    else:
        want = "HighlyKnown" if kind == "highly_known" else "MaybeKnown"
        assert {category[f] for f in sets["trained_known"]} == {want} and len(sets["trained_known"]) == 10
    manifest = read_json(tmp_path / "manifest.json")
    assert manifest["seed"] == 0 and manifest["config"]["kind"] == kind
    assert manifest["details"]["example_ids"] == [r["id"] for r in rows]
    assert read_json(tmp_path / "summary.json")["concentration"]["share"] == pytest.approx(
        (3 if kind == "paraphrase" else 1) / 15, abs=1e-4)
    eval_facts = {r["id"] for r in read_jsonl(tmp_path / "eval_facts.jsonl")}
    assert trained | held <= eval_facts


def test_seed_changes_training_but_not_heldout(tmp_path):
    facts, cats = _world()
    build_mixture(_config(seed=1), facts, cats, tmp_path / "a")
    build_mixture(_config(seed=1), list(reversed(facts)), list(reversed(cats)), tmp_path / "b")
    build_mixture(_config(seed=2), facts, cats, tmp_path / "c")
    a, b, c = (read_json(tmp_path / d / "eval_sets.json") for d in "abc")
    assert a == b  # input order does not matter
    assert a["trained_unknown"] != c["trained_unknown"]
    # Held-out sets depend on the seed only, never on n or k: a grid shares them.
    build_mixture(_config(seed=1, unknown=9, extra=1, kind="highly_known"), facts, cats, tmp_path / "d")
    assert read_json(tmp_path / "d" / "eval_sets.json")["heldout"] == a["heldout"]


def test_not_enough_facts_is_an_error_with_counts(tmp_path):
    facts, cats = _world()
    with pytest.raises(KnowpackError, match=r"needs 37 Unknown facts but only 36 are available \(40 Unknown"):
        build_mixture(_config(unknown=37), facts, cats, tmp_path / "a")
    with pytest.raises(KnowpackError, match=r"needs 15 MaybeKnown facts but only 11") as err:
        build_mixture(_config(extra=3, kind="maybe_known"), facts, cats, tmp_path / "b")
    assert "--extra" in err.value.hint
    assert not (tmp_path / "b" / "train.jsonl").exists()


def test_too_few_paraphrases_names_counts_unless_generated(tmp_path):
    facts, cats = _world(paraphrases=1)
    with pytest.raises(KnowpackError, match="fewer than 2 paraphrases .*has 1") as err:
        build_mixture(_config(extra=2), facts, cats, tmp_path / "a")
    assert "knowpack paraphrase" in err.value.hint
    generated = {f.id: [f"Name the capital of Land {f.id}.", f.question] for f in facts}
    build_mixture(_config(extra=2), facts, cats, tmp_path / "b", paraphrases=generated)
    paras = [r["question"] for r in read_jsonl(tmp_path / "b" / "train.jsonl") if r["role"] == "paraphrase"]
    assert len(paras) == 10 and all(p.startswith(("Which city", "Name the")) for p in paras)


def test_zero_extra_and_folder_reuse(tmp_path):
    facts, cats = _world()
    first = build_mixture(_config(), facts, cats, tmp_path)
    assert first.train_examples == 5
    assert build_mixture(_config(), facts, cats, tmp_path) == first
    with pytest.raises(KnowpackError, match="finished mix run with other settings"):
        build_mixture(_config(seed=5), facts, cats, tmp_path)


def test_bad_categories_are_reported(tmp_path):
    facts, cats = _world()
    cats = cats + [{"id": "ghost", "category": "Unknown"}, {"id": "Un0", "category": "Unsure"}]
    with pytest.raises(KnowpackError, match="ghost.*not in the fact file|Unsure"):
        build_mixture(_config(), facts, cats, tmp_path)


def test_cli_mix(tmp_path):
    from typer.testing import CliRunner

    from knowpack.cli.app import app
    from knowpack.io import write_jsonl

    facts, cats = _world()
    write_jsonl(tmp_path / "facts.jsonl", facts)
    probe = write_probe_folder(tmp_path / "probe", [category_row(c["id"], c["category"]) for c in cats])
    result = CliRunner().invoke(app, ["mix", "--probe", str(probe), "--facts", str(tmp_path / "facts.jsonl"),
                                      "--unknown", "4", "--extra", "1", "--kind", "highly_known",
                                      "--heldout-per-category", "3", "--out", str(tmp_path / "mix")])
    assert result.exit_code == 0, result.output
    assert "8 examples" in result.output
    from knowpack.mix.artifacts import MixFolder

    assert MixFolder(tmp_path / "mix").probe_dir == probe.resolve()


@pytest.mark.parametrize("extra", [0, 1, 10])
@pytest.mark.parametrize("kind", ["highly_known", "paraphrase"])
def test_paper_k_values_for_both_kinds(tmp_path, kind, extra):
    facts, cats = _world()
    # k = 10 paraphrases need more than the 2 template paraphrases: supply generated ones.
    generated = {f.id: [f"Variant {j}: which city is the capital of Land {f.id}?" for j in range(10)]
                 for f in facts}
    summary = build_mixture(_config(unknown=2, extra=extra, kind=kind), facts, cats, tmp_path,
                            paraphrases=generated if kind == "paraphrase" else None)
    rows = read_jsonl(tmp_path / "train.jsonl")
    assert summary.train_examples == len(rows) == 2 * (1 + extra)
    assert sum(r["role"] == "unknown" for r in rows) == 2
    assert sum(r["role"] == kind for r in rows) == 2 * extra
    manifest = read_json(tmp_path / "manifest.json")
    assert manifest["details"]["example_ids"] == [r["id"] for r in rows]
    if kind == "highly_known":
        sets = read_json(tmp_path / "eval_sets.json")
        assert len(set(sets["trained_known"])) == 2 * extra


@pytest.mark.parametrize("extra", [0, 2])
def test_control_mixture_matches_the_cell_it_controls(tmp_path, extra):
    """Same number of examples as n Unknown + n·k extras, only HighlyKnown facts, same held-out sets."""
    from knowpack.mix.artifacts import MixFolder

    facts, cats = _world()
    cell = build_mixture(_config(unknown=2, extra=extra, kind="highly_known"), facts, cats, tmp_path / "cell")
    control = build_mixture(_config(unknown=2, extra=extra, kind="control"), facts, cats, tmp_path / "control")
    assert control.train_examples == cell.train_examples == 2 * (1 + extra)
    folder = MixFolder(tmp_path / "control")
    category = {c["id"]: c["category"] for c in cats}
    assert {category[r.fact_id] for r in folder.train} == {"HighlyKnown"}
    assert {r.role for r in folder.train} == {"control"}
    assert folder.eval_sets.trained_unknown == []
    assert folder.eval_sets.heldout == MixFolder(tmp_path / "cell").eval_sets.heldout
    assert not folder.trained_ids & set(folder.eval_sets.ids("heldout"))


def test_control_mixture_refuses_a_too_small_pool(tmp_path):
    facts, cats = _world()
    with pytest.raises(KnowpackError, match="HighlyKnown facts but only"):
        build_mixture(_config(unknown=30, extra=5, kind="control"), facts, cats, tmp_path)
