"""`knowpack probe`: categorise facts as HighlyKnown / MaybeKnown / WeaklyKnown / Unknown."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from knowpack.cli.options import build_config, config_option
from knowpack.errors import KnowpackError
from knowpack.probe.config import ProbeConfig


def command(
    model: str = typer.Option("default", "--model", help="`default`, a model folder, a .gguf file or a hub id."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="PEFT adapter folder to probe with."),
    facts: str = typer.Option("default", "--facts", help="Fact file (JSONL/CSV/Parquet) or `default`."),
    out: Path = typer.Option(..., "--out", help="Output folder (categories.jsonl, generations.jsonl, …)."),
    prompts: Optional[int] = config_option(ProbeConfig, "prompts"),
    shots: Optional[int] = config_option(ProbeConfig, "shots"),
    samples: Optional[int] = config_option(ProbeConfig, "samples"),
    temperature: Optional[float] = config_option(ProbeConfig, "temperature"),
    top_k: Optional[int] = config_option(ProbeConfig, "top_k"),
    max_new_tokens: Optional[int] = config_option(ProbeConfig, "max_new_tokens"),
    shot_pool: Optional[str] = config_option(ProbeConfig, "shot_pool", help="fixed (paper) | relation (SliCK)."),
    match: Optional[str] = config_option(ProbeConfig, "match", help="word | substring (paper) | exact."),
    seed: Optional[int] = config_option(ProbeConfig, "seed"),
    full: bool = typer.Option(False, "--full", help="No early exit: every greedy answer and sample."),
    batch_size: Optional[int] = config_option(ProbeConfig, "batch_size"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Probe only the first K facts."),
    backend: Optional[str] = config_option(ProbeConfig, "backend", help="Generation backend."),
) -> None:
    """Probe which facts a model knows (SliCK categories) and write categories.jsonl to --out."""
    from knowpack.facts.io import read_facts
    from knowpack.models.adapters import check_adapter_folder
    from knowpack.probe.runner import run_probe

    options = dict(prompts=prompts, shots=shots, samples=samples, temperature=temperature, top_k=top_k,
                   max_new_tokens=max_new_tokens, shot_pool=shot_pool, match=match, seed=seed,
                   batch_size=batch_size, backend=backend, early_exit=False if full else None)
    config = build_config(ProbeConfig, options, command="knowpack probe")
    if limit is not None and limit < 1:
        raise KnowpackError("invalid --limit: must be at least 1")
    if adapter is not None:
        check_adapter_folder(adapter)
    summary = run_probe(config, read_facts(facts), model, out, adapter=adapter, limit=limit, progress=True)
    shares = "  ".join(f"{c} {summary.counts[c]} ({summary.shares[c]:.1%})" for c in summary.counts)
    typer.echo(f"probed {summary.n} facts: {shares}")
    typer.echo(f"refused {summary.refusal_rate:.1%}; exemplars: {summary.exemplars} "
               f"({len(summary.held_out_ids)} facts of the file held out as shots); wrote {out}/categories.jsonl")
