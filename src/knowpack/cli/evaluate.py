"""`knowpack evaluate`: measure what an adapter learned and what it broke (metrics.json, per_fact.parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from knowpack.cli.options import build_config, config_option
from knowpack.evaluate.config import EvalConfig


def _yaml_section(config_file: Optional[Path]) -> dict:
    """EvalConfig fields from a YAML file: a bare config, or a study YAML's ``eval:`` section."""
    if config_file is None:
        return {}
    from knowpack.study.spec import read_yaml

    data = read_yaml(config_file)
    return data.get("eval", data) if "eval" in data else data


def _split(text: Optional[str]) -> Optional[list[str]]:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _summary_lines(metrics) -> list[str]:
    """The headline numbers of an evaluation, one line each."""
    lines = []
    rel = metrics.value("reliability")
    if rel:
        gen = rel.get("generalization", {})
        lines.append(f"reliability {_fmt(rel.get('reliability'))} on {rel.get('n_facts')} trained Unknown facts"
                     + (f"; held-out paraphrases {_fmt(gen.get('reliability'))}" if "reliability" in gen else ""))
    shifts = metrics.value("shifts.untrained")
    if shifts:
        s, paired = shifts["all"], shifts.get("paired_floor") or {}
        other = shifts.get("prompt_sensitivity") or {}
        lines.append(f"untrained facts (n={s['n']}): positive shift {_fmt(s['positive_share'])}, negative "
                     f"{_fmt(s['negative_share'])}; paired floor {_fmt(paired.get('positive_share'))} / "
                     f"{_fmt(paired.get('negative_share'))}, prompt sensitivity {_fmt(other.get('positive_share'))} / "
                     f"{_fmt(other.get('negative_share'))}")
    ref = metrics.value("refusals.all")
    if ref:
        lines.append(f"refusals (facts): base {_fmt(ref['base']['fact_rate'])} → adapted {_fmt(ref['adapted']['fact_rate'])}")
    for name, result in (metrics.value("benchmarks") or {}).items():
        if name == "harness":
            continue
        if result.get("status"):
            lines.append(f"{name}: {result['status']} ({result.get('hint', '')})")
        else:
            keys = [k for k in result if k.startswith("delta_")]
            lines.append(f"{name}: " + ", ".join(f"{k[6:]} {_fmt(result['base'].get(k[6:]))} → "
                                                  f"{_fmt(result['adapted'].get(k[6:]))}" for k in keys))
    return lines


def command(
    adapter: Path = typer.Option(..., "--adapter", help="Adapter folder written by `knowpack train`."),
    mix: Path = typer.Option(..., "--mix", help="Mix folder the adapter was trained on."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    model: str = typer.Option("default", "--model", help="Base model: `default`, a local folder, a .gguf file or a hub id."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with EvalConfig fields, or a study YAML (its `eval:` section is used)."),
    facts: Optional[str] = config_option(EvalConfig, "facts"),
    metrics: Optional[str] = config_option(EvalConfig, "metrics", help="Comma-separated metric names."),
    benchmarks: Optional[str] = config_option(EvalConfig, "benchmarks", help="Comma-separated: mmlu,truthfulqa; `none` to skip."),
    mmlu_limit: Optional[int] = config_option(EvalConfig, "mmlu_limit"),
    mmlu_subjects: Optional[str] = config_option(EvalConfig, "mmlu_subjects", help="Comma-separated MMLU subjects."),
    truthfulqa: Optional[Path] = config_option(EvalConfig, "truthfulqa_path", "--truthfulqa"),
    max_untrained: Optional[int] = config_option(EvalConfig, "max_untrained"),
    noise_floor: Optional[bool] = config_option(EvalConfig, "noise_floor", "--noise-floor/--no-noise-floor"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Evaluate an adapter: reliability, knowledge shifts vs noise floor, refusals, collapse, benchmarks."""
    from knowpack.evaluate.runner import evaluate

    options = {
        "facts": facts, "metrics": _split(metrics), "max_untrained": max_untrained, "noise_floor": noise_floor,
        "benchmarks": None if benchmarks is None else ([] if benchmarks.strip() == "none" else _split(benchmarks)),
        "mmlu_limit": mmlu_limit, "mmlu_subjects": _split(mmlu_subjects), "truthfulqa_path": truthfulqa,
    }
    eval_config = build_config(EvalConfig, options, command="knowpack evaluate", base=_yaml_section(config))
    result = evaluate(eval_config, model, adapter, mix, out, progress=not quiet)
    for line in _summary_lines(result):
        typer.echo(line)
    typer.echo(f"wrote {out}/metrics.json, per_fact.parquet, transitions.csv")
