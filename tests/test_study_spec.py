"""Study spec validation, overrides, grid expansion and content hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from knowpack.errors import KnowpackError
from knowpack.study.grid import expand_grid
from knowpack.study.plan import load_study, parse_study

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def raw(**changes) -> dict:
    spec = {"name": "t", "grid": {"unknown": [1, 10], "extra": [0, 1], "kind": ["paraphrase", "highly_known"],
                                  "seed": [1, 2]},
            "train": {"preset": "smollm2"}}
    spec.update(changes)
    return spec


def error_of(spec: dict, overrides=None) -> str:
    with pytest.raises(KnowpackError) as info:
        parse_study(spec, overrides=overrides)
    return str(info.value)


@pytest.mark.parametrize("spec, expected", [
    (raw(colour="red"), "colour: unknown key"),
    (raw(grid={"unknown": []}), "grid.unknown: must not be empty"),
    (raw(grid={"unknown": [1], "kind": ["haiku"]}), "grid.kind: unknown kind(s) ['haiku']"),
    (raw(grid={"unknown": [1], "sed": [1]}), "grid.sed: unknown key"),
    (raw(train={"preset": "smollm2", "epochs": "many"}), "train.epochs: Input should be a valid integer"),
    (raw(train={"preset": "smollm2", "epoch": 3}), "train.epoch: unknown key"),
    (raw(train={"preset": "nope"}), "train.preset: unknown training preset 'nope'"),
    (raw(probe={"prompts": 0}), "probe.prompts: Input should be greater than or equal to 1"),
    (raw(eval={"benchmark": ["mmlu"]}), "eval.benchmark: unknown key"),
    (raw(mix={"heldout_per_category": -1}), "mix.heldout_per_category: Input should be greater than or equal to 0"),
    ({"grid": {"unknown": [1]}}, "name: required key is missing"),
])
def test_errors_name_the_key(spec, expected):
    assert expected in error_of(spec)


def test_all_problems_reported_at_once():
    message = error_of(raw(probe={"shots": "x"}, eval={"seed": "y"}))
    assert "probe.shots" in message and "eval.seed" in message


def test_overrides_are_validated_like_the_file():
    assert "train.epochs: Input should be a valid integer" in error_of(raw(), ["train.epochs=lots"])
    assert "grid.unknown: must not be empty" in error_of(raw(), ["grid.unknown=[]"])
    with pytest.raises(KnowpackError, match="bad override"):
        parse_study(raw(), overrides=["train.epochs"])
    study = parse_study(raw(), overrides=["train.epochs=3", "grid.seed=[7]", "probe.samples=0"])
    assert {c.train.epochs for c in expand_grid(study)} == {3}
    assert {c.axes["seed"] for c in expand_grid(study)} == {7}
    assert study.probe.samples == 0


def test_grid_expansion_dedupes_kind_for_k0():
    cells = expand_grid(parse_study(raw()))
    # 2 n × (1 shared k=0 cell + 2 kinds at k=1) × 2 seeds
    assert len(cells) == 2 * 3 * 2
    assert {c.mixture for c in cells} == {"w/o", "1 Para", "1 HK"}
    assert len({c.key for c in cells}) == len(cells)
    cell = next(c for c in cells if c.mixture == "1 HK" and c.axes["unknown"] == 10 and c.axes["seed"] == 2)
    assert (cell.mix.unknown, cell.mix.extra, cell.mix.kind, cell.mix.seed, cell.train.seed) == (
        10, 1, "highly_known", 2, 2)


def test_optional_axes_reach_train_config():
    cells = expand_grid(parse_study(raw(grid={"unknown": [1], "rank": [1, 4], "lr": [1e-3], "loss": ["all"]})))
    assert sorted(c.train.rank for c in cells) == [1, 4]
    assert {c.train.loss for c in cells} == {"all"} and {c.train.lr for c in cells} == {1e-3}


def test_hashes_are_stable_and_change_with_settings():
    keys = [c.key for c in expand_grid(parse_study(raw()))]
    assert keys == [c.key for c in expand_grid(parse_study(raw()))]
    changed = [c.key for c in expand_grid(parse_study(raw(), overrides=["train.lr=0.01"]))]
    assert set(keys).isdisjoint(changed)
    assert set(keys).isdisjoint(c.key for c in expand_grid(parse_study(raw(model="other"))))
    assert set(keys).isdisjoint(c.key for c in expand_grid(parse_study(raw(), overrides=["probe.prompts=3"])))
    evaluated = expand_grid(parse_study(raw(), overrides=["eval.max_untrained=3"]))
    assert keys == [c.key for c in evaluated]  # evaluation settings do not address the adapter...
    assert {c.eval_key for c in evaluated}.isdisjoint(c.eval_key for c in expand_grid(parse_study(raw())))
    # Speed-only settings and the study's name/out folder do not change what a cell computes.
    same = expand_grid(parse_study(raw(name="renamed", out="elsewhere"), overrides=["probe.batch_size=7"]))
    assert keys == [c.key for c in same]


@pytest.mark.parametrize("name", ["demo.yaml", "paper.yaml", "findings.yaml"])
def test_shipped_configs_are_valid(name):
    study = load_study(CONFIGS / name)
    cells = expand_grid(study)
    if name == "paper.yaml":
        assert len(cells) == 6 * 5 * 3
        assert study.spec.grid.seed == [42, 1337, 10824]
    elif name == "findings.yaml":
        # The study that decides the claims: >= 3 seeds, w/o, HK, Para and control (last: k = 0 cells
        # take the first kind) at every n.
        grid = study.spec.grid
        assert len(grid.seed) >= 3 and len(grid.unknown) >= 2 and grid.kind[-1] == "control"
        mixtures = {(c.mix.extra, c.mix.kind) for c in cells}
        assert {(0, "highly_known"), (0, "control")} <= mixtures
        assert {(k, kind) for k in grid.extra if k for kind in grid.kind} <= mixtures
        assert study.spec.claims == "paper"
    else:
        assert len(cells) <= 8


def test_cli_reports_spec_errors_without_traceback(tmp_path):
    from knowpack.cli.app import app

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw(grid={"unknown": []})))
    result = CliRunner().invoke(app, ["study", "status", str(bad)])
    assert isinstance(result.exception, KnowpackError)
    assert "grid.unknown: must not be empty" in str(result.exception)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(KnowpackError, match="study file not found"):
        load_study(tmp_path / "nope.yaml")


def test_axis_minimums():
    assert "grid.unknown: every value must be >= 1" in error_of(raw(grid={"unknown": [0]}))
    assert "grid.extra: every value must be >= 0" in error_of(raw(grid={"unknown": [1], "extra": [-1]}))
    assert "grid.seed: has repeated values" in error_of(raw(grid={"unknown": [1], "seed": [1, 1]}))
