"""`knowpack train`: train a LoRA adapter on a mixture's train.jsonl, with per-epoch curves."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from knowpack.errors import KnowpackError
from knowpack.train.config import DEFAULT_PRESET


def command(
    model: str = typer.Option("default", "--model", help="`default`, a local folder, a .gguf file or a hub id."),
    train: Path = typer.Option(..., "--train", help="train.jsonl written by `knowpack mix`."),
    out: Path = typer.Option(..., "--out", help="Output folder (adapter/, checkpoints/, curve.csv)."),
    preset: str = typer.Option(DEFAULT_PRESET, "--preset", help="paper | smollm2 (options below override it)."),
    method: Optional[str] = typer.Option(
        None, "--method", help="lora | rslora | dora | pissa | vera | full (every weight trains; the output is a "
                               "whole model folder; needs --lr 1e-4 or lower)."),
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
    packing: Optional[bool] = typer.Option(
        None, "--packing/--no-packing",
        help="Packed batches (faster; equal to padded up to float rounding). Default: on."),
    processes: Optional[int] = typer.Option(
        None, "--processes", min=1,
        help="Number of processes this run must have (e.g. 2 under `accelerate launch --num_processes 2`); "
             "a launch that started a different number stops with an error."),
    quiet: bool = typer.Option(False, "--quiet", help="No per-epoch progress lines."),
) -> None:
    """Train a PEFT adapter (or, with --method full, the whole model); rerun the same command to resume after a kill."""
    from knowpack.train import load_preset, train_adapter

    config = load_preset(preset, method=method, rank=rank, alpha=alpha, use_rslora=rslora, lr=lr, epochs=epochs,
                         batch_size=batch_size, grad_accum=grad_accum, loss=loss, seed=seed,
                         early_stop=early_stop, packing=packing,
                         targets=[t.strip() for t in targets.split(",") if t.strip()] if targets else None)
    if not Path(train).is_file():
        raise KnowpackError(f"training file not found: {train}", hint="build it with `knowpack mix --out DIR`")
    from knowpack.mix.artifacts import is_done as mixed
    from knowpack.train.inputs import curve_inputs

    # A train.jsonl inside a finished mix folder brings its curve facts and the probe's prompts.
    curves = curve_inputs(Path(train).parent).as_kwargs() if mixed(Path(train).parent) else {}
    summary = train_adapter(config, model, train, out, progress=not quiet, expected_processes=processes,
                            **curves)
    final = summary.get("final") or {}
    parts = [f"adapter: {summary['adapter']}", f"epochs {summary['epochs_run']}/{summary['epochs_planned']}"]
    if final.get("reliability") is not None:
        parts.append(f"reliability {final['reliability']:.3f}")
    if final.get("retention") is not None:
        parts.append(f"retention {final['retention']:.3f}")
    typer.echo("  ".join(parts))
    if summary.get("stopped_early"):
        typer.echo(f"stopped early: {summary['stop_reason']}")
