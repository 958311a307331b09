"""Run store: the on-disk layout of a study folder and each cell's status file.

```
<out>/study.json                  resolved spec (after --set overrides) + cell keys
<out>/facts.jsonl                 the facts actually used (sampled or copied)
<out>/base/<hash>/                base-model probe, shared by every cell
<out>/cells/<key>/cell.json       effective cell config
<out>/cells/<key>/status.json     pending | running | done | failed (+ error, timings)
<out>/cells/<key>/{mix,train}/        stage outputs that make the adapter
<out>/cells/<key>/eval/<eval_key>/    its evaluation under one set of eval settings
<out>/results.csv, summary.csv, tables/, plots/, report.html
```
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from pathlib import Path
from typing import Any

from knowpack.io import read_json, write_json

STATES = ("pending", "running", "done", "failed", "interrupted")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class CellStore:
    """Paths and status of one cell folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def key(self) -> str:
        return self.root.name

    mix_dir = property(lambda self: self.root / "mix")
    train_dir = property(lambda self: self.root / "train")
    cell_file = property(lambda self: self.root / "cell.json")
    status_file = property(lambda self: self.root / "status.json")
    error_log = property(lambda self: self.root / "error.log")

    def config(self) -> dict[str, Any]:
        return read_json(self.cell_file)

    @property
    def eval_dir(self) -> Path:
        """eval/<eval_key>/ for the evaluation settings named in cell.json (plain eval/ without one)."""
        key = self.config().get("eval_key") if self.cell_file.is_file() else None
        return self.root / "eval" / key if key else self.root / "eval"

    def status(self) -> dict[str, Any]:
        """Current status; a ``running`` cell whose process is gone is reported as ``interrupted``."""
        if not self.status_file.is_file():
            return {"state": "pending"}
        status = read_json(self.status_file)
        if status.get("state") == "running" and not _alive(status):
            status = {**status, "state": "interrupted"}
        elif status.get("state") == "done" and not (self.eval_dir / "metrics.json").is_file():
            # Trained, but not yet evaluated with the current eval settings.
            status = {**status, "state": "pending", "stage": "evaluate"}
        return status

    def write_status(self, state: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into status.json and set its state (keeps earlier timings)."""
        assert state in STATES, state
        old = read_json(self.status_file) if self.status_file.is_file() else {}
        status = {**old, **fields, "state": state, "updated": now()}
        if state == "running":
            status.update(pid=os.getpid(), host=socket.gethostname())
        if state != "failed":
            status.pop("error", None)
        if state in ("done", "pending"):
            status.pop("stage", None)  # a failed or interrupted cell keeps the stage it stopped in
        write_json(self.status_file, status)
        return status

    def is_done(self) -> bool:
        return self.status().get("state") == "done"


def _alive(status: dict[str, Any]) -> bool:
    """Whether the process that marked a cell running still exists (only checkable on this host)."""
    if status.get("host") != socket.gethostname():
        return True
    pid = status.get("pid")
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StudyStore:
    """Paths of a study folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    study_file = property(lambda self: self.root / "study.json")
    facts_file = property(lambda self: self.root / "facts.jsonl")
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

    def cells(self) -> list[CellStore]:
        """Cells of the current grid (listed in study.json), else every cell folder found."""
        found = {p.parent.name for p in self.cells_dir.glob("*/cell.json")} if self.cells_dir.is_dir() else set()
        if self.study_file.is_file():
            # Folders of an earlier, different grid are kept on disk but not mixed into this study's results.
            order = read_json(self.study_file).get("cells", [])
            return [self.cell(k) for k in order if k in found]
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
    import math

    mlflow = require_mlflow()
    study_root = Path(study_root).resolve()
    mlflow.set_tracking_uri((study_root / "mlruns").as_uri())
    mlflow.set_experiment(read_json(study_root / "study.json")["name"])
    config = cell.config()
    metrics = read_json(cell.eval_dir / "metrics.json")
    with mlflow.start_run(run_name=f"{config.get('mixture')} {cell.key}"):
        mlflow.log_params({**{k: v for k, v in config["axes"].items() if v is not None}, "cell": cell.key})
        for name, value in _scalars(metrics).items():
            if math.isfinite(value):
                mlflow.log_metric(name, value)
        curve = cell.train_dir / "curve.csv"
        if curve.is_file():
            import pandas as pd

            for row in pd.read_csv(curve).to_dict("records"):
                for name in ("loss", "reliability", "retention"):
                    if name in row and row[name] == row[name]:
                        mlflow.log_metric(f"curve_{name}", float(row[name]), step=int(row["epoch"]))
        for path in (cell.cell_file, cell.status_file, cell.eval_dir / "metrics.json", curve):
            if path.is_file():
                mlflow.log_artifact(str(path))


def _scalars(obj: Any, prefix: str = "") -> dict[str, float]:
    """Flatten nested numeric values of metrics.json into ``a.b`` names (MLflow takes scalars only)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_scalars(v, f"{prefix}{k}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = float(obj)
    return out
