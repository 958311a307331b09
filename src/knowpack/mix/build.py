"""Build a training mixture: train.jsonl, eval_sets.json and manifest.json from probed facts."""

from __future__ import annotations

import random
from pathlib import Path

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.io import read_json, stable_hash, write_json, write_jsonl, write_manifest
from knowpack.mix.checks import CATEGORIES, answer_concentration, check_categories, check_disjoint
from knowpack.mix.config import KIND_CATEGORY, MixConfig
from knowpack.probe.matching import normalize

TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval_sets.json"
# The Fact records behind every id in eval_sets.json, so later stages need no other file.
EVAL_FACTS_FILE = "eval_facts.jsonl"


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


def _reuse_or_refuse(out_dir: Path, key: dict) -> dict | None:
    manifest = out_dir / "manifest.json"
    if not manifest.is_file():
        return None
    previous = read_json(manifest)
    if previous.get("stage") == "mix" and previous.get("key") == key and (out_dir / TRAIN_FILE).is_file():
        return previous["summary"]
    raise KnowpackError(f"{out_dir} already holds a different mixture",
                        hint="choose another --out folder, or delete this one")


def build_mixture(config: MixConfig, facts: list[Fact], categories: list[dict], out_dir: Path, *,
                  paraphrases: dict[str, list[str]] | None = None, probe_dir: Path | None = None) -> dict:
    """Write ``train.jsonl``, ``eval_sets.json`` (+ ``eval_facts.jsonl``) and ``manifest.json``; return the summary.

    Held-out facts (per category) are drawn first, then n Unknown facts, then k extras per
    Unknown fact: known facts of ``config.kind`` (never held out, never twice) or paraphrases
    of the question (``Fact.paraphrases`` first, then ``paraphrases[fact_id]``). Too few facts
    or paraphrases is an error that says how many exist; nothing is truncated. Rebuilding the
    same mixture in the same folder returns the existing summary.
    """
    out_dir = Path(out_dir)
    by_id = {f.id: f for f in facts}
    if len(by_id) != len(facts):
        raise KnowpackError("the fact file has repeated ids", hint="run `knowpack facts check` on it")
    category_of = check_categories(categories, set(by_id))
    key = {"config": config.model_dump(mode="json"),
           "facts": stable_hash([f.model_dump(mode="json") for f in facts], length=16),
           "categories": stable_hash(categories, length=16),
           "paraphrases": stable_hash(paraphrases or {}, length=16),
           "probe_dir": str(probe_dir) if probe_dir else None}
    existing = _reuse_or_refuse(out_dir, key)
    if existing is not None:
        return existing

    by_category = {cat: [fid for fid, c in category_of.items() if c == cat] for cat in CATEGORIES}
    heldout = _heldout(by_category, config)
    held = {fid for ids in heldout.values() for fid in ids}
    rng = random.Random(f"train:{config.seed}")
    unknown_pool = [fid for fid in by_category["Unknown"] if fid not in held]
    if config.unknown > len(unknown_pool):
        raise _not_enough(f"--unknown {config.unknown}", config.unknown, "Unknown",
                          len(by_category["Unknown"]), len(heldout["Unknown"]),
                          "lower --unknown or --heldout-per-category, or probe more facts")
    trained = _draw(unknown_pool, config.unknown, rng)
    if config.extra == 0:
        extras: dict[str, list[str]] = {fid: [] for fid in trained}
    elif config.kind == "paraphrase":
        extras = _paraphrase_extras(config, trained, by_id, paraphrases)
    else:
        category = KIND_CATEGORY[config.kind]
        pool = [fid for fid in by_category[category] if fid not in held]
        extras = _known_extras(config, trained, pool, len(by_category[category]),
                               len(heldout[category]), rng)

    examples = _examples(config, trained, extras, by_id)
    known_ids = [] if config.kind == "paraphrase" else [k for fid in trained for k in extras[fid]]
    check_disjoint(trained + known_ids, heldout)
    retention = random.Random(f"retention:{config.seed}").sample(
        heldout["HighlyKnown"], min(config.retention_sample, len(heldout["HighlyKnown"])))
    eval_sets = {"trained_unknown": trained, "trained_known": known_ids, "heldout": heldout,
                 "retention": retention}
    summary = {
        "train_examples": len(examples),
        "counts": {"unknown": len(trained), "extra_per_unknown": config.extra, "kind": config.kind,
                   "heldout": {cat: len(ids) for cat, ids in heldout.items()},
                   "retention": len(retention)},
        "concentration": answer_concentration(examples),
        "probe_dir": str(probe_dir) if probe_dir else None,
    }
    write_jsonl(out_dir / TRAIN_FILE, examples)
    write_json(out_dir / EVAL_FILE, eval_sets)
    used = dict.fromkeys([*trained, *known_ids, *(fid for ids in heldout.values() for fid in ids)])
    write_jsonl(out_dir / EVAL_FACTS_FILE, [by_id[fid] for fid in used])
    write_manifest(out_dir, stage="mix", config=config, seed=config.seed,
                   inputs={k: v for k, v in key.items() if k != "config" and v is not None},
                   extra={"key": key, "summary": summary, "ids": eval_sets,
                          "example_ids": [e["id"] for e in examples]})
    return summary


def _examples(config: MixConfig, trained: list[str], extras: dict[str, list[str]],
              facts: dict[str, Fact]) -> list[dict]:
    """One row per training example; ids are unique (fact id + role/index)."""
    rows = []
    for fid in trained:
        fact = facts[fid]
        # The paper trains on aliases[0] in its original casing, i.e. Fact.answer.
        rows.append({"id": f"{fid}#unknown", "fact_id": fid, "question": fact.question,
                     "answer": fact.answer, "role": "unknown"})
        for j, item in enumerate(extras[fid]):
            if config.kind == "paraphrase":
                rows.append({"id": f"{fid}#paraphrase-{j}", "fact_id": fid, "question": item,
                             "answer": fact.answer, "role": "paraphrase"})
            else:
                known = facts[item]
                rows.append({"id": f"{item}#{config.kind}", "fact_id": item, "question": known.question,
                             "answer": known.answer, "role": config.kind})
    return rows
