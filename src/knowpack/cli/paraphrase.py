"""`knowpack paraphrase`: generate K paraphrases per question with a local instruct model."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    facts: str = typer.Option("default", "--facts", help="Fact file (or `default`)."),
    k: int = typer.Option(..., "--k", help="Paraphrases wanted per question."),
    out: Path = typer.Option(..., "--out", help="Fact file to write, with `paraphrases` filled."),
    model: str = typer.Option("default", "--model", help="Instruct model: `default`, a folder, a .gguf or a hub id."),
    seed: int = typer.Option(0, "--seed"),
    rounds: int = typer.Option(3, "--rounds", help="Sampling rounds at most when too few survive the filters."),
    batch_size: int = typer.Option(8, "--batch-size"),
) -> None:
    """Rephrase every question K times (keeps the subject, never the answer); cached by model/facts/K/seed."""
    from knowpack.facts.io import read_facts, write_facts
    from knowpack.facts.paraphrase import ParaphraseConfig, paraphrase_facts
    from knowpack.models import load_model

    config = ParaphraseConfig(k=k, seed=seed, rounds=rounds, batch_size=batch_size)
    source = read_facts(facts)
    result, counts = paraphrase_facts(source, load_model(model), config)
    write_facts(out, result)
    short = {fid: n for fid, n in counts.items() if n < k}
    typer.echo(f"wrote {out}: {len(result)} facts, {sum(counts.values())} new paraphrases")
    if short:
        typer.echo(f"{len(short)} question(s) got fewer than {k} paraphrases that pass the filters "
                   f"(e.g. {next(iter(short))}: {next(iter(short.values()))}); "
                   "raise --rounds or use another --seed/--model")
