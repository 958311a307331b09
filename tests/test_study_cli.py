"""`knowpack study run|status` and `knowpack report` through the CLI, with fake stages."""

from __future__ import annotations

import pytest
from test_study_runner import FakeStages, write_spec
from typer.testing import CliRunner

from knowpack.cli.app import app
from knowpack.errors import KnowpackError
from knowpack.study import runner


@pytest.fixture
def fake_stages(monkeypatch):
    def install(**kw):
        fakes = FakeStages(**kw)
        monkeypatch.setattr(runner.Stages, "real", classmethod(lambda cls: fakes.stages()))
        return fakes
    return install


def test_run_status_report(tmp_path, fake_stages):
    fake_stages()
    spec = write_spec(tmp_path)
    cli = CliRunner()
    result = cli.invoke(app, ["study", "run", str(spec), "--quiet", "--set", "grid.seed=[1]"])
    assert result.exit_code == 0, result.output
    assert "done: 4" in result.output
    status = cli.invoke(app, ["study", "status", str(spec), "--set", "grid.seed=[1]"])
    assert status.exit_code == 0 and "done: 4" in status.output
    report = cli.invoke(app, ["report", str(tmp_path / "out")])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "out" / "report.html").is_file()


def test_failed_cell_gives_non_zero_exit(tmp_path, fake_stages):
    fake_stages(fail_seed=2)
    result = CliRunner().invoke(app, ["study", "run", str(write_spec(tmp_path)), "--quiet"])
    assert result.exit_code == 1
    assert "failed: 4" in result.output and "done: 4" in result.output


def test_mlflow_missing_is_a_clear_error(tmp_path, fake_stages, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow":
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    fakes = fake_stages()
    result = CliRunner().invoke(app, ["study", "run", str(write_spec(tmp_path)), "--mlflow", "--quiet"])
    assert isinstance(result.exception, KnowpackError)
    assert "pip install 'knowpack[mlflow]'" in str(result.exception)
    assert "train_adapter" not in fakes.calls  # refused before any work


def test_mlflow_logging_with_a_stub_module(tmp_path, fake_stages, monkeypatch):
    import sys
    import types

    logged: dict[str, list] = {"params": [], "metrics": [], "artifacts": [], "uri": []}
    stub = types.ModuleType("mlflow")
    stub.set_tracking_uri = lambda uri: logged["uri"].append(uri)
    stub.set_experiment = lambda name: None

    class _Run:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    stub.start_run = lambda run_name=None: _Run()
    stub.log_params = lambda p: logged["params"].append(p)
    stub.log_metric = lambda name, value, step=None: logged["metrics"].append((name, value, step))
    stub.log_artifact = lambda path: logged["artifacts"].append(path)
    monkeypatch.setitem(sys.modules, "mlflow", stub)
    fake_stages()
    result = CliRunner().invoke(app, ["study", "run", str(write_spec(tmp_path)), "--mlflow", "--quiet",
                                      "--set", "grid.unknown=[2]", "--set", "grid.seed=[1]"])
    assert result.exit_code == 0, result.output
    assert len(logged["params"]) == 2 and logged["uri"][0].startswith("file:")
    names = {m[0] for m in logged["metrics"]}
    assert "reliability.reliability" in names and "curve_reliability" in names
    assert any(a.endswith("metrics.json") for a in logged["artifacts"])
