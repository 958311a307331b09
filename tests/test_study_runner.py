"""Study runner with fake stage functions: skipping, failures, resume after a kill, status."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console
from artifact_fakes import category_row, write_mix_folder, write_probe_folder
from test_study_fakes import N_FACTS, fake_categories, write_fake_curve, write_fake_eval

from knowpack.facts.schema import Fact
from knowpack.io import read_json, write_json
from knowpack.mix.artifacts import EvalSets, MixFolder
from knowpack.study.grid import expand_grid
from knowpack.study.runner import Stages, run_study
from knowpack.study.plan import load_study
from knowpack.study.status import status_rows, status_table

TIMING_COLUMNS = ["train_seconds", "wall_seconds"]


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so the runner cannot record it."""


class FakeStages:
    """Fake stages writing the real file formats; counts calls and injects failures."""

    def __init__(self, fail_seed: int | None = None, kill_on_call: int | None = None):
        self.calls: dict[str, int] = {}
        self.fail_seed = fail_seed
        self.kill_on_call = kill_on_call

    def _count(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]

    def stages(self) -> Stages:
        return Stages(read_facts=self.read_facts, sample_facts=lambda facts, n, seed: facts[:n],
                      load_model=self.load_model, run_probe=self.run_probe, build_mixture=self.build_mixture,
                      train_adapter=self.train_adapter, evaluate=self.evaluate)

    def read_facts(self, path):
        self._count("read_facts")
        if str(path) != "default":
            return [Fact(**row) for row in map(json.loads, Path(path).read_text().splitlines())]
        return [Fact(id=f"f{i:03d}", subject=f"s{i}", relation="r", question=f"q{i}?", answer=f"a{i}",
                     aliases=[f"a{i}"]) for i in range(N_FACTS + 20)]

    def load_model(self, spec):
        self._count("load_model")
        return object()

    def run_probe(self, config, facts, model, out_dir, *, progress=True):
        self._count("run_probe")
        rows = [category_row(facts[i].id, c["category"]) for i, c in enumerate(fake_categories(len(facts)))]
        write_probe_folder(out_dir, rows, config=config)

    def build_mixture(self, config, facts, categories, out_dir, *, probe_dir=None):
        self._count("build_mixture")
        unknown = [c["id"] for c in categories if c["category"] == "Unknown"][: config.unknown]
        by_id = {f.id: f for f in facts}
        rows = [{"id": f"{fid}#unknown", "fact_id": fid, "question": by_id[fid].question,
                 "answer": by_id[fid].answer, "role": "unknown"} for fid in unknown]
        write_mix_folder(out_dir, rows, {"trained_unknown": unknown}, [by_id[fid] for fid in unknown],
                         probe_dir=probe_dir)

    def train_adapter(self, config, model, train_path, out_dir, *, curve_facts=None, retention_facts=None,
                      probe_config=None, shot_sets=None, progress=True):
        n = self._count("train_adapter")
        assert curve_facts and all(isinstance(f, Fact) for f in curve_facts)
        if self.fail_seed is not None and config.seed == self.fail_seed:
            raise RuntimeError(f"out of memory on seed {config.seed}")
        out_dir.mkdir(parents=True, exist_ok=True)
        write_fake_curve(out_dir, epochs=config.epochs, extra=0, seed=config.seed)
        if self.kill_on_call == n:
            raise Killed()  # after the curve, before train_summary.json: a half-finished stage
        write_json(out_dir / "train_summary.json", {"epochs_run": config.epochs})

    def evaluate(self, config, model, adapter_dir, mix_dir, out_dir, *, progress=True, base_cache=None):
        self._count("evaluate")
        cell = json.loads((Path(adapter_dir).parents[1] / "cell.json").read_text())  # cells/<key>/train/adapter
        axes = cell["axes"]
        trained = EvalSets.read(mix_dir).trained_unknown
        write_fake_eval(out_dir, n=axes["unknown"], extra=axes["extra"], kind=axes["kind"], seed=axes["seed"],
                        trained=trained, categories=fake_categories(N_FACTS))


def write_spec(tmp_path: Path, out: str = "out", **changes) -> Path:
    spec = {
        "name": "t", "model": "tiny", "facts": "default", "facts_sample": N_FACTS,
        "probe": {"prompts": 2, "shots": 1, "samples": 0},
        "mix": {"heldout_per_category": 2, "retention_sample": 1},
        "grid": {"unknown": [2, 4], "extra": [0, 1], "kind": ["paraphrase"], "seed": [1, 2]},
        "train": {"preset": "smollm2", "epochs": 2},
        "eval": {"benchmarks": []},
        "out": str(tmp_path / out),
    }
    spec.update(changes)
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(path, fakes, **kw):
    return run_study(load_study(path, kw.pop("overrides", None)), stages=fakes.stages(), progress=False, **kw)


def test_runs_every_cell_then_skips_finished_ones(tmp_path):
    path = write_spec(tmp_path)
    fakes = FakeStages()
    run = _run(path, fakes)
    assert len(run.cells) == 8 and not run.failed
    assert fakes.calls["run_probe"] == 1 and fakes.calls["load_model"] == 1  # base probe shared by all cells
    assert fakes.calls["train_adapter"] == 8
    for cell in run.cells:
        folder = run.out_dir / "cells" / cell.key
        assert read_json(folder / "status.json")["state"] == "done"
        assert read_json(folder / "cell.json")["axes"] == cell.axes
        assert MixFolder(folder / "mix").probe_dir.parent.name == "base"  # mix sees the base probe folder
    results = pd.read_csv(run.out_dir / "results.csv")
    assert len(results) == 8 and set(results["state"]) == {"done"}
    assert (run.out_dir / "summary.csv").is_file()

    again = FakeStages()
    run2 = _run(path, again)
    assert len(run2.skipped) == 8
    assert "train_adapter" not in again.calls and "load_model" not in again.calls


def test_failing_cell_is_recorded_and_others_finish(tmp_path):
    path = write_spec(tmp_path)
    fakes = FakeStages(fail_seed=2)
    run = _run(path, fakes)
    assert len(run.failed) == 4 and all("out of memory on seed 2" in m for m in run.failed.values())
    rows = {r["key"]: r for r in status_rows(run.out_dir)}
    assert sum(r["state"] == "done" for r in rows.values()) == 4
    for key in run.failed:
        assert rows[key]["state"] == "failed" and "out of memory" in rows[key]["error"]
        assert "RuntimeError" in (run.out_dir / "cells" / key / "error.log").read_text()
    # The failed cells are retried (and now succeed) on the next run; done cells are not redone.
    fixed = FakeStages()
    run2 = _run(path, fixed)
    assert not run2.failed and fixed.calls["train_adapter"] == 4


def test_resume_after_kill_gives_same_results(tmp_path):
    clean = _run(write_spec(tmp_path, out="clean"), FakeStages())
    path = write_spec(tmp_path, out="killed")
    with pytest.raises(Killed):
        _run(path, FakeStages(kill_on_call=3))
    states = [r["state"] for r in status_rows(tmp_path / "killed")]
    assert states.count("done") == 2 and states.count("running") == 1
    resumed = FakeStages()
    _run(path, resumed)
    assert resumed.calls["train_adapter"] == 6  # the killed cell and the 5 never started
    assert resumed.calls["build_mixture"] == 5  # the killed cell's mixture was already complete
    a = pd.read_csv(clean.out_dir / "results.csv").drop(columns=TIMING_COLUMNS)
    b = pd.read_csv(tmp_path / "killed" / "results.csv").drop(columns=TIMING_COLUMNS)
    pd.testing.assert_frame_equal(a, b)


def test_status_table_lists_states(tmp_path):
    path = write_spec(tmp_path)
    study = load_study(path)
    keys = [c.key for c in expand_grid(study)]
    rows = status_rows(study.out_dir, keys)
    assert [r["state"] for r in rows] == ["pending"] * 8
    _run(path, FakeStages(fail_seed=1))
    rows = status_rows(study.out_dir, keys)
    console = Console(record=True, width=200)
    console.print(status_table(rows, title="t"))
    text = console.export_text()
    assert "done: 4" in text and "failed: 4" in text and "out of memory" in text


def test_changed_eval_settings_reevaluate_without_retraining(tmp_path):
    path = write_spec(tmp_path)
    _run(path, FakeStages())
    again = FakeStages()
    run = _run(path, again, overrides=["eval.max_untrained=5"])
    assert again.calls["evaluate"] == 8 and "train_adapter" not in again.calls and "build_mixture" not in again.calls
    folders = {p.parent.name for p in (run.out_dir / "cells").glob("*/eval/*/metrics.json")}
    assert len(folders) == 2  # both evaluations kept side by side
    assert len(pd.read_csv(run.out_dir / "results.csv")) == 8


def test_override_changes_cells_and_folder(tmp_path):
    path = write_spec(tmp_path)
    base = {c.key for c in expand_grid(load_study(path))}
    more = {c.key for c in expand_grid(load_study(path, ["train.epochs=3"]))}
    assert base.isdisjoint(more)
    run = _run(path, FakeStages(), overrides=["grid.unknown=[2]", "grid.seed=[1]"])
    assert len(run.cells) == 2
    assert read_json(run.out_dir / "study.json")["overrides"] == ["grid.unknown=[2]", "grid.seed=[1]"]


def test_a_changed_model_under_the_same_name_is_refused(tmp_path):
    """Same model spec, other weights: finished cells would meet a model their adapters never saw."""
    from knowpack.errors import KnowpackError

    class Loaded:
        def __init__(self, model_hash):
            self.model_hash = model_hash

    path = write_spec(tmp_path, grid={"unknown": [2], "extra": [0], "kind": ["paraphrase"], "seed": [1]})
    first = FakeStages()
    first.load_model = lambda spec: Loaded("fake-model")
    _run(path, first)
    second = FakeStages()
    second.load_model = lambda spec: Loaded("other-weights")
    with pytest.raises(KnowpackError, match="is not the model this study was run with"):
        _run(path, second, overrides=["eval.max_untrained=5"])  # new eval settings: the cell would re-evaluate
