"""The base classes of configs and artifacts: strict numbers, versioned files, clear errors."""

from __future__ import annotations

import json

import pytest
from pydantic import Field, ValidationError

from knowpack.errors import KnowpackError
from knowpack.schema import JsonArtifact, RowArtifact, StrictModel, invalid


class _Config(StrictModel):
    epochs: int = Field(1, ge=1)
    lr: float = 1e-3
    ratio: float | None = None
    flag: bool = False


class _Summary(JsonArtifact):
    file_name = "summary.json"
    writer = "knowpack test"
    version = 2

    n: int
    note: str = ""


class _Row(RowArtifact):
    file_name = "rows.jsonl"
    writer = "knowpack test"

    id: str
    value: float


@pytest.mark.parametrize("data, problem", [
    ({"epochs": True}, "epochs: expected a number, got a boolean"),
    ({"ratio": False}, "ratio: expected a number, got a boolean"),
    ({"lr": float("inf")}, "lr: Input should be a finite number"),
    ({"lr": float("nan")}, "lr: Input should be a finite number"),
    ({"epoch": 3}, "epoch: unknown key"),
])
def test_strict_model_rejects_silent_garbage(data, problem):
    with pytest.raises(ValidationError) as info:
        _Config(**data)
    error = invalid("training config", info.value, hint="see --help")
    assert problem in str(error)


def test_strict_model_keeps_real_booleans_and_numbers():
    config = _Config(epochs=3, lr=2, flag=True)
    assert (config.epochs, config.lr, config.flag) == (3, 2.0, True)


def test_json_artifact_round_trip_tolerates_unknown_keys(tmp_path):
    _Summary(n=3, note="x").write(tmp_path)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["format_version"] == 2
    data["added_by_a_newer_minor"] = [1, 2]
    (tmp_path / "summary.json").write_text(json.dumps(data))
    assert _Summary.read(tmp_path) == _Summary(n=3, note="x")


@pytest.mark.parametrize("content, message", [
    (None, "summary.json not found"),
    ("{not json", "is damaged (bad JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"note": "x"}', "n: required key is missing"),
    ('{"format_version": 3, "n": 1}', "format version 3; this knowpack reads up to 2"),
])
def test_json_artifact_errors_name_the_problem(tmp_path, content, message):
    if content is not None:
        (tmp_path / "summary.json").write_text(content)
    with pytest.raises(KnowpackError) as info:
        _Summary.read(tmp_path)
    assert message in str(info.value)
    assert "knowpack test" in str(info.value) or "upgrade" in str(info.value)


def test_row_artifact_round_trip_and_bad_line(tmp_path):
    _Row.write_rows(tmp_path, [_Row(id="a", value=1.5), _Row(id="b", value=2)])
    assert (tmp_path / "rows.jsonl").read_text() == '{"id": "a", "value": 1.5}\n{"id": "b", "value": 2.0}\n'
    assert [r.id for r in _Row.read_rows(tmp_path)] == ["a", "b"]
    (tmp_path / "rows.jsonl").write_text('{"id": "a", "value": 1}\n{"id": "b"}\n')
    with pytest.raises(KnowpackError, match=r"rows.jsonl:2 is damaged: value: required key is missing"):
        _Row.read_rows(tmp_path)
