"""The probe stage: categorise facts (SliCK) with early exit, resumable, written as DESIGN.md says.

Work is cut into chunks of ``batch_size`` facts in input order. Inside a chunk the N prompts are
processed in rounds (round j = prompt j for every fact still undecided), so a fact that leaves
early frees its batch slot in the next round. Each finished chunk is appended to a partial file;
a rerun skips finished chunks and recomputes an interrupted one whole. Recomputing whole chunks
keeps every batch's composition identical to an uninterrupted run — on CPU a row's floating-point
result can depend (very slightly) on its batch mates — so the final files are byte-identical.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.facts.schema import TIERS, Fact
from knowpack.io import dumps_line, read_json, sha256_file, stable_hash, write_json, write_jsonl, write_manifest
from knowpack.probe.config import ProbeConfig
from knowpack.probe.matching import answer_span, exact_match, is_correct
from knowpack.probe.prompts import build_shot_sets, group_by_relation, select_spread, shots_for
from knowpack.probe.refusal import is_refusal
from knowpack.probe.slick import CATEGORIES, categorize, greedy_settled, needs_samples, p_share

CATEGORY_FIELDS = ("id", "category", "p_greedy", "p_sample", "greedy_answers", "greedy_correct",
                   "sampled_correct", "samples", "refused")
PARTIAL_NAME = "categories.partial.jsonl"
FORMAT_VERSION = 1


# -- shots ------------------------------------------------------------------------------------

@dataclass
class ShotPlan:
    """Which facts are probed and which shots each of the N prompts uses."""

    facts: list[Fact]
    held_out: list[Fact] = field(default_factory=list)
    shot_sets: list[list[Fact]] | None = None
    pool_by_relation: dict[str, list[Fact]] | None = None

    def shots(self, fact: Fact, config: ProbeConfig) -> list[list[Fact]]:
        return shots_for(fact, config, self.shot_sets, self.pool_by_relation)


def plan_shots(config: ProbeConfig, facts: list[Fact], shot_pool: list[Fact] | None = None) -> ShotPlan:
    """Decide the shot sets; raises KnowpackError before any work when the pool is too small.

    ``fixed`` without ``shot_pool``: N×S facts are held out of ``facts`` (seeded, spread over
    relations) as shots and are not probed. With ``shot_pool``: shots come from it and any fact
    of the pool is not probed (it would be its own shot). ``relation``: shots are other facts of
    the same relation, from ``shot_pool`` or else from ``facts``.
    """
    if config.shot_pool == "relation":
        plan = ShotPlan(facts=list(facts), pool_by_relation=group_by_relation(shot_pool or facts))
        for fact in plan.facts:  # validate every fact now: fail before writing anything
            plan.shots(fact, config)
        return plan
    if config.shots == 0:
        return ShotPlan(facts=list(facts), shot_sets=[[] for _ in range(config.prompts)])
    needed = config.prompts * config.shots
    if shot_pool is None:
        if needed >= len(facts):
            raise KnowpackError(
                f"{config.prompts} prompts × {config.shots} shots need {needed} held-out facts, "
                f"but only {len(facts)} facts were given (at least one must remain to probe)",
                hint="lower --prompts/--shots, pass more facts, or use --shot-pool relation")
        pool = select_spread(facts, needed, config.seed)
    else:
        pool = list(shot_pool)
    shot_sets = build_shot_sets(pool, config)
    used = {f.id for s in shot_sets for f in s}
    pool_ids = used if shot_pool is None else {f.id for f in shot_pool}
    return ShotPlan(facts=[f for f in facts if f.id not in pool_ids],
                    held_out=[f for f in facts if f.id in pool_ids], shot_sets=shot_sets)


# -- backends ---------------------------------------------------------------------------------

def render_prompt(backend: Any, messages: list[dict[str, str]]) -> str:
    """Render chat messages for ``backend`` (its own chat template when it has one)."""
    render = getattr(backend, "render", None)
    if render is not None:
        return render(messages)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def fewshot_prompt(backend: Any, fact: Fact, shots: list[Fact]) -> tuple[str, str | None]:
    """The rendered few-shot prompt for ``fact`` and, as a prefix hint, the part every question
    with these shots shares (a backend computes it once)."""
    from knowpack.probe.prompts import fewshot_messages

    prompt = render_prompt(backend, fewshot_messages(fact.question, shots))
    # The same prompt with an empty question shares everything up to the question's first character.
    blank = render_prompt(backend, fewshot_messages("", shots))
    return prompt, os.path.commonprefix([prompt, blank]) or None


def resolve_backend(model: Any, config: ProbeConfig, adapter: str | None = None) -> tuple[Any, dict]:
    """A backend for ``model`` (a spec string, a LoadedModel, or a ready backend) and its identity."""
    from knowpack.probe.backends.base import Backend, get_backend

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
                          stop_at_newline=config.match != "substring", cache_prefixes=True, engine=config.engine)
    return backend, {"model_hash": model.model_hash, "model": dict(model.info)}


def model_identity(model: Any) -> str:
    """The content hash of ``model`` without loading it when it is a spec string."""
    if isinstance(model, (str, os.PathLike)):
        from knowpack.models.loading import model_fingerprint, resolve_model_source

        return model_fingerprint(resolve_model_source(str(model)))
    return getattr(model, "model_hash", None) or type(model).__name__


def _adapter_hash(adapter: str | None) -> str | None:
    if adapter is None:
        return None
    weights = sorted(Path(adapter).glob("adapter_model.*"))
    return sha256_file(weights[0])[:16] if weights else stable_hash(str(adapter))


def _seed(config: ProbeConfig, fact_id: str, prompt: int) -> int:
    return int(stable_hash(["sample", config.seed, fact_id, prompt], length=15), 16)


# -- per-chunk probing ------------------------------------------------------------------------

@dataclass
class _FactState:
    fact: Fact
    greedy: list[str] = field(default_factory=list)
    greedy_correct: list[bool] = field(default_factory=list)
    sampled: int = 0
    sampled_correct: int = 0
    generations: list[dict] = field(default_factory=list)

    def add(self, config: ProbeConfig, prompt: int, kind: str, text: str, sample: int | None = None) -> bool:
        correct = is_correct(text, self.fact.aliases, config.match)
        self.generations.append({"id": self.fact.id, "prompt": prompt, "kind": kind, "sample": sample,
                                 "text": text, "answer": answer_span(text), "correct": correct,
                                 "exact": exact_match(text, self.fact.aliases),
                                 "refusal": is_refusal(text)})
        if kind == "greedy":
            self.greedy.append(text)
            self.greedy_correct.append(correct)
        else:
            self.sampled += 1
            self.sampled_correct += int(correct)
        return correct

    def record(self) -> dict:
        greedy_refusals = [g["refusal"] for g in self.generations if g["kind"] == "greedy"]
        return {
            "id": self.fact.id,
            "category": categorize(self.greedy_correct, self.sampled_correct, self.sampled),
            "p_greedy": p_share(sum(self.greedy_correct), len(self.greedy_correct)),
            "p_sample": p_share(self.sampled_correct, self.sampled),
            "greedy_answers": [answer_span(t) for t in self.greedy],
            "greedy_correct": list(self.greedy_correct),
            "sampled_correct": self.sampled_correct,
            "samples": self.sampled,
            # Refused: some greedy answer declines and none is right (the paper only looked at
            # the first answer, and only for the word "information"; paper-notes §6.5).
            "refused": any(greedy_refusals) and not any(self.greedy_correct),
        }


def probe_chunk(facts: list[Fact], backend: Any, config: ProbeConfig, plan: ShotPlan) -> list[dict]:
    """Probe a few facts together; returns per fact ``{"record": categories row, "generations": [...]}``.

    Early exit (``config.early_exit``) never changes a category: greedy prompts stop for a fact
    once it has a right and a wrong answer (MaybeKnown whatever comes next); samples are drawn
    only for facts whose N greedy answers are all wrong, and stop after the prompt that gave the
    first correct sample (WeaklyKnown whatever comes next). A streaming backend may compute
    requests ahead of need to keep its batch full; answers early exit would not have asked for
    are dropped, so the records are the same either way.
    """
    from knowpack.probe.backends.base import run_feed

    feed = _ChunkFeed(facts, backend, config, plan)
    run_feed(backend, feed, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
             top_k=config.top_k)
    return feed.items()


class _ChunkFeed:
    """The requests of one chunk, released as the early-exit rules make them needed.

    Per fact and prompt j, a request is *needed* when the answers before it leave the category
    open, *unneeded* when they settle it, and *speculative* while answers before it are pending.
    """

    def __init__(self, facts: list[Fact], backend: Any, config: ProbeConfig, plan: ShotPlan):
        from knowpack.probe.backends.base import Request

        self.config, self.facts = config, facts
        self.requests: list[dict[tuple[str, int], Request]] = []
        for index, fact in enumerate(facts):
            mine = {}
            for j, shots in enumerate(plan.shots(fact, config)):
                prompt, prefix = fewshot_prompt(backend, fact, shots)
                followup = None
                if config.samples:
                    followup = mine[("sample", j)] = Request(prompt, samples=config.samples, prefix=prefix,
                                                             seed=_seed(config, fact.id, j), tag=(index, "sample", j))
                mine[("greedy", j)] = Request(prompt, prefix=prefix, followup=followup, tag=(index, "greedy", j))
            self.requests.append(mine)
        self.answers: list[dict[tuple[str, int], list[str]]] = [{} for _ in facts]
        self.correct: list[dict[tuple[str, int], bool]] = [{} for _ in facts]
        self.taken: list[set[tuple[str, int]]] = [set() for _ in facts]

    # -- the early-exit rules, on the answers so far ---------------------------------------
    def _flags(self, index: int, kind: str) -> list[bool]:
        """Correctness of the contiguous answers from prompt 0 (greedy: per answer; samples:
        any correct per prompt)."""
        correct, flags = self.correct[index], []
        while (kind, len(flags)) in correct:
            flags.append(correct[(kind, len(flags))])
        return flags

    def _status(self, index: int, kind: str, j: int) -> str:
        """``needed``, ``speculative``, ``unneeded`` or ``blocked`` (samples of a prompt whose
        greedy answer is still pending)."""
        if not self.config.early_exit:
            return "needed"
        greedy = self._flags(index, "greedy")
        if kind == "greedy":
            if greedy_settled(greedy[:j]):
                return "unneeded"
            return "needed" if len(greedy) >= j else "speculative"
        if any(greedy):
            return "unneeded"
        sampled = self._flags(index, "sample")
        if any(sampled[:j]):
            return "unneeded"
        if needs_samples(greedy, self.config.prompts) and len(sampled) >= j:
            return "needed"
        # Once greedy prompt j is under way its samples may start, retracing its path, while the
        # fact's other greedy prompts still run.
        return "speculative" if ("greedy", j) in self.taken[index] else "blocked"

    # -- the RequestFeed protocol ------------------------------------------------------------
    def take(self, rows: int, speculative: bool) -> list:
        taken, used = [], 0
        passes = [("needed", ("greedy", "sample"))]
        if speculative:  # greedy requests first: samples of a prompt start from its greedy answer
            passes += [("speculative", ("greedy",)), ("speculative", ("sample",))]
        for status, kinds in passes:
            for j in range(self.config.prompts):  # breadth first: every fact's prompt j, then j + 1
                for index, mine in enumerate(self.requests):
                    for kind in kinds:
                        key = (kind, j)
                        if key not in mine or key in self.taken[index] or self._status(index, *key) != status:
                            continue
                        if taken and used + mine[key].rows > rows:
                            return taken
                        taken.append(mine[key])
                        used += mine[key].rows
                        self.taken[index].add(key)
        return taken

    def finish(self, request, texts: list[str]) -> None:
        index, kind, j = request.tag
        self.answers[index][(kind, j)] = list(texts)
        aliases = self.facts[index].aliases
        self.correct[index][(kind, j)] = any(is_correct(t, aliases, self.config.match) for t in texts)

    def wanted(self, request) -> bool:
        index, kind, j = request.tag
        return self._status(index, kind, j) != "unneeded"

    # -- results -----------------------------------------------------------------------------
    def items(self) -> list[dict]:
        """The records, replaying exactly the answers early exit asks for, in prompt order."""
        config, out = self.config, []
        for index, fact in enumerate(self.facts):
            state, answers = _FactState(fact), self.answers[index]
            for j in range(config.prompts):
                if config.early_exit and greedy_settled(state.greedy_correct):
                    break
                state.add(config, j, "greedy", answers[("greedy", j)][0])
            if config.samples and (not config.early_exit or needs_samples(state.greedy_correct, config.prompts)):
                for j in range(config.prompts):
                    if config.early_exit and state.sampled_correct:
                        break
                    for i, text in enumerate(answers[("sample", j)]):
                        state.add(config, j, "sample", text, sample=i)
            out.append({"record": state.record(), "generations": state.generations})
        return out


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


def _chunks(facts: list[Fact], size: int) -> list[list[Fact]]:
    return [facts[i:i + size] for i in range(0, len(facts), size)]


class _Progress:
    """A rich progress bar (facts, facts/s, ETA) on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bar = Progress(TextColumn("probe"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=False)
        self.start, self.done0 = time.perf_counter(), done
        self.task = self.bar.add_task("probe", total=total, completed=done, rate="")
        self.bar.start()

    def advance(self, n: int, completed: int) -> None:
        if self.bar is None:
            return
        rate = (completed - self.done0) / max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.task, advance=n, rate=f"{rate:.2f} facts/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_probe(config: ProbeConfig, facts: list[Fact], model: Any, out_dir: str | os.PathLike, *,
              adapter: str | None = None, shot_pool: list[Fact] | None = None, progress: bool = True,
              limit: int | None = None, on_chunk: Callable[[int], None] | None = None) -> dict:
    """Probe ``facts`` with ``model`` and write categories.jsonl, generations.jsonl, summary.json,
    shots.json and manifest.json to ``out_dir``; returns the summary.

    ``model``: a model spec (``default``, a folder, …), a LoadedModel (its model may be a
    PeftModel), or a ready backend. ``limit``: probe only the first K facts left after the shot
    pool was held out. ``on_chunk(n_done)`` is called after each finished chunk. A rerun with the
    same inputs resumes an interrupted run, or returns the finished run's summary at once.
    """
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
    model_hash = model_identity(model)
    out_dir = Path(out_dir)
    run_key = stable_hash({"v": FORMAT_VERSION, "config": config.model_dump(mode="json"),
                           "model": model_hash, "adapter": _adapter_hash(adapter),
                           "facts": [f.model_dump(mode="json") for f in plan.facts],
                           "shots": _shots_json(plan)}, length=16)
    finished = _finished_summary(out_dir, run_key)
    if finished is not None:
        return finished
    backend, identity = resolve_backend(model, config, adapter)

    start = time.perf_counter()
    partial = out_dir / PARTIAL_NAME
    done = _read_partial(partial, run_key)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(plan.facts, config.batch_size)
    kept = {}
    for chunk in chunks:  # only whole chunks count as done
        if all(f.id in done for f in chunk):
            kept.update({f.id: done[f.id] for f in chunk})
    _rewrite_partial(partial, run_key, [kept[f.id] for f in plan.facts if f.id in kept])
    bar = _Progress(progress, len(plan.facts), len(kept))
    try:
        with open(partial, "a", encoding="utf-8") as fh:
            for chunk in chunks:
                if all(f.id in kept for f in chunk):
                    continue
                items = probe_chunk(chunk, backend, config, plan)
                fh.write("".join(dumps_line(item) for item in items))
                fh.flush()
                os.fsync(fh.fileno())
                kept.update({item["record"]["id"]: item for item in items})
                bar.advance(len(chunk), len(kept))
                if on_chunk is not None:
                    on_chunk(len(kept))
    finally:
        bar.close()
    items = [kept[f.id] for f in plan.facts]
    summary = summarize([i["record"] for i in items], plan.facts)
    summary.update({"held_out_ids": [f.id for f in plan.held_out], "config": config.model_dump(mode="json"),
                    "model_hash": identity["model_hash"], "adapter": adapter,
                    "run_key": run_key, "seconds": round(time.perf_counter() - start, 2)})
    _write_outputs(out_dir, items, plan, summary, config, identity, adapter, run_key)
    partial.unlink(missing_ok=True)
    return summary


def _rewrite_partial(path: Path, run_key: str, items: list[dict]) -> None:
    # Drops stale or cut lines so the file holds exactly the whole chunks that are done.
    from knowpack.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(dumps_line({"run_key": run_key}))
        fh.write("".join(dumps_line(item) for item in items))


def _finished_summary(out_dir: Path, run_key: str) -> dict | None:
    manifest, summary = out_dir / "manifest.json", out_dir / "summary.json"
    if not (manifest.is_file() and summary.is_file() and (out_dir / "categories.jsonl").is_file()):
        return None
    try:
        if read_json(manifest).get("run_key") == run_key:
            return read_json(summary)
    except (OSError, json.JSONDecodeError):
        return None
    return None


def _shots_json(plan: ShotPlan) -> dict:
    if plan.shot_sets is not None:
        return {"mode": "fixed", "sets": [[f.id for f in s] for s in plan.shot_sets],
                "held_out_ids": [f.id for f in plan.held_out]}
    return {"mode": "relation", "pool_size": sum(len(v) for v in (plan.pool_by_relation or {}).values())}


def _write_outputs(out_dir: Path, items: list[dict], plan: ShotPlan, summary: dict, config: ProbeConfig,
                   identity: dict, adapter: str | None, run_key: str) -> None:
    write_jsonl(out_dir / "categories.jsonl", ({k: i["record"][k] for k in CATEGORY_FIELDS} for i in items))
    write_jsonl(out_dir / "generations.jsonl", (g for i in items for g in i["generations"]))
    shots = _shots_json(plan)
    if plan.shot_sets is not None:
        shots["sets"] = [[f.model_dump(mode="json") for f in s] for s in plan.shot_sets]
    else:
        shots["per_fact"] = {f.id: [[s.id for s in st] for st in plan.shots(f, config)] for f in plan.facts}
    write_json(out_dir / "shots.json", shots)
    write_json(out_dir / "summary.json", summary)
    write_manifest(out_dir, stage="probe", config=config, seed=config.seed,
                   inputs={"model": identity["model_hash"], "adapter": _adapter_hash(adapter) or "",
                           "facts": stable_hash([f.model_dump(mode="json") for f in plan.facts], length=16)},
                   extra={"run_key": run_key, "model": identity.get("model", {}), "adapter_path": adapter,
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
    trainer's), a model spec, or a backend. ``fixed`` pool: pass ``shot_sets`` (e.g. the base
    probe's shots.json) or a ``shot_pool`` to build them from. ``relation``: ``shot_pool`` (or
    ``facts``) supplies same-relation shots.
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
    """The fixed shot sets a finished probe used (from its shots.json), to reuse its prompts."""
    data = read_json(Path(probe_dir) / "shots.json")
    if data.get("mode") != "fixed":
        raise KnowpackError(f"{probe_dir} used same-relation shots; there are no fixed shot sets to reuse")
    return [[Fact.model_validate(f) for f in s] for s in data["sets"]]
