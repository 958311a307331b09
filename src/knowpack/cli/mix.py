"""`knowpack mix`: build a training mixture from a probe folder and its fact file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from knowpack.cli.options import build_config, config_option
from knowpack.mix.config import MixConfig


def command(
    probe: Path = typer.Option(..., "--probe", help="Probe folder written by `knowpack probe`."),
    facts: str = typer.Option("default", "--facts", help="Fact file the probe was run on, or `default`."),
    unknown: int = typer.Option(..., "--unknown", help="n: Unknown facts to train on."),
    extra: Optional[int] = config_option(MixConfig, "extra"),
    kind: Optional[str] = config_option(MixConfig, "kind"),
    seed: Optional[int] = config_option(MixConfig, "seed"),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    heldout: Optional[int] = config_option(MixConfig, "heldout_per_category", "--heldout-per-category"),
    retention: Optional[int] = config_option(MixConfig, "retention_sample", "--retention-sample"),
    paraphrases: Optional[Path] = typer.Option(None, "--paraphrases",
                                               help="Fact file from `knowpack paraphrase` (adds its paraphrases)."),
) -> None:
    """Build train.jsonl + eval_sets.json: n Unknown facts and k extras each (paraphrases or known facts)."""
    from knowpack.facts.io import read_facts
    from knowpack.mix import build_mixture
    from knowpack.probe.artifacts import ProbeFolder

    config = build_config(MixConfig, dict(unknown=unknown, extra=extra, kind=kind, seed=seed,
                                          heldout_per_category=heldout, retention_sample=retention),
                          command="knowpack mix")
    probe_folder = ProbeFolder(probe)
    generated = None
    if paraphrases is not None:
        generated = {f.id: list(f.paraphrases) for f in read_facts(paraphrases)}
    summary = build_mixture(config, read_facts(facts), probe_folder.category_dicts(), out,
                            paraphrases=generated, probe_dir=Path(probe).resolve())
    conc = summary.concentration
    typer.echo(f"wrote {out}/train.jsonl: {summary.train_examples} examples "
               f"({summary.counts['unknown']} Unknown + {config.extra} {config.kind} each)")
    typer.echo(f"held-out: {json.dumps(summary.counts['heldout'])}; retention sample {summary.counts['retention']}")
    typer.echo(f"most frequent answer {conc['top_answer']!r}: {conc['share']:.1%} of examples")
