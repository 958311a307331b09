"""Evaluation inputs: each is computed once per run by an ``EvalContext`` and handed to the metrics.

Inputs: ``mix``, ``facts``, ``probe_config``, ``match_mode``, ``base_probe``, ``adapted_model``,
``canary``, ``adapter_probe``, ``noise_probe``, ``reliability_answers``, ``collapse``, ``benchmarks``.
Probe inputs are ``{fact_id: categories.jsonl row}`` dicts.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from knowpack.errors import KnowpackError
from knowpack.evaluate.registry import INPUTS, evaluation_input
from knowpack.io import read_json, read_jsonl


@dataclass
class Mix:
    """A mixture folder: training examples, evaluation id sets and the manifest."""

    train: list[dict]
    eval_sets: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    @classmethod
    def read(cls, folder: str | Path) -> "Mix":
        """Read ``train.jsonl``, ``eval_sets.json`` and ``manifest.json`` of a `knowpack mix` folder."""
        folder = Path(folder)
        missing = [n for n in ("train.jsonl", "eval_sets.json") if not (folder / n).is_file()]
        if missing:
            raise KnowpackError(f"{folder} is not a mix folder (missing {', '.join(missing)})",
                                hint="pass the folder written by `knowpack mix`")
        manifest = read_json(folder / "manifest.json") if (folder / "manifest.json").is_file() else {}
        return cls(train=read_jsonl(folder / "train.jsonl"), eval_sets=read_json(folder / "eval_sets.json"),
                   manifest=manifest, folder=folder)

    @property
    def trained_ids(self) -> set[str]:
        """Every fact id with at least one training example (Unknown targets, known extras, paraphrased)."""
        return {row["fact_id"] for row in self.train}

    @property
    def trained_unknown(self) -> list[str]:
        """Ids of the trained Unknown facts (eval_sets.json, else the train rows with role "unknown")."""
        return self.eval_ids("trained_unknown") or list(dict.fromkeys(
            r["fact_id"] for r in self.train if r.get("role") == "unknown"))

    @property
    def target_answers(self) -> list[str]:
        """Distinct answers the adapter was trained to produce."""
        return list(dict.fromkeys(row["answer"] for row in self.train))

    @property
    def train_questions(self) -> set[str]:
        """Normalized keys of every question in train.jsonl (paraphrases included)."""
        from knowpack.evaluate.metrics.reliability import question_key

        return {question_key(row["question"]) for row in self.train}

    def eval_ids(self, name: str) -> list[str]:
        """Ids of one eval set; dict-valued sets (``heldout``) are flattened."""
        value = self.eval_sets.get(name) or []
        if isinstance(value, dict):
            return [fid for ids in value.values() for fid in ids]
        return list(value)

    def all_eval_ids(self) -> list[str]:
        """Every fact id named in eval_sets.json, once."""
        return list(dict.fromkeys(fid for name in self.eval_sets for fid in self.eval_ids(name)))

    @property
    def probe_dir(self) -> Path | None:
        """The base-model probe folder the mix was built from (as recorded in its manifest)."""
        raw = self.manifest.get("probe_dir") or (self.manifest.get("summary") or {}).get("probe_dir") \
            or (self.manifest.get("key") or {}).get("probe_dir")
        if not raw:
            return None
        path = Path(raw)
        if not path.is_absolute() and self.folder is not None and not path.exists():
            path = self.folder / path
        return path


def read_probe(folder: Path) -> dict[str, dict]:
    """``categories.jsonl`` of a probe folder as ``{fact_id: row}``."""
    path = Path(folder) / "categories.jsonl"
    if not path.is_file():
        raise KnowpackError(f"no categories.jsonl in {folder}", hint="pass a folder written by `knowpack probe`")
    return {row["id"]: row for row in read_jsonl(path)}


class EvalContext:
    """Lazily computes and caches the inputs of one evaluation run."""

    def __init__(self, config, loaded, adapter_dir: Path, mix_dir: Path, out_dir: Path, *,
                 progress: bool = True, mix: Mix | None = None):
        self.config, self.loaded = config, loaded
        self.adapter_dir, self.mix_dir, self.out_dir = Path(adapter_dir), Path(mix_dir), Path(out_dir)
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
                self.say(f"computing {name}")
                self._values[name] = INPUTS[name](self)
            finally:
                self._active.pop()
        return self._values[name]

    def close(self) -> None:
        """Take the adapter's layers out of the caller's model again (PEFT injected them in place).

        A study reuses one loaded model for every cell; leaving LoRA layers behind would make the
        next cell train or probe a modified model.
        """
        wrapped = self._values.pop("adapted_model", None)
        if wrapped is not None:
            wrapped.model.unload()

    def say(self, message: str) -> None:
        """One progress line on stderr (unless progress is off)."""
        if self.progress:
            from rich.console import Console

            Console(stderr=True).print(f"[dim]evaluate:[/] {message}", highlight=False)

    @contextlib.contextmanager
    def base_model(self) -> Iterator[Any]:
        """A LoadedModel behaving as the base model, even after the adapter was injected in place."""
        wrapped = self._values.get("adapted_model")
        if wrapped is None:
            yield self.loaded
            return
        with wrapped.model.disable_adapter():
            yield _view(self.loaded, wrapped.model.get_base_model())


def _view(loaded, model, model_hash: str | None = None):
    from knowpack.models.loading import LoadedModel

    return LoadedModel(model=model, tokenizer=loaded.tokenizer, source=loaded.source,
                       model_hash=model_hash or loaded.model_hash, info=dict(loaded.info))


@evaluation_input("mix")
def _mix(ctx: EvalContext) -> Mix:
    return Mix.read(ctx.mix_dir)


def _probe_dir(ctx: EvalContext) -> Path:
    probe_dir = ctx.get("mix").probe_dir
    if probe_dir is None or not (probe_dir / "categories.jsonl").is_file():
        raise KnowpackError(f"the mix in {ctx.mix_dir} does not point to its base-model probe folder",
                            hint="rebuild the mix with `knowpack mix --probe PROBE_DIR`")
    return probe_dir


def _probe_manifest(ctx: EvalContext) -> dict:
    path = _probe_dir(ctx) / "manifest.json"
    return read_json(path) if path.is_file() else {}


@evaluation_input("probe_config")
def _probe_config(ctx: EvalContext):
    from knowpack.probe.config import ProbeConfig

    saved = _probe_manifest(ctx).get("config") or {}
    known = {k: v for k, v in saved.items() if k in ProbeConfig.model_fields}
    return ProbeConfig(**{**known, **ctx.config.probe})


@evaluation_input("match_mode")
def _match_mode(ctx: EvalContext) -> str:
    return ctx.get("probe_config").match


def _facts_candidates(ctx: EvalContext) -> list[Path]:
    """Fact files named by the config, the mix manifest or the probe manifest, in that order."""
    names: list[Any] = [ctx.config.facts]
    for manifest in (ctx.get("mix").manifest, _probe_manifest(ctx)):
        names += [manifest.get("facts"), manifest.get("facts_path"), (manifest.get("inputs") or {}).get("facts_path"),
                  (manifest.get("config") or {}).get("facts")]
    out = []
    for name in names:
        if isinstance(name, str) and name == "default":
            from knowpack.facts.default_set import default_facts_path

            name = str(default_facts_path())
        if isinstance(name, str) and Path(name).expanduser().is_file():
            out.append(Path(name).expanduser())
    return out


@evaluation_input("all_facts")
def _all_facts(ctx: EvalContext) -> dict:
    """The fact file the base probe ran on when known, else the mix's eval facts (trained + held-out)."""
    from knowpack.facts.io import read_facts

    candidates = _facts_candidates(ctx)
    fallback = ctx.mix_dir / "eval_facts.jsonl"
    if not candidates and not fallback.is_file():
        raise KnowpackError("cannot find the fact file the base probe ran on",
                            hint="set `facts:` in the eval config (or --facts PATH)")
    facts = {f.id: f for f in read_facts(candidates[0] if candidates else fallback)}
    return facts


@evaluation_input("eval_ids")
def _eval_ids(ctx: EvalContext) -> list[str]:
    """Facts to re-probe: every probed fact, or all trained/eval-set facts plus a seeded sample of the rest."""
    mix, facts = ctx.get("mix"), ctx.get("all_facts")
    probed = [fid for fid in read_probe(_probe_dir(ctx)) if fid in facts]
    cap = ctx.config.max_untrained
    if cap is None:
        return probed
    keep = set(mix.trained_ids) | set(mix.all_eval_ids())
    rest = [fid for fid in probed if fid not in keep]
    sample = set(random.Random(f"eval-sample:{ctx.config.seed}").sample(rest, min(cap, len(rest))))
    return [fid for fid in probed if fid in keep or fid in sample]


@evaluation_input("facts")
def _facts(ctx: EvalContext) -> dict:
    facts = ctx.get("all_facts")
    return {fid: facts[fid] for fid in ctx.get("eval_ids")}


@evaluation_input("base_probe")
def _base_probe(ctx: EvalContext) -> dict[str, dict]:
    manifest = _probe_manifest(ctx)
    probed_hash = (manifest.get("inputs") or {}).get("model") or manifest.get("model_hash")
    if probed_hash and probed_hash != ctx.loaded.model_hash:
        raise KnowpackError(f"the base probe in {_probe_dir(ctx)} was run on model {probed_hash}, "
                            f"not on the loaded model {ctx.loaded.model_hash}",
                            hint="pass the --model the mix's probe was run on")
    rows = read_probe(_probe_dir(ctx))
    return {fid: rows[fid] for fid in ctx.get("eval_ids")}


@evaluation_input("adapted_model")
def _adapted_model(ctx: EvalContext):
    from knowpack.evaluate.runner import adapter_hash
    from knowpack.io import stable_hash
    from knowpack.probe.backends.adapters import attach_adapter

    wrapped = attach_adapter(ctx.loaded.model, str(ctx.adapter_dir), model_hash=ctx.loaded.model_hash)
    # The adapted model gets its own identity, so the probe's resume logic never mistakes
    # results of another adapter (or of the base model) in the same folder for this one's.
    return _view(ctx.loaded, wrapped, stable_hash([ctx.loaded.model_hash, adapter_hash(ctx.adapter_dir)], length=16))


@evaluation_input("canary")
def _canary(ctx: EvalContext) -> dict:
    from knowpack.evaluate.metrics.canary import adapter_canary

    adapted = ctx.get("adapted_model")
    mix = ctx.get("mix")
    unknown = [r for r in mix.train if r.get("role") == "unknown"] or mix.train
    return adapter_canary(adapted.model, adapted.tokenizer, ctx.adapter_dir, unknown[:ctx.config.canary_facts],
                          tolerance=ctx.config.canary_tolerance)


def _shot_pool(ctx: EvalContext) -> list | None:
    """The base probe's shot facts, so the adapted model is asked with the very same prompts.

    ``fixed``: the facts of the base probe's shot sets (shots.json); given the same seed,
    run_probe arranges them into the same sets. ``relation``: every fact, as the base probe had.
    """
    from knowpack.probe.runner import load_shot_sets

    if ctx.get("probe_config").shot_pool == "fixed":
        if not (_probe_dir(ctx) / "shots.json").is_file():
            return None
        return [fact for shots in load_shot_sets(_probe_dir(ctx)) for fact in shots]
    return list(ctx.get("all_facts").values())


def _run_probe(ctx: EvalContext, loaded, config, facts: list, name: str) -> dict[str, dict]:
    from knowpack.probe.runner import run_probe

    folder = ctx.out_dir / "probes" / name
    run_probe(config, facts, loaded, folder, shot_pool=_shot_pool(ctx), progress=ctx.progress)
    return read_probe(folder)


@evaluation_input("adapter_probe")
def _adapter_probe(ctx: EvalContext) -> dict[str, dict]:
    facts = list(ctx.get("facts").values())
    return _run_probe(ctx, ctx.get("adapted_model"), ctx.get("probe_config"), facts, "adapter")


@evaluation_input("noise_probe")
def _noise_probe(ctx: EvalContext) -> dict[str, dict] | None:
    if not ctx.config.noise_floor:
        return None
    config = ctx.get("probe_config")
    config = config.model_copy(update={"seed": config.seed + ctx.config.noise_seed_offset})
    facts = list(ctx.get("facts").values())
    # A different order puts different facts in each batch, so padding/batching noise is included.
    random.Random(f"noise-order:{config.seed}").shuffle(facts)
    with ctx.base_model() as base:
        return _run_probe(ctx, base, config, facts, f"noise-seed{config.seed}")


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


@evaluation_input("collapse")
def _collapse(ctx: EvalContext) -> dict:
    from knowpack.evaluate.metrics.collapse import answer_collapse

    return answer_collapse(ctx.get("base_probe"), ctx.get("adapter_probe"), ctx.get("mix"), ctx.config)


@evaluation_input("benchmarks")
def _benchmarks(ctx: EvalContext) -> dict:
    from knowpack.evaluate.benchmarks.harness import run_benchmarks

    if not ctx.config.benchmarks:
        return {"base": {}, "adapted": {}}
    cache = _benchmark_cache_path(ctx)
    if cache is not None and cache.is_file():
        ctx.say(f"base-model benchmarks from cache {cache}")
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
