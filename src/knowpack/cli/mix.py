"""`knowpack mix`: build a training mixture from a probe folder and its fact file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from knowpack.errors import KnowpackError


def read_categories(probe_dir: Path) -> list[dict]:
    """The probe's ``categories.jsonl`` rows (DESIGN.md "Probe output")."""
    from knowpack.io import read_jsonl

    path = Path(probe_dir) / "categories.jsonl"
    if not path.is_file():
        raise KnowpackError(f"{path} not found",
                            hint="pass the folder written by `knowpack probe` (it holds categories.jsonl)")
    return read_jsonl(path)


def command(
    probe: Path = typer.Option(..., "--probe", help="Probe folder (with categories.jsonl)."),
    facts: str = typer.Option("default", "--facts", help="Fact file the probe was run on, or `default`."),
    unknown: int = typer.Option(..., "--unknown", help="n: Unknown facts to train on."),
    extra: int = typer.Option(0, "--extra", help="k: extra items per Unknown fact."),
    kind: str = typer.Option("paraphrase", "--kind", help="highly_known | maybe_known | paraphrase."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    heldout: int = typer.Option(50, "--heldout-per-category", help="Held-out facts per category."),
    retention: int = typer.Option(20, "--retention-sample", help="Held-out HighlyKnown facts for curves."),
    paraphrases: Optional[Path] = typer.Option(None, "--paraphrases",
                                               help="Fact file from `knowpack paraphrase` (adds its paraphrases)."),
) -> None:
    """Build train.jsonl + eval_sets.json: n Unknown facts and k extras each (paraphrases or known facts)."""
    from pydantic import ValidationError

    from knowpack.facts.io import read_facts
    from knowpack.mix import MixConfig, build_mixture

    try:
        config = MixConfig(unknown=unknown, extra=extra, kind=kind, seed=seed,
                           heldout_per_category=heldout, retention_sample=retention)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise KnowpackError(f"invalid --{first['loc'][0]}: {first['msg']}",
                            hint="see `knowpack mix --help`") from None
    generated = None
    if paraphrases is not None:
        generated = {f.id: list(f.paraphrases) for f in read_facts(paraphrases)}
    summary = build_mixture(config, read_facts(facts), read_categories(probe), out,
                            paraphrases=generated, probe_dir=Path(probe).resolve())
    conc = summary["concentration"]
    typer.echo(f"wrote {out}/train.jsonl: {summary['train_examples']} examples "
               f"({summary['counts']['unknown']} Unknown + {extra} {kind} each)")
    typer.echo(f"held-out: {json.dumps(summary['counts']['heldout'])}; retention sample {summary['counts']['retention']}")
    typer.echo(f"most frequent answer {conc['top_answer']!r}: {conc['share']:.1%} of examples")
