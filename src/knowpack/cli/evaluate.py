"""`knowpack evaluate`: measure what an adapter learned and what it broke (metrics.json, per_fact.parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _config(config_file: Optional[Path], overrides: dict):
    """EvalConfig from an optional YAML file (a bare config or a study's `eval:` section) + CLI options."""
    import yaml
    from pydantic import ValidationError

    from knowpack.errors import KnowpackError
    from knowpack.evaluate.config import EvalConfig

    data: dict = {}
    if config_file is not None:
        try:
            data = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise KnowpackError(f"cannot read {config_file}: {exc}", hint="pass a YAML file") from None
        if not isinstance(data, dict):
            data = {}
        data = data.get("eval", data.get("evaluate", data))  # a study YAML nests it under `eval:`
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return EvalConfig(**data)
    except ValidationError as exc:
        raise KnowpackError(f"invalid evaluation config: {exc}".splitlines()[0] + "\n" + str(exc),
                            hint="see `knowpack evaluate --help` for the options") from None


def _print_summary(metrics: dict, out: Path) -> None:
    from rich.console import Console

    console = Console()

    def fmt(x) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    rel = metrics.get("reliability", {})
    if rel:
        gen = rel.get("generalization", {})
        console.print(f"reliability {fmt(rel.get('reliability'))} on {rel.get('n_facts')} trained Unknown facts"
                      + (f"; held-out paraphrases {fmt(gen.get('reliability'))}" if "reliability" in gen else ""))
    shifts = metrics.get("shifts", {}).get("untrained", {})
    if shifts:
        s, noise = shifts["all"], shifts.get("noise_floor") or {}
        console.print(f"untrained facts (n={s['n']}): positive shift {fmt(s['positive_share'])} "
                      f"(noise {fmt(noise.get('positive_share'))}), negative {fmt(s['negative_share'])} "
                      f"(noise {fmt(noise.get('negative_share'))})")
    ref = metrics.get("refusals", {}).get("all", {})
    if ref:
        console.print(f"refusals (facts): base {fmt(ref['base']['fact_rate'])} → adapted {fmt(ref['adapted']['fact_rate'])}")
    for name, result in metrics.get("benchmarks", {}).items():
        if name == "harness":
            continue
        if result.get("status"):
            console.print(f"{name}: {result['status']} ({result.get('hint', '')})")
        else:
            keys = [k for k in result if k.startswith("delta_")]
            parts = [f"{k[6:]} {fmt(result['base'].get(k[6:]))} → {fmt(result['adapted'].get(k[6:]))}" for k in keys]
            console.print(f"{name}: " + ", ".join(parts))
    console.print(f"wrote {out}/metrics.json, per_fact.parquet, transitions.csv")


def command(
    adapter: Path = typer.Option(..., "--adapter", help="Adapter folder written by `knowpack train`."),
    mix: Path = typer.Option(..., "--mix", help="Mix folder (train.jsonl, eval_sets.json) the adapter was trained on."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    model: str = typer.Option("default", "--model", help="Base model: `default`, a local folder, a .gguf file or a hub id."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with EvalConfig fields, or a study YAML (its `eval:` section is used)."),
    facts: Optional[str] = typer.Option(None, "--facts", help="Fact file the base probe ran on (default: from the manifests)."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metric names (default: all)."),
    benchmarks: Optional[str] = typer.Option(None, "--benchmarks", help="Comma-separated: mmlu,truthfulqa; `none` to skip."),
    mmlu_limit: Optional[int] = typer.Option(None, "--mmlu-limit", help="MMLU questions per subject."),
    mmlu_subjects: Optional[str] = typer.Option(None, "--mmlu-subjects", help="Comma-separated MMLU subjects."),
    truthfulqa: Optional[Path] = typer.Option(None, "--truthfulqa", help="Local TruthfulQA file (JSON/JSONL/Parquet/CSV)."),
    max_untrained: Optional[int] = typer.Option(None, "--max-untrained", help="Re-probe at most this many untrained facts."),
    noise_floor: Optional[bool] = typer.Option(None, "--noise-floor/--no-noise-floor", help="Probe the base model again with another seed."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines."),
) -> None:
    """Evaluate an adapter: reliability, knowledge shifts vs noise floor, refusals, collapse, benchmarks."""
    from knowpack.evaluate.runner import evaluate

    split = (lambda s: [x.strip() for x in s.split(",") if x.strip()])  # noqa: E731
    overrides = {
        "facts": facts, "metrics": split(metrics) if metrics else None,
        "benchmarks": ([] if benchmarks.strip() == "none" else split(benchmarks)) if benchmarks is not None else None,
        "mmlu_limit": mmlu_limit, "mmlu_subjects": split(mmlu_subjects) if mmlu_subjects else None,
        "truthfulqa_path": truthfulqa, "max_untrained": max_untrained, "noise_floor": noise_floor,
    }
    result = evaluate(_config(config, overrides), model, adapter, mix, out, progress=not quiet)
    _print_summary(result, out)
