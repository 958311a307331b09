"""Run store: the study folder's layout (see ``knowpack.study.artifacts``) and each cell's status."""

from __future__ import annotations

import datetime as _dt
import os
import socket
from functools import cached_property
from pathlib import Path
from typing import Any

from knowpack.study.artifacts import STATES, CellRecord, CellStatus, StudyRecord


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class CellStore:
    """Paths, record and status of one cell folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def key(self) -> str:
        return self.root.name

    mix_dir = property(lambda self: self.root / "mix")
    train_dir = property(lambda self: self.root / "train")
    cell_file = property(lambda self: CellRecord.path(self.root))
    status_file = property(lambda self: CellStatus.path(self.root))
    error_log = property(lambda self: self.root / "error.log")

    @cached_property
    def record(self) -> CellRecord:
        """The cell's ``cell.json`` (read once: the runner writes it before using the store)."""
        return CellRecord.read(self.root)

    @property
    def eval_dir(self) -> Path:
        """eval/<eval_key>/ for the evaluation settings named in cell.json."""
        return self.root / "eval" / self.record.eval_key

    def status(self) -> CellStatus:
        """Current status; a ``running`` cell whose process is gone is reported as ``interrupted``."""
        from knowpack.evaluate.artifacts import is_done as evaluated

        if not CellStatus.exists(self.root):
            return CellStatus()
        status = CellStatus.read(self.root)
        if status.state == "running" and not _alive(status):
            status = status.model_copy(update={"state": "interrupted"})
        elif status.state == "done" and not evaluated(self.eval_dir):
            # Trained, but not yet evaluated with the current eval settings.
            status = status.model_copy(update={"state": "pending", "stage": "evaluate"})
        return status

    def write_status(self, state: str, **fields: Any) -> CellStatus:
        """Merge ``fields`` into status.json and set its state (keeps earlier timings)."""
        assert state in STATES, state
        old = CellStatus.read(self.root).model_dump() if CellStatus.exists(self.root) else {}
        status = {**old, **fields, "state": state, "updated": now()}
        if state == "running":
            status.update(pid=os.getpid(), host=socket.gethostname())
        if state != "failed":
            status["error"] = None
        if state in ("done", "pending"):
            status["stage"] = None  # a failed or interrupted cell keeps the stage it stopped in
        record = CellStatus(**status)
        record.write(self.root)
        return record

    def is_done(self) -> bool:
        return self.status().state == "done"


def _alive(status: CellStatus) -> bool:
    """Whether the process that marked a cell running still exists (only checkable on this host)."""
    if status.host != socket.gethostname():
        return True
    if not status.pid:
        return False
    try:
        os.kill(int(status.pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StudyStore:
    """Paths of a study folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    study_file = property(lambda self: StudyRecord.path(self.root))
    cells_dir = property(lambda self: self.root / "cells")
    results_csv = property(lambda self: self.root / "results.csv")
    summary_csv = property(lambda self: self.root / "summary.csv")
    tables_dir = property(lambda self: self.root / "tables")
    plots_dir = property(lambda self: self.root / "plots")
    report_html = property(lambda self: self.root / "report.html")

    def base_dir(self, key: str) -> Path:
        return self.root / "base" / key

    def cell(self, key: str) -> CellStore:
        return CellStore(self.cells_dir / key)

    def record(self) -> StudyRecord | None:
        return StudyRecord.read(self.root) if StudyRecord.exists(self.root) else None

    def cells(self) -> list[CellStore]:
        """Cells of the current grid (listed in study.json), else every cell folder found."""
        found = {p.parent.name for p in self.cells_dir.glob("*/cell.json")} if self.cells_dir.is_dir() else set()
        record = self.record()
        if record is not None:
            # Folders of an earlier, different grid are kept on disk but not mixed into this study's results.
            return [self.cell(k) for k in record.cells if k in found]
        return [self.cell(k) for k in sorted(found)]


def require_mlflow():
    """Import mlflow lazily: it is an optional extra, so say how to install it when missing."""
    from knowpack.errors import KnowpackError

    try:
        import mlflow
    except ImportError:
        raise KnowpackError("--mlflow needs the mlflow package, which is not installed",
                            hint="pip install 'knowpack[mlflow]'  (or drop --mlflow)") from None
    return mlflow


def log_cell_to_mlflow(study_root: str | Path, cell: CellStore) -> None:
    """Log one finished cell (axes as params, scalar metrics, curve per epoch, artifacts) to
    a local file store under the study folder, one MLflow run per cell."""
    from knowpack.evaluate.artifacts import EvalMetrics

    mlflow = require_mlflow()
    study_root = Path(study_root).resolve()
    mlflow.set_tracking_uri((study_root / "mlruns").as_uri())
    mlflow.set_experiment(StudyRecord.read(study_root).name)
    record = cell.record
    metrics = EvalMetrics.read(cell.eval_dir)
    with mlflow.start_run(run_name=f"{record.mixture} {cell.key}"):
        mlflow.log_params({**{k: v for k, v in record.axes.items() if v is not None}, "cell": cell.key})
        for name, value in metrics.scalars().items():
            mlflow.log_metric(name, value)
        curve = cell.train_dir / "curve.csv"
        if curve.is_file():
            import pandas as pd

            for row in pd.read_csv(curve).to_dict("records"):
                for name in ("loss", "reliability", "retention"):
                    if name in row and row[name] == row[name]:
                        mlflow.log_metric(f"curve_{name}", float(row[name]), step=int(row["epoch"]))
        for path in (cell.cell_file, cell.status_file, EvalMetrics.path(cell.eval_dir), curve):
            if path.is_file():
                mlflow.log_artifact(str(path))
