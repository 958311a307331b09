"""The probe stage: categorise facts (SliCK) with early exit, resumable, into a probe folder.

Work is cut into chunks of ``batch_size`` facts in input order (``early_exit.probe_chunk`` decides
which answers each chunk needs). Each finished chunk is appended to a partial file; a rerun skips
finished chunks and recomputes an interrupted one whole. Recomputing whole chunks keeps every
batch's composition identical to an uninterrupted run — on CPU a row's floating-point result can
depend (very slightly) on its batch mates — so the final files are byte-identical.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.facts.schema import TIERS, Fact
from knowpack.io import atomic_path, dumps_line, stable_hash
from knowpack.manifest import claim_folder, folder_state, stamp
from knowpack.models.adapters import adapter_hash
from knowpack.probe.artifacts import CategoryRow, GenerationRow, ProbeFolder, ProbeSummary, ShotSets
from knowpack.probe.config import ProbeConfig
from knowpack.probe.early_exit import probe_chunk
from knowpack.probe.limits import check_prompt_lengths
from knowpack.probe.matching import is_correct
from knowpack.probe.prompts import build_shot_sets, fewshot_prompt, group_by_relation
from knowpack.probe.shots import ShotPlan, plan_shots
from knowpack.probe.slick import CATEGORIES, p_share
from knowpack.progress import progress_bar

PARTIAL_NAME = "categories.partial.jsonl"
FORMAT_VERSION = 1
log = logging.getLogger(__name__)


# -- backends ---------------------------------------------------------------------------------

def resolve_backend(model: Any, config: ProbeConfig, adapter: str | None = None) -> tuple[Any, dict]:
    """A backend for ``model`` (a spec string, a LoadedModel, or a ready backend) and its identity."""
    from knowpack.probe.backends import Backend, get_backend

    if isinstance(model, Backend) and not hasattr(model, "source"):
        if adapter is not None:
            raise KnowpackError("an adapter cannot be added to a ready-made backend",
                                hint="pass the LoadedModel (or model spec) together with the adapter")
        return model, {"model_hash": model_identity(model)}
    if isinstance(model, (str, os.PathLike)):
        from knowpack.models.loading import load_model

        model = load_model(str(model))
    # The backend lives for one run or one call, during which the weights are fixed, so shared
    # few-shot prefixes may be cached across calls.
    backend = get_backend(config.backend, model, adapter=adapter, batch_size=config.batch_size,
                          stop_at_newline=config.match != "substring", cache_prefixes=True,
                          engine_config=config.engine)
    return backend, {"model_hash": model.model_hash, "model": dict(model.info)}


def model_identity(model: Any) -> str:
    """The content hash of ``model`` without loading it when it is a spec string."""
    if isinstance(model, (str, os.PathLike)):
        from knowpack.models.loading import model_fingerprint, resolve_model_source

        return model_fingerprint(resolve_model_source(str(model)))
    return getattr(model, "model_hash", None) or type(model).__name__


# -- resumable run ----------------------------------------------------------------------------

def _read_partial(path: Path, run_key: str) -> dict[str, dict]:
    """Finished facts of an interrupted run with the same key ({} when none or stale)."""
    if not path.is_file():
        return {}
    done: dict[str, dict] = {}
    with open(path, encoding="utf-8") as fh:
        header = fh.readline()
        try:
            if json.loads(header).get("run_key") != run_key:
                return {}
        except (json.JSONDecodeError, AttributeError):
            return {}
        for line in fh:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by the kill: its chunk is recomputed
            done[item["record"]["id"]] = item
    return done


def _rewrite_partial(path: Path, run_key: str, items: list[dict]) -> None:
    # Drops stale or cut lines so the file holds exactly the whole chunks that are done.
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(dumps_line({"run_key": run_key}))
        fh.write("".join(dumps_line(item) for item in items))


def _chunks(facts: list[Fact], size: int) -> list[list[Fact]]:
    return [facts[i:i + size] for i in range(0, len(facts), size)]


def _plan(config: ProbeConfig, facts: list[Fact], shot_pool: list[Fact] | None, limit: int | None) -> ShotPlan:
    """The checked shot plan of a run (every input problem is raised before any work)."""
    if not facts:
        raise KnowpackError("no facts to probe", hint="pass a non-empty fact file")
    ids = [f.id for f in facts]
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise KnowpackError(f"fact id {dup!r} occurs more than once", hint="fact ids must be unique")
    plan = plan_shots(config, facts, shot_pool)
    if limit is not None:
        plan.facts = plan.facts[:max(0, limit)]
    if not plan.facts:
        raise KnowpackError("no facts left to probe after holding out the shot pool",
                            hint="pass more facts or a larger --limit")
    return plan


def _run_key(config: ProbeConfig, plan: ShotPlan, model_hash: str, adapter_digest: str | None) -> str:
    """Everything that decides the probe's files: settings, model, adapter, facts and shots."""
    return stable_hash({"v": FORMAT_VERSION, "config": config.model_dump(mode="json"),
                        "model": model_hash, "adapter": adapter_digest,
                        "facts": [f.model_dump(mode="json") for f in plan.facts],
                        "shots": _shot_ids(plan)}, length=16)


def run_probe(config: ProbeConfig, facts: list[Fact], model: Any, out_dir: str | os.PathLike, *,
              adapter: str | None = None, shot_pool: list[Fact] | None = None, progress: bool = True,
              limit: int | None = None, on_chunk: Callable[[int], None] | None = None) -> ProbeSummary:
    """Probe ``facts`` with ``model`` into the probe folder ``out_dir``; returns its summary.

    ``model``: a model spec (``default``, a folder, …), a LoadedModel (its model may be a
    PeftModel), or a ready backend. ``limit``: probe only the first K facts left after the shot
    pool was held out. ``on_chunk(n_done)`` is called after each finished chunk. A rerun with the
    same inputs resumes an interrupted run, or returns the finished run's summary at once; a
    folder holding a run with other settings is refused (see ``knowpack.manifest.claim_folder``).
    """
    plan = _plan(config, facts, shot_pool, limit)
    adapter_digest = adapter_hash(adapter) if adapter is not None else None
    run_key = _run_key(config, plan, model_identity(model), adapter_digest)
    out_dir = Path(out_dir)
    if folder_state(out_dir, stage="probe", key=run_key, command="knowpack probe") == "finished":
        return ProbeSummary.read(out_dir)
    backend, identity = resolve_backend(model, config, adapter)
    check_prompt_lengths(plan, config, backend)
    claim_folder(out_dir, stage="probe", key=run_key, command="knowpack probe")
    start = time.perf_counter()
    items = _probe_all(plan, backend, config, out_dir, run_key, progress=progress, on_chunk=on_chunk)
    summary = ProbeSummary(**summarize([i["record"] for i in items], plan.facts),
                           held_out_ids=[f.id for f in plan.held_out], config=config.model_dump(mode="json"),
                           model_hash=identity["model_hash"], adapter=adapter, run_key=run_key,
                           exemplars=plan.exemplars, seconds=round(time.perf_counter() - start, 2))
    _write_outputs(out_dir, items, plan, summary, identity, adapter, adapter_digest)
    (out_dir / PARTIAL_NAME).unlink(missing_ok=True)
    log.info("probed %d facts in %.0f s: %s", summary.n, summary.seconds,
             "  ".join(f"{c} {summary.counts[c]}" for c in CATEGORIES))
    return summary


def _probe_all(plan: ShotPlan, backend: Any, config: ProbeConfig, out_dir: Path, run_key: str, *,
               progress: bool, on_chunk: Callable[[int], None] | None) -> list[dict]:
    """Every fact's record and generations, chunk by chunk, appended durably to the partial file."""
    partial = out_dir / PARTIAL_NAME
    done = _read_partial(partial, run_key)
    chunks = _chunks(plan.facts, config.batch_size)
    kept = {}
    for chunk in chunks:  # only whole chunks count as done
        if all(f.id in done for f in chunk):
            kept.update({f.id: done[f.id] for f in chunk})
    _rewrite_partial(partial, run_key, [kept[f.id] for f in plan.facts if f.id in kept])
    if kept:
        log.info("resuming: %d of %d facts already probed", len(kept), len(plan.facts))
    with progress_bar("probe", len(plan.facts), completed=len(kept), unit="facts", enabled=progress) as bar, \
            open(partial, "a", encoding="utf-8") as fh:
        for chunk in chunks:
            if all(f.id in kept for f in chunk):
                continue
            items = probe_chunk(chunk, backend, config, plan)
            fh.write("".join(dumps_line(item) for item in items))
            fh.flush()
            os.fsync(fh.fileno())
            kept.update({item["record"]["id"]: item for item in items})
            bar.advance(len(chunk), completed=len(kept))
            if on_chunk is not None:
                on_chunk(len(kept))
    return [kept[f.id] for f in plan.facts]


def _shot_ids(plan: ShotPlan) -> dict:
    if plan.shot_sets is not None:
        return {"mode": "fixed", "sets": [[f.id for f in s] for s in plan.shot_sets],
                "held_out_ids": [f.id for f in plan.held_out]}
    return {"mode": "relation", "pool_size": sum(len(v) for v in (plan.pool_by_relation or {}).values())}


def shot_sets_artifact(plan: ShotPlan, config: ProbeConfig) -> ShotSets:
    """``shots.json`` of a plan: the fixed sets as fact records, or each fact's same-relation shot ids."""
    if plan.shot_sets is not None:
        return ShotSets(mode="fixed", sets=plan.shot_sets, held_out_ids=[f.id for f in plan.held_out])
    return ShotSets(mode="relation", pool_size=sum(len(v) for v in (plan.pool_by_relation or {}).values()),
                    per_fact={f.id: [[s.id for s in st] for st in plan.shots(f, config)] for f in plan.facts})


def _write_outputs(out_dir: Path, items: list[dict], plan: ShotPlan, summary: ProbeSummary, identity: dict,
                   adapter: str | None, adapter_digest: str | None) -> None:
    config = ProbeConfig.model_validate(summary.config)
    CategoryRow.write_rows(out_dir, (CategoryRow(**i["record"]) for i in items))
    GenerationRow.write_rows(out_dir, (GenerationRow(**g) for i in items for g in i["generations"]))
    shot_sets_artifact(plan, config).write(out_dir)
    summary.write(out_dir)
    stamp(out_dir, stage="probe", config=config, key=summary.run_key, seed=config.seed,
          inputs={"model": identity["model_hash"], "adapter": adapter_digest,
                  "facts": stable_hash([f.model_dump(mode="json") for f in plan.facts], length=16)},
          details={"model": identity.get("model", {}), "adapter_path": adapter,
                   "held_out_ids": [f.id for f in plan.held_out], "n_facts": len(plan.facts)})


# -- summary ----------------------------------------------------------------------------------

def _shares(records: list[dict]) -> dict:
    counts = Counter(r["category"] for r in records)
    n = len(records)
    return {"n": n, "counts": {c: counts.get(c, 0) for c in CATEGORIES},
            "shares": {c: round(counts.get(c, 0) / n, 4) if n else 0.0 for c in CATEGORIES},
            "refusal_rate": round(sum(r["refused"] for r in records) / n, 4) if n else 0.0}


def summarize(records: list[dict], facts: list[Fact]) -> dict:
    """Counts and shares per category — overall, per relation and per popularity tier."""
    by_id = {f.id: f for f in facts}
    groups: dict[str, dict[str, list[dict]]] = {"relation": defaultdict(list), "tier": defaultdict(list)}
    for r in records:
        fact = by_id[r["id"]]
        groups["relation"][fact.relation].append(r)
        groups["tier"][fact.tier or "none"].append(r)
    summary = _shares(records)
    summary["per_relation"] = {k: _shares(v) for k, v in sorted(groups["relation"].items())}
    order = {t: i for i, t in enumerate((*TIERS, "none"))}
    summary["per_tier"] = {k: _shares(v) for k, v in sorted(groups["tier"].items(), key=lambda kv: order[kv[0]])}
    summary["greedy_generations"] = sum(len(r["greedy_correct"]) for r in records)
    summary["sampled_generations"] = sum(r["samples"] for r in records)
    return summary


# -- helpers for other stages -----------------------------------------------------------------

def greedy_answers_for(facts: list[Fact], model_or_backend: Any, config: ProbeConfig,
                       shot_sets: list[list[Fact]] | None = None, *, shot_pool: list[Fact] | None = None,
                       adapter: str | None = None) -> dict[str, list[str]]:
    """Raw greedy generations of all N few-shot prompts per fact (no early exit).

    ``model_or_backend``: a LoadedModel (whose model may be an in-memory PeftModel, e.g. the
    trainer's), a model spec, or a backend. ``fixed`` pool: pass ``shot_sets`` (e.g. a probe
    folder's :meth:`ProbeFolder.shot_sets`) or a ``shot_pool`` to build them from. ``relation``:
    ``shot_pool`` (or ``facts``) supplies same-relation shots.
    """
    from knowpack.probe.backends.base import ListFeed, Request, run_feed

    if config.shot_pool == "fixed":
        if shot_sets is None:
            if shot_pool is None and config.shots:
                raise KnowpackError("greedy_answers_for needs shot_sets or a shot_pool in fixed mode")
            shot_sets = build_shot_sets(shot_pool, config) if config.shots else [[] for _ in range(config.prompts)]
        plan = ShotPlan(facts=list(facts), shot_sets=shot_sets)
    else:
        plan = ShotPlan(facts=list(facts), pool_by_relation=group_by_relation(shot_pool or facts))
    backend, _ = resolve_backend(model_or_backend, config, adapter)
    # Every prompt of every fact at once: a streaming backend keeps its batch full throughout.
    requests = []
    for fact in facts:
        for shots in plan.shots(fact, config):
            prompt, prefix = fewshot_prompt(backend, fact, shots)
            requests.append(Request(prompt, prefix=prefix))
    feed = ListFeed(requests)
    run_feed(backend, feed, max_new_tokens=config.max_new_tokens)
    texts = iter(feed.answers())
    return {fact.id: [next(texts)[0] for _ in range(config.prompts)] for fact in facts}


def reliability(facts: list[Fact], model_or_backend: Any, config: ProbeConfig,
                shot_sets: list[list[Fact]] | None = None, *, shot_pool: list[Fact] | None = None,
                adapter: str | None = None) -> dict:
    """Few-shot reliability: share of the N greedy answers per fact that are correct.

    Returns ``{"reliability": mean over facts × prompts, "per_fact": {id: share},
    "answers": {id: [raw texts]}}``.
    """
    answers = greedy_answers_for(facts, model_or_backend, config, shot_sets, shot_pool=shot_pool, adapter=adapter)
    per_fact = {}
    for fact in facts:
        flags = [is_correct(t, fact.aliases, config.match) for t in answers[fact.id]]
        per_fact[fact.id] = p_share(sum(flags), len(flags))
    mean = sum(per_fact.values()) / len(per_fact) if per_fact else 0.0
    return {"reliability": mean, "per_fact": per_fact, "answers": answers}


def load_shot_sets(probe_dir: str | os.PathLike) -> list[list[Fact]]:
    """The fixed shot sets a finished probe used, to reuse its prompts."""
    sets = ProbeFolder(probe_dir).shot_sets()
    if sets is None:
        raise KnowpackError(f"{probe_dir} used same-relation shots; there are no fixed shot sets to reuse")
    return sets
