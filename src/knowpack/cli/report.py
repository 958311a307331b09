"""`knowpack report STUDY_DIR`: aggregate a study and write its self-contained report.html."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def command(
    study_dir: Path = typer.Argument(..., help="A study folder (the `out` of `knowpack study run`), e.g. runs/demo."),
) -> None:
    """Write STUDY_DIR/report.html (figures embedded) plus results.csv, summary.csv, tables/ and plots/."""
    from knowpack.report.html import build_report

    path = build_report(study_dir)
    Console().print(f"report: {path}\ntables: {path.parent / 'tables'}  plots: {path.parent / 'plots'}")
