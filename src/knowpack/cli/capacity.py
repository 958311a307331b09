"""`knowpack capacity`: how many new facts (and bits) fit an adapter before a limit is reached."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from knowpack.capacity.spec import CapacitySection
from knowpack.cli.options import config_option, given
from knowpack.errors import KnowpackError


def _int_list(option: str, text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KnowpackError(f"{option} takes comma-separated integers, got {text!r}",
                            hint=f"e.g. {option} 1,4,16") from None


def _str_list(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _summary(results, out_dir: Path) -> None:
    from rich.table import Table

    table = Table(title=f"capacity {results.name}")
    for column in ("method", "rank", "trainable parameters", "n found", "bound by", "trials"):
        table.add_column(column)
    for arm in results.arms:
        params = f"{arm.trainable_parameters:,}" if arm.trainable_parameters else "?"
        rank = "—" if arm.rank is None else str(arm.rank)  # full fine-tuning has no rank
        table.add_row(arm.method, rank, params, str(arm.search.n_found), ", ".join(arm.search.bound_by),
                      str(arm.search.trials_used))
    out = Console()
    out.print(table)
    out.print(f"results: {out_dir / 'capacity.csv'}  (report: knowpack report {out_dir})")


def command(
    config: Optional[Path] = typer.Argument(None, help="Capacity YAML (a study spec with a capacity: section), "
                                                       "e.g. configs/capacity.yaml; flags override it."),
    model: Optional[str] = typer.Option(None, "--model", help="`default`, a local folder, a .gguf file or a hub id."),
    ranks: Optional[str] = typer.Option(None, "--ranks", help="Comma-separated ranks, e.g. 1,4,16."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated PEFT methods, e.g. lora,dora."),
    reliability: Optional[float] = config_option(CapacitySection, "reliability"),
    max_negative_shift: Optional[float] = config_option(CapacitySection, "max_negative_shift"),
    max_mmlu_drop: Optional[float] = config_option(CapacitySection, "max_mmlu_drop"),
    max_refusal_change: Optional[float] = config_option(CapacitySection, "max_refusal_change"),
    kind: Optional[str] = config_option(CapacitySection, "kind"),
    extra: Optional[int] = config_option(CapacitySection, "extra"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds of every trial, e.g. 1,2,3."),
    n_min: Optional[int] = config_option(CapacitySection, "n_min"),
    n_max: Optional[int] = config_option(CapacitySection, "n_max"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (a study folder plus capacity.*)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a spec value: --set train.epochs=3; repeatable."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Search, per method and rank, the largest n of new facts that keeps every limit; rerun to resume."""
    from knowpack.capacity.driver import run_capacity
    from knowpack.capacity.spec import load_capacity

    options: dict[str, Any] = given({
        "model": model, "out": str(out) if out is not None else None, "ranks": _int_list("--ranks", ranks),
        "methods": _str_list(methods), "reliability": reliability, "max_negative_shift": max_negative_shift,
        "max_mmlu_drop": max_mmlu_drop, "max_refusal_change": max_refusal_change, "kind": kind, "extra": extra,
        "seeds": _int_list("--seeds", seeds), "n_min": n_min, "n_max": n_max})
    run = load_capacity(config, overrides=set_ or [], options=options)
    results = run_capacity(run, progress=not quiet)
    _summary(results, run.out_dir)
