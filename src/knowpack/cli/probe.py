"""`knowpack probe`: categorise facts as HighlyKnown / MaybeKnown / WeaklyKnown / Unknown."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from knowpack.errors import KnowpackError


def command(
    model: str = typer.Option("default", "--model", help="`default`, a model folder, a .gguf file or a hub id."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="PEFT adapter folder to probe with."),
    facts: str = typer.Option("default", "--facts", help="Fact file (JSONL/CSV/Parquet) or `default`."),
    out: Path = typer.Option(..., "--out", help="Output folder (categories.jsonl, generations.jsonl, …)."),
    prompts: int = typer.Option(10, "--prompts", help="N few-shot prompts per fact."),
    shots: int = typer.Option(4, "--shots", help="S shots per prompt."),
    samples: int = typer.Option(16, "--samples", help="n sampled answers per prompt (0: 3 categories)."),
    temperature: float = typer.Option(0.5, "--temperature"),
    top_k: int = typer.Option(40, "--top-k"),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens"),
    shot_pool: str = typer.Option("fixed", "--shot-pool", help="fixed (paper) | relation (SliCK)."),
    match: str = typer.Option("word", "--match", help="word | substring (paper) | exact."),
    seed: int = typer.Option(0, "--seed"),
    full: bool = typer.Option(False, "--full", help="No early exit: every greedy answer and sample."),
    batch_size: int = typer.Option(32, "--batch-size",
                                   help="Facts per resumable chunk; up to 4x as many sequences decode together."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Probe only the first K facts."),
    backend: str = typer.Option("hf", "--backend", help="Generation backend."),
) -> None:
    """Probe which facts a model knows (SliCK categories) and write categories.jsonl to --out."""
    from pydantic import ValidationError

    from knowpack.facts.io import read_facts
    from knowpack.probe.config import ProbeConfig
    from knowpack.probe.runner import run_probe

    try:
        config = ProbeConfig(prompts=prompts, shots=shots, samples=samples, temperature=temperature,
                             top_k=top_k, max_new_tokens=max_new_tokens, shot_pool=shot_pool, match=match,
                             seed=seed, early_exit=not full, batch_size=batch_size, backend=backend)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = str(first["loc"][0]).replace("_", "-")
        raise KnowpackError(f"invalid --{option}: {first['msg']}", hint="see `knowpack probe --help`") from None
    if limit is not None and limit < 1:
        raise KnowpackError("invalid --limit: must be at least 1")
    if adapter is not None and not Path(adapter).expanduser().is_dir():
        raise KnowpackError(f"adapter folder not found: {adapter}", hint="pass the folder written by `knowpack train`")
    fact_list = read_facts(facts)
    summary = run_probe(config, fact_list, model, out, adapter=adapter, limit=limit, progress=True)
    shares = "  ".join(f"{c} {summary['counts'][c]} ({summary['shares'][c]:.1%})" for c in summary["counts"])
    typer.echo(f"probed {summary['n']} facts: {shares}")
    typer.echo(f"refused {summary['refusal_rate']:.1%}; held out {len(summary['held_out_ids'])} shot facts; "
               f"wrote {out}/categories.jsonl")
