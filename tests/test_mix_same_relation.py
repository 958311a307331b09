"""Same-relation mixtures: the k extras of an Unknown fact are known facts of its own relation."""

from __future__ import annotations

from collections import Counter

import pytest
from artifact_fakes import category_row, write_probe_folder

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.io import read_json, read_jsonl
from knowpack.mix import MixConfig, build_mixture
from knowpack.mix.build import same_relation_problems
from knowpack.mix.config import label_sort_key, mixture_from_label, mixture_label

# relation -> facts per category; "river" has no HighlyKnown facts, "tiny" very few known facts.
WORLD = {
    "capital": {"HighlyKnown": 12, "MaybeKnown": 6, "WeaklyKnown": 2, "Unknown": 12},
    "river": {"HighlyKnown": 0, "MaybeKnown": 14, "WeaklyKnown": 2, "Unknown": 12},
    "tiny": {"HighlyKnown": 1, "MaybeKnown": 1, "WeaklyKnown": 0, "Unknown": 6},
}


def _world(world=WORLD) -> tuple[list[Fact], list[dict]]:
    facts, categories = [], []
    for relation, counts in world.items():
        for cat, n in counts.items():
            for i in range(n):
                fid = f"{relation}-{cat[:2]}{i}"
                facts.append(Fact(id=fid, subject=f"S {fid}", relation=relation, question=f"What is {fid}?",
                                  answer=f"A {fid}"))
                categories.append({"id": fid, "category": cat})
    return facts, categories


def _config(**kw) -> MixConfig:
    return MixConfig(**({"unknown": 6, "extra": 2, "kind": "same_relation_known", "heldout_per_category": 2,
                         "retention_sample": 1, "seed": 3} | kw))


def _no_tiny(world=WORLD):
    return {k: v for k, v in world.items() if k != "tiny"}


def test_extras_share_the_relation_and_prefer_highly_known(tmp_path):
    facts, cats = _world(_no_tiny())
    by_id, category = {f.id: f for f in facts}, {c["id"]: c["category"] for c in cats}
    summary = build_mixture(_config(), facts, cats, tmp_path)
    rows = read_jsonl(tmp_path / "train.jsonl")
    assert summary.train_examples == len(rows) == 6 * 3
    sets = read_json(tmp_path / "eval_sets.json")
    extras = [r for r in rows if r["role"] == "same_relation_known"]
    assert len(extras) == 12 and len({r["fact_id"] for r in extras}) == 12  # never a known fact twice
    # Each Unknown row is followed by its k extras: all of the Unknown fact's own relation.
    for i in range(0, len(rows), 3):
        head, tail = rows[i], rows[i + 1:i + 3]
        assert head["role"] == "unknown" and category[head["fact_id"]] == "Unknown"
        assert {by_id[r["fact_id"]].relation for r in tail} == {by_id[head["fact_id"]].relation}
    held = {fid for ids in sets["heldout"].values() for fid in ids}
    assert not held & {r["fact_id"] for r in rows}
    by_relation = Counter((by_id[r["fact_id"]].relation, category[r["fact_id"]]) for r in extras)
    # capital has enough HighlyKnown facts: no MaybeKnown fact is used; river has none: MaybeKnown only.
    assert by_relation[("capital", "MaybeKnown")] == 0
    assert by_relation[("river", "HighlyKnown")] == 0
    assert set(sets["trained_known"]) == {r["fact_id"] for r in extras}


def test_falls_back_to_maybe_known_once_highly_known_run_out(tmp_path):
    world = {"capital": {"HighlyKnown": 5, "MaybeKnown": 10, "WeaklyKnown": 0, "Unknown": 10}}
    facts, cats = _world(world)
    category = {c["id"]: c["category"] for c in cats}
    build_mixture(_config(unknown=4, extra=2, heldout_per_category=1), facts, cats, tmp_path)
    extras = [r["fact_id"] for r in read_jsonl(tmp_path / "train.jsonl") if r["role"] == "same_relation_known"]
    # 4 HighlyKnown free (one held out): all of them are used, then 4 MaybeKnown.
    assert Counter(category[f] for f in extras) == {"HighlyKnown": 4, "MaybeKnown": 4}
    assert [category[f] for f in extras] == ["HighlyKnown"] * 4 + ["MaybeKnown"] * 4


def test_same_seed_same_mixture_other_seed_other_draw(tmp_path):
    facts, cats = _world(_no_tiny())
    build_mixture(_config(), facts, cats, tmp_path / "a")
    build_mixture(_config(), list(reversed(facts)), list(reversed(cats)), tmp_path / "b")
    build_mixture(_config(seed=4), facts, cats, tmp_path / "c")
    a, b, c = ((tmp_path / d / "train.jsonl").read_bytes() for d in "abc")
    assert a == b and a != c


def test_too_few_known_facts_of_a_relation_names_it_and_the_counts(tmp_path):
    facts, cats = _world()
    config = _config(unknown=12, extra=2, heldout_per_category=0)
    problems = same_relation_problems(config, facts, cats)
    assert problems and all("'tiny'" in p for p in problems), problems
    with pytest.raises(KnowpackError, match=r"relation 'tiny': \d Unknown fact\(s\) × 2 need \d+ known facts, "
                                            r"it has 1 HighlyKnown \+ 1 MaybeKnown free") as err:
        build_mixture(config, facts, cats, tmp_path / "m")
    assert "--extra" in err.value.hint
    assert not (tmp_path / "m" / "train.jsonl").exists()
    # The check reports exactly what the builder does: no problem, no error.
    ok = _config(unknown=4)
    facts2, cats2 = _world(_no_tiny())
    assert same_relation_problems(ok, facts2, cats2) == []
    build_mixture(ok, facts2, cats2, tmp_path / "ok")


def test_label_and_order():
    assert mixture_label(2, "same_relation_known") == "2 SameRel"
    assert mixture_from_label("2 SameRel") == (2, "same_relation_known")
    labels = ["Ctrl 1", "1 SameRel", "1 Para", "w/o", "1 HK"]
    assert sorted(labels, key=label_sort_key) == ["w/o", "1 HK", "1 Para", "1 SameRel", "Ctrl 1"]


def test_cli_mix_same_relation_and_its_error(tmp_path):
    from typer.testing import CliRunner

    from knowpack.cli.app import app
    from knowpack.io import write_jsonl

    facts, cats = _world()
    write_jsonl(tmp_path / "facts.jsonl", facts)
    probe = write_probe_folder(tmp_path / "probe", [category_row(c["id"], c["category"]) for c in cats])
    args = ["mix", "--probe", str(probe), "--facts", str(tmp_path / "facts.jsonl"), "--kind", "same_relation_known",
            "--heldout-per-category", "0"]
    bad = CliRunner().invoke(app, [*args, "--unknown", "30", "--extra", "1", "--out", str(tmp_path / "bad")])
    # The CLI's main() prints a KnowpackError as one line without a traceback; here it surfaces as is.
    assert bad.exit_code != 0 and isinstance(bad.exception, KnowpackError)
    assert "relation 'tiny'" in bad.exception.message and not (tmp_path / "bad" / "train.jsonl").exists()
    good = CliRunner().invoke(app, [*args, "--unknown", "3", "--extra", "1", "--seed", "1",
                                    "--out", str(tmp_path / "good")])
    assert good.exit_code == 0, good.output
