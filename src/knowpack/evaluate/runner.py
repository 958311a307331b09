"""`evaluate(...)`: canary first, then every selected metric on shared inputs; writes the outputs.

Outputs in ``out_dir``: ``metrics.json`` (one section per metric + ``meta``), ``per_fact.parquet``
(one row per re-probed fact), ``transitions.csv`` (long-format transition matrices) and
``manifest.json``. Re-running with the same inputs and config returns the stored metrics.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from knowpack.evaluate.config import EvalConfig
from knowpack.evaluate.inputs import EvalContext, Mix
from knowpack.evaluate.registry import MetricOutput, select_metrics
from knowpack.io import atomic_path, read_json, sha256_file, stable_hash, write_json, write_manifest

METRICS_FILE = "metrics.json"
PER_FACT_FILE = "per_fact.parquet"
TRANSITIONS_FILE = "transitions.csv"
TRANSITION_COLUMNS = ("comparison", "group", "subgroup", "from", "to", "count", "share")


def adapter_hash(adapter_dir: Path) -> str:
    """Content hash of an adapter folder's weights and config."""
    files = sorted(p for p in Path(adapter_dir).iterdir()
                   if p.name in {"adapter_config.json", "adapter_model.safetensors"})
    return stable_hash({p.name: sha256_file(p) for p in files}, length=16)


def run_key(config: EvalConfig, model_hash: str, adapter_dir: Path, mix_dir: Path) -> dict[str, Any]:
    """What decides this evaluation's results (the reuse key stored in the manifest)."""
    mix_files = [p for p in (Path(mix_dir) / "train.jsonl", Path(mix_dir) / "eval_sets.json") if p.is_file()]
    return {"config": config.model_dump(mode="json"), "model_hash": model_hash,
            "adapter": adapter_hash(adapter_dir), "mix": {p.name: sha256_file(p) for p in mix_files}}


def per_fact_table(ctx: EvalContext, outputs: dict[str, MetricOutput]):
    """One row per re-probed fact: identity columns, then every metric's per-fact columns."""
    import pandas as pd

    mix, facts = ctx.get("mix"), ctx.get("facts")
    roles: dict[str, str] = {}
    for row in mix.train:
        roles.setdefault(row["fact_id"], row.get("role", ""))
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


def evaluate(config: EvalConfig, model, adapter_dir: str | Path, mix_dir: str | Path, out_dir: str | Path, *,
             progress: bool = True) -> dict:
    """Evaluate an adapter against its base model on a mixture; returns the ``metrics.json`` content.

    ``model`` is a ``LoadedModel`` or a model spec for ``load_model``. The adapter canary runs
    first and raises ``KnowpackError`` for an adapter that does not change the model.
    """
    from knowpack.errors import KnowpackError
    from knowpack.models.loading import LoadedModel, load_model

    adapter_dir, mix_dir, out_dir = Path(adapter_dir), Path(mix_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise KnowpackError(f"{adapter_dir} is not a PEFT adapter folder (no adapter_config.json)",
                            hint="pass a folder written by `knowpack train`")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    key = run_key(config, loaded.model_hash, adapter_dir, mix_dir)
    manifest_path = out_dir / "manifest.json"
    if (out_dir / METRICS_FILE).is_file() and manifest_path.is_file() and read_json(manifest_path).get("key") == key:
        return read_json(out_dir / METRICS_FILE)
    specs = select_metrics(config.metrics)
    ctx = EvalContext(config, loaded, adapter_dir, mix_dir, out_dir, progress=progress, mix=Mix.read(mix_dir))
    try:
        ctx.get("canary")  # before anything else: an inert adapter must not produce numbers
        outputs: dict[str, MetricOutput] = {}
        for spec in specs:
            ctx.say(f"metric {spec.name}")
            outputs[spec.name] = spec.fn(config=config, **{name: ctx.get(name) for name in spec.needs})
    finally:
        ctx.close()
    mix = ctx.get("mix")
    metrics: dict[str, Any] = {name: out.summary for name, out in outputs.items()}
    metrics["meta"] = {"model_hash": loaded.model_hash, "adapter": str(adapter_dir), "adapter_hash": key["adapter"],
                       "mix": str(mix_dir), "probe_dir": str(mix.probe_dir) if mix.probe_dir else None,
                       "n_facts": len(ctx.get("facts")), "n_trained_facts": len(mix.trained_ids),
                       "probe_config": ctx.get("probe_config").model_dump(mode="json")}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / PER_FACT_FILE) as tmp:
        per_fact_table(ctx, outputs).to_parquet(tmp, index=False)
    write_transitions(out_dir / TRANSITIONS_FILE, outputs)
    write_json(out_dir / METRICS_FILE, metrics)
    write_manifest(out_dir, stage="evaluate", config=config, seed=config.seed,
                   inputs={"model_hash": loaded.model_hash, "adapter_hash": key["adapter"],
                           "adapter_dir": str(adapter_dir), "mix_dir": str(mix_dir)},
                   extra={"key": key, "metrics": [s.name for s in specs]})
    return metrics
