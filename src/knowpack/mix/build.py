"""Build a training mixture: train.jsonl, eval_sets.json and manifest.json from probed facts."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.io import stable_hash
from knowpack.manifest import claim_folder, stamp
from knowpack.mix.artifacts import EvalFactRow, EvalSets, MixSummary, TrainRow
from knowpack.mix.checks import answer_concentration, check_categories, check_disjoint
from knowpack.mix.config import KIND_CATEGORY, SAME_RELATION_CATEGORIES, MixConfig
from knowpack.probe.matching import normalize
from knowpack.probe.slick import CATEGORIES


def _draw(pool: list[str], count: int, rng: random.Random) -> list[str]:
    # Sorting first makes the draw independent of the order facts/categories were listed in.
    return rng.sample(sorted(pool), count)


def _paraphrases_of(fact: Fact, generated: dict[str, list[str]] | None) -> list[str]:
    """Stored paraphrases first, then generated ones; duplicates and the question itself dropped."""
    seen = {normalize(fact.question)}
    out = []
    for text in [*fact.paraphrases, *((generated or {}).get(fact.id, []))]:
        key = normalize(text)
        if key and key not in seen:
            seen.add(key)
            out.append(text)
    return out


def _heldout(by_category: dict[str, list[str]], config: MixConfig) -> dict[str, list[str]]:
    rng = random.Random(f"heldout:{config.seed}")
    return {cat: _draw(by_category[cat], min(config.heldout_per_category, len(by_category[cat])), rng)
            for cat in CATEGORIES}


def _not_enough(what: str, needed: int, category: str, total: int, reserved: int, hint: str) -> KnowpackError:
    return KnowpackError(
        f"{what} needs {needed} {category} facts but only {total - reserved} are available "
        f"({total} {category} in the probe, {reserved} reserved as held-out evaluation facts)",
        hint=hint)


def _known_extras(config: MixConfig, trained: list[str], available: list[str], total: int,
                  reserved: int, rng: random.Random) -> dict[str, list[str]]:
    category = KIND_CATEGORY[config.kind]
    needed = config.unknown * config.extra
    if needed > len(available):
        raise _not_enough(f"--unknown {config.unknown} --extra {config.extra} --kind {config.kind}",
                          needed, category, total, reserved,
                          "lower --unknown or --extra, lower --heldout-per-category, or probe more facts")
    drawn = _draw(available, needed, rng)
    return {fid: drawn[i * config.extra:(i + 1) * config.extra] for i, fid in enumerate(trained)}


def _paraphrase_extras(config: MixConfig, trained: list[str], facts: dict[str, Fact],
                       generated: dict[str, list[str]] | None) -> dict[str, list[str]]:
    extras, short = {}, []
    for fid in trained:
        options = _paraphrases_of(facts[fid], generated)
        if len(options) < config.extra:
            short.append(f"{fid} has {len(options)}")
        extras[fid] = options[:config.extra]
    if short:
        raise KnowpackError(
            f"{len(short)} of the {len(trained)} Unknown facts have fewer than {config.extra} paraphrases "
            f"({'; '.join(short[:5])}{'; …' if len(short) > 5 else ''})",
            hint="lower --extra, or generate paraphrases with `knowpack paraphrase` and pass "
                 "its output with --paraphrases")
    return extras


def _mixture_key(config: MixConfig, facts: list[Fact], categories: list[dict],
                 paraphrases: dict[str, list[str]] | None, probe_dir: Path | None) -> dict:
    """Everything that decides the mixture's files (a rebuild in the same folder is a no-op)."""
    return {"config": config.model_dump(mode="json"),
            "facts": stable_hash([f.model_dump(mode="json") for f in facts], length=16),
            "categories": stable_hash(categories, length=16),
            "paraphrases": stable_hash(paraphrases or {}, length=16),
            "probe_dir": str(probe_dir) if probe_dir else None}


def build_mixture(config: MixConfig, facts: list[Fact], categories: list[dict], out_dir: Path, *,
                  paraphrases: dict[str, list[str]] | None = None, probe_dir: Path | None = None) -> MixSummary:
    """Write the mix folder (train.jsonl, eval_sets.json, eval_facts.jsonl, summary.json, manifest.json).

    Held-out facts (per category) are drawn first, then n Unknown facts, then k extras per
    Unknown fact: known facts of ``config.kind`` (never held out, never twice; for
    ``same_relation_known`` of the Unknown fact's own relation, HighlyKnown before MaybeKnown) or
    paraphrases of the question (``Fact.paraphrases`` first, then ``paraphrases[fact_id]``); a control
    mixture draws n·(1 + k) HighlyKnown facts instead. Too few facts or paraphrases is an error
    that says how many exist; nothing is truncated. Rebuilding the same mixture in the same
    folder returns the existing summary; a folder holding another mixture is refused.
    """
    out_dir = Path(out_dir)
    by_id = {f.id: f for f in facts}
    if len(by_id) != len(facts):
        raise KnowpackError("the fact file has repeated ids", hint="run `knowpack facts validate` on it")
    category_of = check_categories(categories, set(by_id))
    key = _mixture_key(config, facts, categories, paraphrases, probe_dir)
    if claim_folder(out_dir, stage="mix", key=key, command="knowpack mix") == "finished":
        return MixSummary.read(out_dir)
    by_category = {cat: sorted(fid for fid, c in category_of.items() if c == cat) for cat in CATEGORIES}
    heldout = _heldout(by_category, config)
    if config.kind == "control":
        trained, examples, known_ids = [], *_control_examples(config, by_category, heldout, by_id)
    else:
        trained, examples, known_ids = _draw_training(config, by_category, heldout, by_id, paraphrases)
    check_disjoint(trained + known_ids, heldout)
    retention = random.Random(f"retention:{config.seed}").sample(
        heldout["HighlyKnown"], min(config.retention_sample, len(heldout["HighlyKnown"])))
    eval_sets = EvalSets(trained_unknown=trained, trained_known=known_ids, heldout=heldout, retention=retention)
    summary = MixSummary(
        train_examples=len(examples),
        counts={"unknown": len(trained), "extra_per_unknown": config.extra, "kind": config.kind,
                "heldout": {cat: len(ids) for cat, ids in heldout.items()}, "retention": len(retention)},
        concentration=answer_concentration([e.model_dump() for e in examples]),
        probe_dir=str(probe_dir) if probe_dir else None)
    TrainRow.write_rows(out_dir, examples)
    eval_sets.write(out_dir)
    used = dict.fromkeys([*trained, *known_ids, *eval_sets.ids("heldout")])
    EvalFactRow.write_rows(out_dir, (EvalFactRow(**by_id[fid].model_dump()) for fid in used))
    summary.write(out_dir)
    stamp(out_dir, stage="mix", config=config, key=key, seed=config.seed,
          inputs={k: v for k, v in key.items() if k != "config" and v is not None},
          details={"example_ids": [e.id for e in examples]})
    return summary


def _draw_unknown(config: MixConfig, by_category: dict[str, list[str]], held: set[str],
                  heldout: dict[str, list[str]]) -> tuple[list[str], random.Random]:
    """The n trained Unknown facts and the generator the known extras are drawn with after them."""
    rng = random.Random(f"train:{config.seed}")
    unknown_pool = [fid for fid in by_category["Unknown"] if fid not in held]
    if config.unknown > len(unknown_pool):
        raise _not_enough(f"--unknown {config.unknown}", config.unknown, "Unknown",
                          len(by_category["Unknown"]), len(heldout["Unknown"]),
                          "lower --unknown or --heldout-per-category, or probe more facts")
    return _draw(unknown_pool, config.unknown, rng), rng


def _draw_training(config: MixConfig, by_category: dict[str, list[str]], heldout: dict[str, list[str]],
                   by_id: dict[str, Fact], paraphrases: dict[str, list[str]] | None
                   ) -> tuple[list[str], list[TrainRow], list[str]]:
    """(trained Unknown ids, training examples, known extra ids) of an ordinary mixture."""
    held = {fid for ids in heldout.values() for fid in ids}
    trained, rng = _draw_unknown(config, by_category, held, heldout)
    if config.extra == 0:
        extras: dict[str, list[str]] = {fid: [] for fid in trained}
    elif config.kind == "paraphrase":
        extras = _paraphrase_extras(config, trained, by_id, paraphrases)
    elif config.kind == "same_relation_known":
        relation_of = {fid: fact.relation for fid, fact in by_id.items()}
        extras, problems = _same_relation_extras(config, trained, by_category, heldout, relation_of)
        if problems:
            raise KnowpackError(
                f"--kind same_relation_known needs {config.extra} known facts of the same relation per Unknown "
                f"fact, and {len(problems)} relation(s) have too few: " + "; ".join(problems),
                hint="lower --extra or --unknown, lower --heldout-per-category, probe more facts of those "
                     "relations, or use --kind highly_known")
    else:
        category = KIND_CATEGORY[config.kind]
        pool = [fid for fid in by_category[category] if fid not in held]
        extras = _known_extras(config, trained, pool, len(by_category[category]),
                               len(heldout[category]), rng)
    known_ids = [] if config.kind == "paraphrase" else [k for fid in trained for k in extras[fid]]
    return trained, _examples(config, trained, extras, by_id), known_ids


def _same_relation_pools(config: MixConfig, by_category: dict[str, list[str]], held: set[str],
                         relation_of: dict[str, str]) -> dict[str, dict[str, list[str]]]:
    """relation → category → its free (not held-out) facts, each list in a seeded order."""
    pools: dict[str, dict[str, list[str]]] = {}
    for category in SAME_RELATION_CATEGORIES:
        for fid in by_category[category]:
            if fid not in held:
                pools.setdefault(relation_of[fid], {}).setdefault(category, []).append(fid)
    for relation, by_cat in pools.items():
        for category, ids in by_cat.items():
            # One generator per relation and category: adding facts of one relation leaves the
            # draws of every other relation as they were.
            by_cat[category] = _draw(ids, len(ids), random.Random(f"same-relation:{config.seed}:{relation}:{category}"))
    return pools


def _same_relation_extras(config: MixConfig, trained: list[str], by_category: dict[str, list[str]],
                          heldout: dict[str, list[str]], relation_of: dict[str, str]
                          ) -> tuple[dict[str, list[str]], list[str]]:
    """k known facts of its own relation per trained Unknown fact, and every relation that has too few.

    The rule: each relation's free HighlyKnown facts (seeded order) come first, then its free
    MaybeKnown facts; the Unknown facts of a relation take k of them each, in the order they were
    drawn, so no known fact is used twice.
    """
    held = {fid for ids in heldout.values() for fid in ids}
    pools = _same_relation_pools(config, by_category, held, relation_of)
    needs = Counter(relation_of[fid] for fid in trained)
    problems = []
    for relation in sorted(needs):
        free = pools.get(relation, {})
        have = {cat: len(free.get(cat, [])) for cat in SAME_RELATION_CATEGORIES}
        needed = needs[relation] * config.extra
        if needed > sum(have.values()):
            reserved = {cat: sum(relation_of[f] == relation for f in heldout[cat]) for cat in SAME_RELATION_CATEGORIES}
            problems.append(
                f"relation {relation!r}: {needs[relation]} Unknown fact(s) × {config.extra} need {needed} known facts, "
                f"it has {have['HighlyKnown']} HighlyKnown + {have['MaybeKnown']} MaybeKnown free "
                f"({reserved['HighlyKnown']} HighlyKnown and {reserved['MaybeKnown']} MaybeKnown held out for evaluation)")
    if problems:
        return {}, problems
    ordered = {rel: [fid for cat in SAME_RELATION_CATEGORIES for fid in by_cat.get(cat, [])]
               for rel, by_cat in pools.items()}
    used: Counter = Counter()
    extras = {}
    for fid in trained:
        relation = relation_of[fid]
        start = used[relation]
        extras[fid] = ordered[relation][start:start + config.extra]
        used[relation] += config.extra
    return extras, []


def same_relation_problems(config: MixConfig, facts: list[Fact], categories: list[dict]) -> list[str]:
    """The relations too short of known facts for a ``same_relation_known`` mixture (``[]``: none).

    Runs the builder's own draws (held-out sets, Unknown facts), so a study can refuse such a
    cell before anything trains, with the very numbers ``build_mixture`` would report.
    """
    if config.kind != "same_relation_known" or config.extra == 0:
        return []
    by_id = {f.id: f for f in facts}
    category_of = check_categories(categories, set(by_id))
    by_category = {cat: sorted(fid for fid, c in category_of.items() if c == cat) for cat in CATEGORIES}
    heldout = _heldout(by_category, config)
    held = {fid for ids in heldout.values() for fid in ids}
    try:
        trained, _ = _draw_unknown(config, by_category, held, heldout)
    except KnowpackError as exc:
        return [exc.message]
    relation_of = {fid: fact.relation for fid, fact in by_id.items()}
    return _same_relation_extras(config, trained, by_category, heldout, relation_of)[1]


def _control_examples(config: MixConfig, by_category: dict[str, list[str]], heldout: dict[str, list[str]],
                      by_id: dict[str, Fact]) -> tuple[list[TrainRow], list[str]]:
    """n·(1 + k) HighlyKnown facts (never held out): as many examples as the controlled cell."""
    needed = config.unknown * (1 + config.extra)
    pool = [fid for fid in by_category["HighlyKnown"] if fid not in set(heldout["HighlyKnown"])]
    if needed > len(pool):
        raise _not_enough(f"a control for --unknown {config.unknown} --extra {config.extra}", needed,
                          "HighlyKnown", len(by_category["HighlyKnown"]), len(heldout["HighlyKnown"]),
                          "lower --unknown or --extra, lower --heldout-per-category, or probe more facts")
    chosen = _draw(pool, needed, random.Random(f"control:{config.seed}"))
    rows = [TrainRow(id=f"{fid}#control", fact_id=fid, question=by_id[fid].question, answer=by_id[fid].answer,
                     role="control") for fid in chosen]
    return rows, chosen


def _examples(config: MixConfig, trained: list[str], extras: dict[str, list[str]],
              facts: dict[str, Fact]) -> list[TrainRow]:
    """One row per training example; ids are unique (fact id + role/index)."""
    rows = []
    for fid in trained:
        fact = facts[fid]
        # The paper trains on aliases[0] in its original casing, i.e. Fact.answer.
        rows.append(TrainRow(id=f"{fid}#unknown", fact_id=fid, question=fact.question, answer=fact.answer,
                             role="unknown"))
        for j, item in enumerate(extras[fid]):
            if config.kind == "paraphrase":
                rows.append(TrainRow(id=f"{fid}#paraphrase-{j}", fact_id=fid, question=item, answer=fact.answer,
                                     role="paraphrase"))
            else:
                known = facts[item]
                rows.append(TrainRow(id=f"{item}#{config.kind}", fact_id=item, question=known.question,
                                     answer=known.answer, role=config.kind))
    return rows
