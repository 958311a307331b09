"""The local executor: every cell in this process, one after another, on the shared model."""

from __future__ import annotations

from typing import Any

from knowpack.progress import progress_bar
from knowpack.study.cells import run_one_cell


class LocalExecutor:
    """Today's sequential loop: the model loaded for the base probe serves every cell, so a
    study pays for one model load; torch uses this process's own thread setting."""

    def run(self, ctx: Any, cells: list, run: Any, *, mlflow: bool) -> None:
        with progress_bar("study", len(cells), unit="cells", enabled=ctx.progress) as bar:
            for i, cell in enumerate(cells, 1):
                bar.describe(f"study: cell {i}/{len(cells)} {cell.title()}")
                run_one_cell(ctx, cell, run, mlflow=mlflow)
                bar.advance(1)
