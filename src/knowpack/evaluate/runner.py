"""`evaluate(...)`: canary first, then every selected metric on shared inputs; writes the outputs.

Outputs in ``out_dir``: ``metrics.json`` (:class:`EvalMetrics`: one section per metric + ``meta``),
``per_fact.parquet`` (one row per re-probed fact), ``transitions.csv`` (long-format transition
matrices), the re-probes under ``probes/`` and ``manifest.json`` (written last). Re-running with
the same inputs and config returns the stored metrics; a folder holding an evaluation with other
settings is refused before any work.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from knowpack.evaluate.artifacts import EvalMeta, EvalMetrics
from knowpack.evaluate.config import EvalConfig
from knowpack.evaluate.inputs import EvalContext
from knowpack.evaluate.registry import MetricOutput, select_metrics
from knowpack.io import atomic_path, sha256_file, stable_hash
from knowpack.manifest import claim_folder, stamp
from knowpack.mix.artifacts import EvalSets, MixFolder, TrainRow
from knowpack.models.adapters import adapter_hash, check_adapter_folder

PER_FACT_FILE = "per_fact.parquet"
TRANSITIONS_FILE = "transitions.csv"
TRANSITION_COLUMNS = ("comparison", "group", "subgroup", "from", "to", "count", "share")
log = logging.getLogger(__name__)


def run_key(config: EvalConfig, model_hash: str, adapter_dir: Path, mix_dir: Path,
            shot_facts: list | None = None) -> dict[str, Any]:
    """What decides this evaluation's results (the reuse key stored in the manifest)."""
    mix_files = [TrainRow.path(mix_dir), EvalSets.path(mix_dir)]
    key = {"config": config.model_dump(mode="json"), "model_hash": model_hash,
           "adapter": adapter_hash(adapter_dir), "mix": {p.name: sha256_file(p) for p in mix_files}}
    if shot_facts and config.benchmark_shot_category is not None:
        # The facts category shots are drawn from decide the shots, hence the numbers.
        key["shot_facts"] = stable_hash(sorted(f.model_dump_json() for f in shot_facts), length=16)
    return key


def per_fact_table(ctx: EvalContext, outputs: dict[str, MetricOutput]):
    """One row per re-probed fact: identity columns, then every metric's per-fact columns."""
    import pandas as pd

    mix, facts = ctx.get("mix"), ctx.get("facts")
    roles: dict[str, str] = {}
    for row in mix.train:
        roles.setdefault(row.fact_id, row.role)
    rows = []
    for fid, fact in facts.items():
        row: dict[str, Any] = {"id": fid, "relation": fact.relation, "tier": fact.tier, "domain": fact.domain,
                               "trained": fid in roles, "role": roles.get(fid)}
        for out in outputs.values():
            row.update(out.per_fact.get(fid, {}))
        rows.append(row)
    return pd.DataFrame(rows)


def write_transitions(path: Path, outputs: dict[str, MetricOutput]) -> None:
    """All metrics' transition rows as one CSV (atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=TRANSITION_COLUMNS)
        writer.writeheader()
        for out in outputs.values():
            writer.writerows(out.transitions)


def _shots_meta(ctx: EvalContext) -> dict[str, Any] | None:
    """Which exemplars the fact re-probes used when they came from one category (None: the base probe's)."""
    shots = ctx.get("category_shots")
    if shots is None:
        return None
    return {"category": ctx.config.benchmark_shot_category, "mode": ctx.get("probe_config").shot_pool,
            "ids": [f.id for f in shots]}


def evaluate(config: EvalConfig, model, adapter_dir: str | Path, mix_dir: str | Path, out_dir: str | Path, *,
             progress: bool = True, base_cache: str | Path | None = None,
             shot_facts: list | None = None) -> EvalMetrics:
    """Evaluate an adapter against its base model on a mixture; returns ``metrics.json``.

    ``model`` is a ``LoadedModel`` or a model spec for ``load_model``. The adapter canary runs
    first and raises ``KnowpackError`` for an adapter that does not change the model.
    ``base_cache``: where the base model's re-probes (paired floor, prompt sensitivity) are kept;
    a study passes one folder for all its cells, so each is computed once per seed, not per cell.
    ``shot_facts``: further facts (with the base probe's categories) that ``benchmark_shot_category``
    exemplars may be drawn from — a study passes the facts its base probe ran on.
    """
    from knowpack.models.loading import LoadedModel, load_model

    adapter_dir, mix_dir, out_dir = check_adapter_folder(adapter_dir), Path(mix_dir), Path(out_dir)
    mix = MixFolder(mix_dir)
    specs = select_metrics(config.metrics)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    key = run_key(config, loaded.model_hash, adapter_dir, mix_dir, shot_facts)
    if claim_folder(out_dir, stage="evaluate", key=key, command="knowpack evaluate") == "finished":
        return EvalMetrics.read(out_dir)
    ctx = EvalContext(config, loaded, adapter_dir, mix_dir, out_dir, progress=progress, mix=mix,
                      base_cache=base_cache, shot_facts=shot_facts)
    try:
        ctx.get("canary")  # before anything else: an inert adapter must not produce numbers
        outputs: dict[str, MetricOutput] = {}
        for spec in specs:
            log.debug("evaluate: metric %s", spec.name)
            outputs[spec.name] = spec.fn(config=config, **{name: ctx.get(name) for name in spec.needs})
    finally:
        ctx.close()
    meta = EvalMeta(model_hash=loaded.model_hash, adapter=str(adapter_dir), adapter_hash=key["adapter"],
                    mix=str(mix_dir), probe_dir=str(mix.probe_dir) if mix.probe_dir else None,
                    n_facts=len(ctx.get("facts")), n_trained_facts=len(mix.trained_ids),
                    probe_config=ctx.get("probe_config").model_dump(mode="json"), shots=_shots_meta(ctx))
    metrics = EvalMetrics(meta=meta, **{name: out.summary for name, out in outputs.items()})
    with atomic_path(out_dir / PER_FACT_FILE) as tmp:
        per_fact_table(ctx, outputs).to_parquet(tmp, index=False)
    write_transitions(out_dir / TRANSITIONS_FILE, outputs)
    metrics.write(out_dir)
    stamp(out_dir, stage="evaluate", config=config, key=key, seed=config.seed,
          inputs={"model": loaded.model_hash, "adapter": key["adapter"]},
          details={"adapter_dir": str(adapter_dir), "mix_dir": str(mix_dir), "metrics": [s.name for s in specs]})
    return metrics
