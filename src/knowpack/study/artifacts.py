"""The study folder's own files: ``study.json``, and per cell ``cell.json`` and ``status.json``.

```
<out>/study.json                      StudyRecord: resolved spec (after --set overrides), identity, cell keys
<out>/facts/<hash>.jsonl              the facts actually used (sampled or copied)
<out>/base/<hash>/                    base-model probe folder, shared by every cell
<out>/cells/<key>/cell.json           CellRecord: the cell's axes and effective stage configs
<out>/cells/<key>/status.json         CellStatus: pending | running | done | failed (+ error, timings)
<out>/cells/<key>/mix/, train/        the stage folders that make the adapter
<out>/cells/<key>/eval/<eval_key>/    its evaluation under one set of eval settings
<out>/manifest.json, results.csv, summary.csv, tables/, plots/, report.html
```
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from knowpack.schema import JsonArtifact

CellState = Literal["pending", "running", "done", "failed", "interrupted"]
STATES: tuple[str, ...] = ("pending", "running", "done", "failed", "interrupted")
WRITER = "knowpack study run"


class StudyRecord(JsonArtifact):
    """``study.json``: what the study is, as last run (the grid's cells in order)."""

    file_name = "study.json"
    writer = WRITER

    name: str
    source: str | None = None
    overrides: list[str] = Field(default_factory=list)
    spec: dict[str, Any]
    identity: dict[str, Any]
    cells: list[str]
    # The claims the report decides, recorded as parsed when the study ran: fixed before the run.
    claims: list[dict[str, Any]] | None = None
    claims_source: str | None = None
    written: str = ""


class CellRecord(JsonArtifact):
    """``cell.json``: one grid point — its axes, mixture label and the effective stage configs.

    ``identity`` is what every cell of the study shares (model, facts, base probe and eval
    settings); ``key`` hashes everything that decides the adapter, ``eval_key`` the eval settings.
    """

    file_name = "cell.json"
    writer = WRITER

    key: str
    eval_key: str
    axes: dict[str, Any]
    mixture: str
    identity: dict[str, Any] = Field(default_factory=dict)
    mix: dict[str, Any]
    train: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        # The identity's keys sit at the top level, beside the cell's own (the file's layout).
        data = self.model_dump(mode="json", exclude={"identity"})
        return {"format_version": self.version, **data, **self.identity}

    @classmethod
    def model_validate(cls, obj: Any, *args, **kwargs):  # noqa: D102 - the inverse of to_json
        if isinstance(obj, dict) and "identity" not in obj:
            own = set(cls.model_fields)
            obj = {**{k: v for k, v in obj.items() if k in own},
                   "identity": {k: v for k, v in obj.items() if k not in own}}
        return super().model_validate(obj, *args, **kwargs)


class CellStatus(JsonArtifact):
    """``status.json``: the cell's state, the stage it is in or stopped in, timings and error."""

    file_name = "status.json"
    writer = WRITER

    state: CellState = "pending"
    title: str = ""
    stage: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None
    started: str | None = None
    finished: str | None = None
    failed_at: str | None = None
    updated: str | None = None
    pid: int | None = None
    host: str | None = None
