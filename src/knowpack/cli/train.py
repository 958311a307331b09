"""`knowpack train`: train a LoRA adapter on a mixture's train.jsonl, with per-epoch curves."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from knowpack.errors import KnowpackError


def curve_inputs(train_file: Path) -> dict:
    """Curve facts, retention facts and shot sets found next to ``train_file`` (written by `knowpack mix`).

    Missing files mean no curves (loss only); they are not an error.
    """
    from knowpack.facts.schema import Fact
    from knowpack.io import read_json, read_jsonl

    folder = Path(train_file).parent
    sets_file, facts_file = folder / "eval_sets.json", folder / "eval_facts.jsonl"
    if not (sets_file.is_file() and facts_file.is_file()):
        return {}
    sets = read_json(sets_file)
    by_id = {row["id"]: Fact(**row) for row in read_jsonl(facts_file)}
    inputs: dict = {"curve_facts": [by_id[i] for i in sets.get("trained_unknown", []) if i in by_id],
                    "retention_facts": [by_id[i] for i in sets.get("retention", []) if i in by_id]}
    # Without the probe's shots.json, shots come from held-out facts that are evaluated by
    # neither curve, so no fact is ever a shot in its own prompt.
    evaluated = set(sets.get("trained_unknown", [])) | set(sets.get("retention", []))
    inputs["shot_pool"] = [f for i, f in by_id.items() if i not in evaluated and i not in sets.get("trained_known", [])]
    manifest = folder / "manifest.json"
    probe_dir = read_json(manifest).get("summary", {}).get("probe_dir") if manifest.is_file() else None
    if probe_dir:
        probe_dir = Path(probe_dir)
        if (probe_dir / "shots.json").is_file():
            inputs["shot_sets"] = read_json(probe_dir / "shots.json")
        probe_manifest = probe_dir / "manifest.json"
        if probe_manifest.is_file():
            from knowpack.probe.config import ProbeConfig

            config = read_json(probe_manifest).get("config")
            if isinstance(config, dict):
                inputs["probe_config"] = ProbeConfig(**config)
    return inputs


def _shot_sets(inputs: dict) -> dict:
    """Replace the spare ``shot_pool`` by shot sets when the probe folder gave none."""
    pool = inputs.pop("shot_pool", None)
    if "shot_sets" in inputs or not inputs.get("curve_facts") or not pool:
        return inputs
    from knowpack.probe.config import ProbeConfig
    from knowpack.probe.prompts import build_shot_sets

    config = inputs.setdefault("probe_config", ProbeConfig())
    if config.shot_pool == "fixed" and len(pool) >= config.prompts * config.shots:
        inputs["shot_sets"] = build_shot_sets(pool, config)
    return inputs


def command(
    model: str = typer.Option("default", "--model", help="`default`, a local folder, a .gguf file or a hub id."),
    train: Path = typer.Option(..., "--train", help="train.jsonl written by `knowpack mix`."),
    out: Path = typer.Option(..., "--out", help="Output folder (adapter/, checkpoints/, curve.csv)."),
    preset: str = typer.Option("paper", "--preset", help="paper | smollm2 (options below override it)."),
    rank: Optional[int] = typer.Option(None, "--rank"),
    alpha: Optional[float] = typer.Option(None, "--alpha"),
    rslora: Optional[bool] = typer.Option(None, "--rslora/--no-rslora"),
    targets: Optional[str] = typer.Option(None, "--targets", help="Comma-separated module names, e.g. gate_proj,up_proj."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum"),
    loss: Optional[str] = typer.Option(None, "--loss", help="answer (answer tokens only) | all (every token, as the paper's code)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    early_stop: Optional[bool] = typer.Option(None, "--early-stop/--no-early-stop"),
    processes: Optional[int] = typer.Option(
        None, "--processes", min=1,
        help="Number of processes this run must have (e.g. 2 under `accelerate launch --num_processes 2`); "
             "a launch that started a different number stops with an error."),
    quiet: bool = typer.Option(False, "--quiet", help="No per-epoch progress lines."),
) -> None:
    """Train a LoRA adapter; rerun the same command to resume after a kill."""
    from knowpack.train import load_preset, train_adapter

    config = load_preset(preset, rank=rank, alpha=alpha, use_rslora=rslora, lr=lr, epochs=epochs,
                         batch_size=batch_size, grad_accum=grad_accum, loss=loss, seed=seed,
                         early_stop=early_stop,
                         targets=[t.strip() for t in targets.split(",") if t.strip()] if targets else None)
    if not Path(train).is_file():
        raise KnowpackError(f"training file not found: {train}", hint="build it with `knowpack mix --out DIR`")
    summary = train_adapter(config, model, train, out, progress=not quiet, expected_processes=processes,
                            **_shot_sets(curve_inputs(train)))
    final = summary.get("final") or {}
    parts = [f"adapter: {summary['adapter']}", f"epochs {summary['epochs_run']}/{summary['epochs_planned']}"]
    if final.get("reliability") is not None:
        parts.append(f"reliability {final['reliability']:.3f}")
    if final.get("retention") is not None:
        parts.append(f"retention {final['retention']:.3f}")
    typer.echo("  ".join(parts))
    if summary.get("stopped_early"):
        typer.echo(f"stopped early: {summary['stop_reason']}")
