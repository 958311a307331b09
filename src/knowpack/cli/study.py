"""`knowpack study run|status`: drive a whole grid of mixtures from one YAML file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from knowpack.cli.options import config_option, given
from knowpack.study.executors import EXECUTORS
from knowpack.study.executors.ray_executor import RayConfig

app = typer.Typer(help="Run a grid study (probe once, then mix → train → evaluate per cell).",
                  no_args_is_help=True)

_SET_HELP = "Override a spec value: --set train.epochs=3 (dotted key path, YAML value); repeatable."


@app.command("run")
def run(
    config: Path = typer.Argument(..., help="Study YAML, e.g. configs/demo.yaml."),
    set_: list[str] = typer.Option(None, "--set", help=_SET_HELP),
    mlflow: bool = typer.Option(False, "--mlflow", help="Also log every cell to a local MLflow store (study/mlruns)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    executor: str = typer.Option("local", "--executor", help=f"Who runs the cells: {' or '.join(EXECUTORS)} "
                                 "(ray: one Ray task per cell; needs knowpack's `ray` extra)."),
    address: str = config_option(RayConfig, "address"),
    cpus_per_cell: int = config_option(RayConfig, "cpus_per_cell", min=1),
    gpus_per_cell: float = config_option(RayConfig, "gpus_per_cell", min=0),
) -> None:
    """Run every cell of the study; finished cells are skipped, interrupted ones resume."""
    from knowpack.study.executors import make_executor
    from knowpack.study.plan import load_study
    from knowpack.study.runner import run_study
    from knowpack.study.status import status_rows, status_table
    from knowpack.study.store import require_mlflow

    runner = make_executor(executor, given({"address": address, "cpus_per_cell": cpus_per_cell,
                                            "gpus_per_cell": gpus_per_cell}))
    study = load_study(config, set_ or [])
    if mlflow:
        require_mlflow()  # fail before hours of work, not after the first cell
    result = run_study(study, progress=not quiet, mlflow=mlflow, executor=runner)
    out = Console()
    out.print(status_table(status_rows(result.out_dir, [c.key for c in result.cells]), title=f"study {study.spec.name}"))
    out.print(f"results: {result.out_dir / 'results.csv'}  (report: knowpack report {result.out_dir})")
    if result.failed:
        Console(stderr=True).print(f"[red]{len(result.failed)} cell(s) failed[/]; see error.log in their folders, "
                                   "rerun the same command to retry them")
        raise typer.Exit(1)


@app.command("status")
def status(
    config: Path = typer.Argument(..., help="Study YAML used for `study run`."),
    set_: list[str] = typer.Option(None, "--set", help=_SET_HELP),
) -> None:
    """Show a table of the study's cells: pending, running, done, failed or interrupted."""
    from knowpack.study.grid import expand_grid
    from knowpack.study.plan import load_study
    from knowpack.study.status import status_rows, status_table

    study = load_study(config, set_ or [])
    rows = status_rows(study.out_dir, [c.key for c in expand_grid(study)])
    Console().print(status_table(rows, title=f"study {study.spec.name} ({study.out_dir})"))
