"""Evaluation inputs: each is computed once per run by an ``EvalContext`` and handed to the metrics.

Inputs: ``mix``, ``probe``, ``facts``, ``probe_config``, ``match_mode``, ``category_shots``, ``base_probe``,
``adapted_model``, ``canary``, ``adapter_probe``, ``paired_probe``, ``sensitivity_probe``,
``adapter_alt_probe``, ``reliability_answers``, ``answer_log2p``, ``collapse``, ``benchmarks``.
Probe inputs are ``{fact_id: categories.jsonl row}`` dicts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from pathlib import Path
from typing import Any, Iterator

from knowpack.errors import KnowpackError
from knowpack.evaluate.registry import INPUTS, evaluation_input
from knowpack.mix.artifacts import MixFolder
from knowpack.models.adapters import adapter_hash, attach_adapter, base_view, causal_lm, detach_adapter
from knowpack.probe.artifacts import ProbeFolder

log = logging.getLogger(__name__)


def probe_rows(folder: Path) -> dict[str, dict]:
    """A probe folder's categories as ``{fact_id: categories.jsonl row}`` dicts (what metrics consume)."""
    return {fid: row.model_dump(mode="json") for fid, row in ProbeFolder(folder).rows.items()}


class EvalContext:
    """Lazily computes and caches the inputs of one evaluation run."""

    def __init__(self, config, loaded, adapter_dir: Path, mix_dir: Path, out_dir: Path, *,
                 progress: bool = True, mix: MixFolder | None = None, base_cache: Path | None = None,
                 shot_facts: list | None = None):
        self.config, self.loaded = config, loaded
        # Further facts the category shots may come from (a study passes the facts its base probe
        # ran on: the mix folder itself only holds trained and held-out facts).
        self.shot_facts = list(shot_facts or [])
        self.adapter_dir, self.mix_dir, self.out_dir = Path(adapter_dir), Path(mix_dir), Path(out_dir)
        # Where probes of the base model are kept; a study points every cell at one shared folder.
        self.base_cache = Path(base_cache) if base_cache is not None else self.out_dir / "probes"
        self.progress = progress
        self._values: dict[str, Any] = {} if mix is None else {"mix": mix}
        self._active: list[str] = []

    def get(self, name: str) -> Any:
        """The value of input ``name``, computing it (and what it needs) on first use."""
        if name not in self._values:
            if name not in INPUTS:
                raise KnowpackError(f"no evaluation input called {name!r}",
                                    hint=f"known inputs: {', '.join(sorted(INPUTS))}")
            if name in self._active:
                raise RuntimeError(f"evaluation inputs depend on each other in a cycle: {self._active + [name]}")
            self._active.append(name)
            try:
                log.debug("evaluate: computing %s", name)
                self._values[name] = INPUTS[name](self)
            finally:
                self._active.pop()
        return self._values[name]

    def close(self) -> None:
        """Take the adapter's layers out of the caller's model again (PEFT injected them in place).

        A study reuses one loaded model for every cell; leaving LoRA layers behind would make the
        next cell train or probe a modified model. A fully fine-tuned model was loaded beside the
        base model and is simply dropped.
        """
        wrapped = self._values.pop("adapted_model", None)
        if wrapped is not None:
            self.loaded.model = detach_adapter(wrapped.model, self.loaded.model)

    @contextlib.contextmanager
    def base_model(self) -> Iterator[Any]:
        """A LoadedModel behaving as the base model, even after the adapter was injected in place."""
        wrapped = self._values.get("adapted_model")
        if wrapped is None:
            yield self.loaded
            return
        # A PeftModel with its adapter disabled, or the untouched base beside a fine-tuned copy.
        with base_view(wrapped.model, self.loaded.model) as base:
            yield _view(self.loaded, causal_lm(base))


def _view(loaded, model, model_hash: str | None = None):
    from knowpack.models.loading import LoadedModel

    return LoadedModel(model=model, tokenizer=loaded.tokenizer, source=loaded.source,
                       model_hash=model_hash or loaded.model_hash, info=dict(loaded.info))


@evaluation_input("mix")
def _mix(ctx: EvalContext) -> MixFolder:
    return MixFolder(ctx.mix_dir)


@evaluation_input("probe")
def _probe(ctx: EvalContext) -> ProbeFolder:
    """The base-model probe the mixture was drawn from (named in the mix folder's summary)."""
    probe_dir = ctx.get("mix").probe_dir
    if probe_dir is None:
        raise KnowpackError(f"the mix in {ctx.mix_dir} does not name its base-model probe folder",
                            hint="rebuild the mix with `knowpack mix --probe PROBE_DIR`")
    return ProbeFolder(probe_dir)


@evaluation_input("probe_config")
def _probe_config(ctx: EvalContext):
    """The base probe's own settings, with the eval config's ``probe`` overrides on top."""
    from knowpack.probe.config import ProbeConfig

    return ProbeConfig(**{**ctx.get("probe").summary.config, **ctx.config.probe})


@evaluation_input("match_mode")
def _match_mode(ctx: EvalContext) -> str:
    return ctx.get("probe_config").match


@evaluation_input("all_facts")
def _all_facts(ctx: EvalContext) -> dict:
    """The facts that may be re-probed: the eval config's fact file, else the mix's own eval facts
    (every trained and held-out fact, written by `knowpack mix`)."""
    from knowpack.facts.io import read_facts

    if ctx.config.facts:
        return {f.id: f for f in read_facts(ctx.config.facts)}
    return dict(ctx.get("mix").facts)


@evaluation_input("eval_ids")
def _eval_ids(ctx: EvalContext) -> list[str]:
    """Facts to re-probe: every probed fact, or all trained/eval-set facts plus a seeded sample of the rest."""
    mix, facts = ctx.get("mix"), ctx.get("all_facts")
    # A fixed category shot is never probed: it would be its own exemplar.
    shots = {f.id for f in ctx.get("category_shots") or []} if ctx.get("probe_config").shot_pool == "fixed" else set()
    probed = [fid for fid in ctx.get("probe").rows if fid in facts and fid not in shots]
    cap = ctx.config.max_untrained
    if cap is None:
        return probed
    keep = set(mix.trained_ids) | set(mix.eval_sets.all_ids())
    rest = [fid for fid in probed if fid not in keep]
    sample = set(random.Random(f"eval-sample:{ctx.config.seed}").sample(rest, min(cap, len(rest))))
    return [fid for fid in probed if fid in keep or fid in sample]


@evaluation_input("facts")
def _facts(ctx: EvalContext) -> dict:
    facts = ctx.get("all_facts")
    return {fid: facts[fid] for fid in ctx.get("eval_ids")}


@evaluation_input("category_shots")
def _category_shots(ctx: EvalContext) -> list | None:
    """The few-shot exemplars of one SliCK category (``benchmark_shot_category``), or None.

    Candidates are base-probe facts of that category that the mixture neither trains on nor holds
    out, so every evaluated fact stays evaluated and no shot shows a trained answer. ``fixed``
    shots: N×S of them, spread over relations with the probe's seed (the base probe's own rule);
    ``relation`` shots: all of them, each prompt taking same-relation ones.
    """
    from knowpack.probe.prompts import select_spread

    category = ctx.config.benchmark_shot_category
    if category is None:
        return None
    mix, rows, config = ctx.get("mix"), ctx.get("probe").rows, ctx.get("probe_config")
    taken = set(mix.trained_ids) | set(mix.eval_sets.all_ids())
    candidates = {**{f.id: f for f in ctx.shot_facts}, **ctx.get("all_facts")}
    pool = [candidates[fid] for fid in sorted(candidates)
            if fid not in taken and fid in rows and rows[fid].category == category]
    if config.shot_pool == "relation":
        _check_relation_shots(ctx, pool, category)
        return pool
    needed = config.prompts * config.shots
    if needed > len(pool):
        in_probe = sum(row.category == category for row in rows.values())
        raise KnowpackError(
            f"eval.benchmark_shot_category {category}: {config.prompts} prompts × {config.shots} shots need "
            f"{needed} {category} facts outside the mixture, but only {len(pool)} are at hand "
            f"({in_probe} {category} facts in the base probe, the rest trained on, held out or without a fact record)",
            hint="pass the fact file the base probe ran on (eval.facts / --facts), lower "
                 "mix.heldout_per_category or the probe's prompts/shots, or choose another category")
    return select_spread(pool, needed, config.seed)


def _check_relation_shots(ctx: EvalContext, pool: list, category: str) -> None:
    """Same-relation category shots: every relation that is evaluated needs S facts of the category."""
    from collections import Counter

    shots, rows = ctx.get("probe_config").shots, ctx.get("probe").rows
    have = Counter(f.relation for f in pool)
    relations = sorted({f.relation for fid, f in ctx.get("all_facts").items() if fid in rows})
    short = [f"{r!r} has {have[r]}" for r in relations if have[r] < shots]
    if short:
        raise KnowpackError(
            f"eval.benchmark_shot_category {category} with same-relation shots needs {shots} {category} facts "
            f"outside the mixture in every evaluated relation: {'; '.join(short)}",
            hint="pass the fact file the base probe ran on (eval.facts / --facts), use fixed shots "
                 "(probe.shot_pool: fixed), or choose another category")


@evaluation_input("base_probe")
def _base_probe(ctx: EvalContext) -> dict[str, dict]:
    """The base model's categories of the evaluated facts: the base probe's own, or — with category
    shots — a re-probe of the base model with those very shots, so a shift compares like with like."""
    probe = ctx.get("probe")
    if probe.model_hash != ctx.loaded.model_hash:
        raise KnowpackError(f"the base probe in {probe.folder} was run on model {probe.model_hash}, "
                            f"not on the loaded model {ctx.loaded.model_hash}",
                            hint="pass the --model the mix's probe was run on")
    category = ctx.config.benchmark_shot_category
    if category is not None:
        return _base_reprobe(ctx, ctx.get("probe_config"), list(ctx.get("facts").values()), f"shots-{category}")
    rows = probe.rows
    return {fid: rows[fid].model_dump(mode="json") for fid in ctx.get("eval_ids")}


@evaluation_input("adapted_model")
def _adapted_model(ctx: EvalContext):
    from knowpack.io import stable_hash

    wrapped = attach_adapter(ctx.loaded.model, str(ctx.adapter_dir), model_hash=ctx.loaded.model_hash)
    # The adapted model gets its own identity, so the probe's resume logic never mistakes
    # results of another adapter (or of the base model) in the same folder for this one's.
    return _view(ctx.loaded, wrapped, stable_hash([ctx.loaded.model_hash, adapter_hash(ctx.adapter_dir)], length=16))


@evaluation_input("adapter_dir")
def _adapter_dir(ctx: EvalContext) -> Path:
    return ctx.adapter_dir


@evaluation_input("canary")
def _canary(ctx: EvalContext) -> dict:
    from knowpack.evaluate.metrics.canary import adapter_canary

    adapted = ctx.get("adapted_model")
    train = [row.model_dump() for row in ctx.get("mix").train]
    unknown = [r for r in train if r["role"] == "unknown"] or train
    return adapter_canary(adapted.model, adapted.tokenizer, ctx.adapter_dir, unknown[:ctx.config.canary_facts],
                          tolerance=ctx.config.canary_tolerance, base_model=ctx.loaded.model)


def _shot_pool(ctx: EvalContext) -> list | None:
    """The base probe's shot facts, so the adapted model is asked with the very same prompts.

    ``fixed``: the facts of the base probe's shot sets; given the same seed, run_probe arranges
    them into the same sets. ``relation``: every fact, as the base probe had. With
    ``benchmark_shot_category``: the category's exemplars instead (``category_shots``).
    """
    category_shots = ctx.get("category_shots")
    if category_shots is not None:
        return category_shots
    if ctx.get("probe_config").shot_pool == "fixed":
        sets = ctx.get("probe").shot_sets()
        return None if sets is None else [fact for shots in sets for fact in shots]
    return list(ctx.get("all_facts").values())


def _run_probe(ctx: EvalContext, loaded, config, facts: list, name: str, root: Path | None = None) -> dict[str, dict]:
    from knowpack.probe.runner import run_probe

    folder = (root or ctx.out_dir / "probes") / name
    run_probe(config, facts, loaded, folder, shot_pool=_shot_pool(ctx), progress=ctx.progress)
    return probe_rows(folder)


@evaluation_input("adapter_probe")
def _adapter_probe(ctx: EvalContext) -> dict[str, dict]:
    facts = list(ctx.get("facts").values())
    return _run_probe(ctx, ctx.get("adapted_model"), ctx.get("probe_config"), facts, "adapter")


def _untrained(ctx: EvalContext) -> list:
    """The re-probed facts that no training example touched (where shifts are spill-over)."""
    trained = ctx.get("mix").trained_ids
    return [f for fid, f in ctx.get("facts").items() if fid not in trained]


def _base_reprobe(ctx: EvalContext, config, facts: list, name: str) -> dict[str, dict]:
    """A probe of the base model, cached by what decides it: every cell of a study that shares the
    base probe, its held-out facts and the settings computes it once (``EvalContext.base_cache``)."""
    from knowpack.io import stable_hash

    key = stable_hash({"model": ctx.loaded.model_hash, "config": config.result_key(),
                       "facts": [f.model_dump(mode="json") for f in facts],
                       "shots": [f.id for f in _shot_pool(ctx) or []]}, length=16)
    with ctx.base_model() as base:
        return _run_probe(ctx, base, config, facts, f"{name}-{key}", root=ctx.base_cache)


def _other_draw(ctx: EvalContext):
    config = ctx.get("probe_config")
    return config.model_copy(update={"seed": config.seed + ctx.config.noise_seed_offset})


@evaluation_input("paired_probe")
def _paired_probe(ctx: EvalContext) -> dict[str, dict] | None:
    """The base model again with the very same prompts, facts in another order (other batch mates)."""
    if not ctx.config.noise_floor:
        return None
    facts = _untrained(ctx)
    random.Random(f"paired-order:{ctx.config.seed}").shuffle(facts)
    return _base_reprobe(ctx, ctx.get("probe_config"), facts, "paired")


@evaluation_input("sensitivity_probe")
def _sensitivity_probe(ctx: EvalContext) -> dict[str, dict] | None:
    """The base model with the second draw of few-shot prompts."""
    if not ctx.config.noise_floor:
        return None
    return _base_reprobe(ctx, _other_draw(ctx), _untrained(ctx), "other-prompts")


@evaluation_input("adapter_alt_probe")
def _adapter_alt_probe(ctx: EvalContext) -> dict[str, dict] | None:
    """The adapted model with the second draw of prompts (compared with the base model on that draw)."""
    if not (ctx.config.noise_floor and ctx.config.second_draw):
        return None
    config = _other_draw(ctx)
    return _run_probe(ctx, ctx.get("adapted_model"), config, _untrained(ctx), f"adapter-seed{config.seed}")


@evaluation_input("reliability_answers")
def _reliability_answers(ctx: EvalContext) -> dict:
    """All N greedy answers of the adapted model on trained Unknown facts and their held-out paraphrases.

    The probe stops a fact early once its category is settled, so its rows may hold fewer than N
    answers; reliability is a share over fact × prompt pairs and needs every prompt answered.
    """
    from knowpack.evaluate.metrics.reliability import heldout_paraphrases
    from knowpack.probe.matching import is_correct
    from knowpack.probe.runner import greedy_answers_for

    mix, facts = ctx.get("mix"), ctx.get("all_facts")
    trained = [facts[fid] for fid in mix.trained_unknown if fid in facts]
    pairs, excluded = heldout_paraphrases([f.id for f in trained], facts, mix.train_questions)
    variants = [facts[fid].model_copy(update={"id": f"{fid}#para{i}", "question": text, "paraphrases": []})
                for i, (fid, text) in enumerate(pairs)]
    config = ctx.get("probe_config")
    answers = greedy_answers_for(trained + variants, ctx.get("adapted_model"), config, shot_pool=_shot_pool(ctx)) \
        if trained else {}
    return {
        "trained": {f.id: [is_correct(a, f.aliases, config.match) for a in answers[f.id]] for f in trained},
        "paraphrases": [{"fact_id": fid, "paraphrase": text,
                         "correct": [is_correct(a, facts[fid].aliases, config.match) for a in answers[v.id]]}
                        for (fid, text), v in zip(pairs, variants)],
        "excluded": excluded,
    }


def bits_fact_ids(ctx: EvalContext) -> tuple[list[str], list[str]]:
    """(trained Unknown, held-out known) fact ids the bits metric measures.

    Trained facts count only once the adapter was asked about them (reliability) and the base
    probe knows their category; held-out facts only where the base model knew them.
    """
    from knowpack.evaluate.metrics.shifts import KNOWN

    mix, base, adapted = ctx.get("mix"), ctx.get("base_probe"), ctx.get("adapter_probe")
    answered = ctx.get("reliability_answers")["trained"]
    trained = [f for f in mix.trained_unknown if f in answered and f in base]
    heldout = [f for f in mix.eval_sets.ids("heldout")
               if f in base and f in adapted and base[f]["category"] in KNOWN]
    return trained, heldout


@evaluation_input("answer_log2p")
def _answer_log2p(ctx: EvalContext) -> dict[str, Any]:
    """Teacher-forced answer log2-probabilities of the facts the bits metric measures.

    ``{"trained": ids, "heldout": ids, "base": {id: [...]}, "adapted": {id: [...]}}``. Trained and
    held-out facts are measured as two separate groups, each always batched the same way, so a
    fact's values never depend on which other cell ran first. The base model's values on the
    held-out group are the same for every cell of a study that shares it (same model, facts and
    encoding), so they are kept in ``base_cache`` and computed once per seed (they were half of
    the metric's time per cell).
    """
    from knowpack.capacity.bits import answer_log2probs
    from knowpack.io import write_json

    trained, heldout = bits_fact_ids(ctx)
    pool, adapted = ctx.get("mix").facts, ctx.get("adapted_model")
    result: dict[str, Any] = {"trained": trained, "heldout": heldout, "base": {}, "adapted": {}}
    for ids, shared in ((trained, False), (heldout, True)):
        if not ids:
            continue
        items = [(f, pool[f].question, pool[f].answer) for f in ids]
        result["adapted"].update(
            answer_log2probs(adapted.model, adapted.tokenizer, items, max_length=BITS_MAX_LENGTH))
        cache = _log2p_cache_path(ctx, items) if shared else None
        values = _cached_log2p(cache, ids) if cache is not None else None
        if values is None:
            with ctx.base_model() as base:
                values = answer_log2probs(base.model, base.tokenizer, items, max_length=BITS_MAX_LENGTH)
            if cache is not None:
                write_json(cache, values)
        result["base"].update(values)
    return result


def _cached_log2p(path: Path, ids: list[str]) -> dict[str, list[float]] | None:
    """The cached base-model values for ``ids``, or None when absent or unusable (then recomputed)."""
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("cached log-probabilities %s are unreadable (%s); computing them again", path, exc)
        return None
    if not isinstance(values, dict) or sorted(values) != sorted(ids):
        log.warning("cached log-probabilities %s do not cover the facts asked for; computing them again", path)
        return None
    return values


# Long enough for any fact in the training prompt format; the encoder refuses longer ones.
BITS_MAX_LENGTH = 4096


def _log2p_cache_path(ctx: EvalContext, items: list[tuple[str, str, str]]) -> Path:
    """Where the base model's log-probabilities of one group of facts are kept, keyed by what decides them."""
    from knowpack.capacity.bits import ANSWER_LOG2P_VERSION
    from knowpack.io import stable_hash

    key = stable_hash({"model": ctx.loaded.model_hash, "items": items, "max_length": BITS_MAX_LENGTH,
                       "version": ANSWER_LOG2P_VERSION}, length=16)
    return ctx.base_cache / "answer-log2p" / f"{key}.json"


@evaluation_input("collapse")
def _collapse(ctx: EvalContext) -> dict:
    from knowpack.evaluate.metrics.collapse import answer_collapse

    return answer_collapse(ctx.get("base_probe"), ctx.get("adapter_probe"), ctx.get("mix"), ctx.config)


@evaluation_input("benchmarks")
def _benchmarks(ctx: EvalContext) -> dict:
    from knowpack.evaluate.benchmarks.harness import run_benchmarks

    if not ctx.config.benchmarks:
        return {"base": {}, "adapted": {}}
    if not ctx.config.benchmarks_on_controls and not ctx.get("mix").trained_unknown:
        log.debug("evaluate: benchmarks skipped for a control adapter (benchmarks_on_controls: false)")
        return {"base": {}, "adapted": {}, "skipped": "control adapter (benchmarks_on_controls: false)"}
    cache = _benchmark_cache_path(ctx)
    if cache is not None and cache.is_file():
        log.debug("evaluate: base-model benchmarks from cache %s", cache)
        base = json.loads(cache.read_text(encoding="utf-8"))
    else:
        with ctx.base_model() as model:
            base = run_benchmarks(model.model, model.tokenizer, ctx.config)
        if cache is not None:
            from knowpack.io import write_json

            write_json(cache, base)
    adapted = ctx.get("adapted_model")
    return {"base": base, "adapted": run_benchmarks(adapted.model, adapted.tokenizer, ctx.config),
            "base_cache": str(cache) if cache else None}


def _benchmark_cache_path(ctx: EvalContext) -> Path | None:
    """Base results are cached by model hash + benchmark settings + data hashes, so a study runs them once."""
    if not ctx.config.benchmark_cache:
        return None
    from knowpack.evaluate.benchmarks import mmlu
    from knowpack.io import sha256_file, stable_hash
    from knowpack.paths import knowpack_home

    data = {}
    if "mmlu" in ctx.config.benchmarks:
        data["mmlu"] = [sha256_file(mmlu.default_test_path()), sha256_file(mmlu.default_dev_path())]
    if "truthfulqa" in ctx.config.benchmarks and ctx.config.truthfulqa_path and Path(ctx.config.truthfulqa_path).is_file():
        data["truthfulqa"] = sha256_file(ctx.config.truthfulqa_path)
    key = stable_hash({"model": ctx.loaded.model_hash, "settings": ctx.config.benchmark_settings(),
                       "benchmarks": sorted(ctx.config.benchmarks), "data": data}, length=16)
    return knowpack_home() / "benchmarks" / f"{key}.json"
