"""The Ray executor with the real stages on the tiny random model, on a local Ray instance.

Every test compares against one run of the local executor: the same cells must give the same
results.csv (timings aside), adapter bytes and metrics.json whichever executor ran them. Ray
keeps its files inside the test's temporary folders (RAY_TMPDIR / _temp_dir, token auth off),
so nothing is left in /tmp/ray.
"""

from __future__ import annotations

import _thread
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_study_integration import _facts
from typer.testing import CliRunner

from knowpack.cli.app import app
from knowpack.errors import KnowpackError
from knowpack.study.artifacts import CellStatus
from knowpack.study.executors import make_executor
from knowpack.study.executors.ray_executor import RayConfig, RayExecutor
from knowpack.study.grid import expand_grid
from knowpack.study.plan import load_study
from knowpack.study.runner import Stages, run_study

TIMING_COLUMNS = ["train_seconds", "wall_seconds"]


def _import_ray():
    try:
        import ray
    except ImportError:
        pytest.fail("ray is not installed: install knowpack's ray extra (`pip install -e '.[ray]'`; "
                    "`make venv` does it)", pytrace=False)
    return ray


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory, tiny_model_dir) -> Path:
    """A study of 2 cells (k = 0 and k = 1 paraphrase), 2 epochs each; every test sets its own
    `out` with --set, so all tests share the cell keys (same model and fact paths)."""
    root = tmp_path_factory.mktemp("ray-study")
    spec = {
        "name": "tiny-ray", "model": str(tiny_model_dir), "facts": str(_facts(root / "facts.jsonl")),
        "probe": {"prompts": 2, "shots": 1, "samples": 0, "max_new_tokens": 4, "batch_size": 16},
        "mix": {"heldout_per_category": 2, "retention_sample": 1},
        "grid": {"unknown": [2], "extra": [0, 1], "kind": ["paraphrase"], "seed": [1]},
        "train": {"preset": "smollm2", "epochs": 2, "batch_size": 4},
        "eval": {"benchmarks": [], "max_untrained": 4},
        "out": str(root / "unused"),
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def module_env(tmp_path_factory):
    """Environment for module-wide work (the local reference run, the shared Ray instance): a
    knowpack home of its own and Ray's files under the test folders. Ray workers inherit the
    environment the instance was started with."""
    root = tmp_path_factory.mktemp("ray-env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KNOWPACK_HOME", str(root / "home"))
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_TMPDIR", str(root))
        yield root


@pytest.fixture(scope="module")
def local_out(spec_file, module_env) -> Path:
    """The reference: the whole study run by the local executor."""
    out = spec_file.parent / "local"
    run = run_study(load_study(spec_file, [f"out={out}"]), progress=False)
    assert not run.failed, run.failed
    return out


@pytest.fixture
def ray_cluster(module_env):
    """A local Ray instance (2 CPUs, no dashboard) shared by the tests that need one; the
    executor uses a connection it finds and leaves it open."""
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(module_env / "ray"),
                 object_store_memory=200 * 1024 * 1024)
        # Stage wrappers defined in this module travel to the workers by value: the workers
        # cannot import test modules.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ray


@pytest.fixture(scope="module", autouse=True)
def _stop_ray():
    yield
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


def _results(out: Path, keys: list[str] | None = None) -> pd.DataFrame:
    frame = pd.read_csv(out / "results.csv").drop(columns=TIMING_COLUMNS)
    if keys is not None:
        frame = frame[frame["key"].isin(keys)]
    return frame.sort_values("key").reset_index(drop=True)


def _adapter_config(cell: Path) -> dict:
    # PEFT keeps target_modules as a set: the saved list's order follows the process's string
    # hash seed, so two processes (even two local runs) write it in different orders.
    config = json.loads((cell / "train" / "adapter" / "adapter_config.json").read_text())
    return {**config, "target_modules": sorted(config["target_modules"])}


def _metrics(cell: Path, out: Path) -> dict:
    (path,) = cell.glob("eval/*/metrics.json")
    metrics = json.loads(path.read_text().replace(str(out), "<out>"))
    metrics["meta"].pop("adapter_hash")  # hashes adapter_config.json's bytes (see _adapter_config)
    return metrics


def _assert_same_cells(out: Path, reference: Path, keys: list[str] | None = None) -> None:
    """Same results.csv rows, adapter weights (bytes) and config, and metrics.json."""
    # Values, not dtypes: a failed cell elsewhere in `out` turns its integer columns into floats.
    pd.testing.assert_frame_equal(_results(out, keys), _results(reference, keys), check_dtype=False)
    for key in keys or list(_results(reference)["key"]):
        cell, ref = out / "cells" / key, reference / "cells" / key
        weights = Path("train") / "adapter" / "adapter_model.safetensors"
        assert (cell / weights).read_bytes() == (ref / weights).read_bytes()
        assert _adapter_config(cell) == _adapter_config(ref)
        assert _metrics(cell, out) == _metrics(ref, reference)


def _status(out: Path, key: str) -> CellStatus:
    return CellStatus.read(out / "cells" / key)


def test_cli_ray_executor_matches_local(spec_file, local_out, module_env):
    """`study run --executor ray` starts a local Ray instance of its own, runs the cells as
    tasks in other processes, shuts Ray down, and gives the local executor's results."""
    ray = _import_ray()
    if ray.is_initialized():
        ray.shutdown()  # this test is about the executor starting Ray itself
    out = spec_file.parent / "cli-ray"
    result = CliRunner().invoke(app, ["study", "run", str(spec_file), "--set", f"out={out}", "--quiet",
                                      "--executor", "ray", "--cpus-per-cell", "1"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert not ray.is_initialized()  # the instance it started is stopped again
    assert any((module_env / "ray").glob("session_*"))  # Ray's files stayed in RAY_TMPDIR
    _assert_same_cells(out, local_out)
    keys = list(_results(out)["key"])
    pids = {_status(out, key).pid for key in keys}
    assert os.getpid() not in pids  # every cell ran in a Ray worker, not in the driver
    assert all(_status(out, key).state == "done" for key in keys)


class CountingLoad:
    """load_model that appends the loading process's pid to a file (loads per worker)."""

    def __init__(self, log_file: Path):
        self.log_file, self.real = log_file, Stages.real().load_model

    def __call__(self, spec):
        with open(self.log_file, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return self.real(spec)


class FlakyTrain:
    """train_adapter that fails the first ``failures[key]`` attempts of a cell, then trains."""

    def __init__(self, attempts_dir: Path, failures: dict[str, int]):
        self.attempts_dir, self.failures, self.real = attempts_dir, failures, Stages.real().train_adapter

    def __call__(self, config, model, train_path, out_dir, **kwargs):
        key = Path(out_dir).parent.name
        with open(self.attempts_dir / key, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        attempt = len((self.attempts_dir / key).read_text().split())
        if attempt <= self.failures.get(key, 0):
            raise RuntimeError(f"injected failure, attempt {attempt}")
        return self.real(config, model, train_path, out_dir, **kwargs)


class BlockingEvaluate:
    """evaluate that, for one cell, says so in a marker file and then hangs (to be interrupted)."""

    def __init__(self, block_key: str, marker: Path):
        self.block_key, self.marker, self.real = block_key, marker, Stages.real().evaluate

    def __call__(self, config, model, adapter_dir, mix_dir, out_dir, **kwargs):
        if Path(mix_dir).parent.name == self.block_key:
            self.marker.write_text(str(os.getpid()))
            time.sleep(600)
        return self.real(config, model, adapter_dir, mix_dir, out_dir, **kwargs)


def _stages(**replace) -> Stages:
    stages = Stages.real()
    for name, fn in replace.items():
        setattr(stages, name, fn)
    return stages


def test_failing_cell_is_retried_once_then_recorded(spec_file, local_out, ray_cluster, tmp_path):
    """Cell A fails its first attempt and succeeds on the retry; cell B fails both attempts and
    is recorded as failed (status.json, error.log) while A's result is the local one. Each
    worker process loads the model once, however many attempts it runs."""
    study = load_study(spec_file, [f"out={tmp_path / 'out'}"])
    flaky, failing = [c.key for c in expand_grid(study)]
    attempts, loads = tmp_path / "attempts", tmp_path / "loads.txt"
    attempts.mkdir()
    stages = _stages(train_adapter=FlakyTrain(attempts, {flaky: 1, failing: 99}), load_model=CountingLoad(loads))
    run = run_study(study, stages=stages, progress=False, executor=RayExecutor(RayConfig(cpus_per_cell=1)))
    out = tmp_path / "out"
    assert run.failed == {failing: "RuntimeError: injected failure, attempt 2"}
    assert len((attempts / flaky).read_text().split()) == 2  # one failure, one retry that trained
    assert len((attempts / failing).read_text().split()) == 2  # retried once, not more
    status = _status(out, failing)
    assert (status.state, status.stage, status.error) == ("failed", "train", run.failed[failing])
    trace = (out / "cells" / failing / "error.log").read_text()
    assert trace.startswith("Traceback (most recent call last), in Ray task ray::run_cell_task()")
    assert "test_study_ray.py" in trace and trace.rstrip().endswith("RuntimeError: injected failure, attempt 2")
    assert _status(out, flaky).state == "done"
    _assert_same_cells(out, local_out, [flaky])
    assert pd.read_csv(out / "results.csv").set_index("key").loc[failing, "state"] == "failed"
    pids = loads.read_text().split()
    assert len(pids) == len(set(pids))  # at most one model load per worker process...
    assert len(set(pids)) < 4 + 1  # ...for 4 attempts (the driver loads once for the base probe)


def _interrupt_when(ready, stop: threading.Event, timeout: float = 300.0) -> threading.Thread:
    """Raise KeyboardInterrupt in the main thread (as Ctrl-C would) once ``ready()`` is true,
    unless ``stop`` is set first (the run ended some other way: no stray interrupt later)."""

    def watch():
        deadline = time.monotonic() + timeout
        while not ready() and not stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not stop.is_set():
            _thread.interrupt_main()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_interrupted_ray_run_resumes(spec_file, local_out, ray_cluster, tmp_path):
    """Ctrl-C while one cell is being evaluated: the finished cell stays done, the other is
    marked interrupted in its stage; the rerun skips the first, resumes the second from its
    mix and train folders (not redone), and both match the local executor."""
    study = load_study(spec_file, [f"out={tmp_path / 'out'}"])
    finished, blocked = [c.key for c in expand_grid(study)]
    out, marker = tmp_path / "out", tmp_path / "evaluating"
    stages = _stages(evaluate=BlockingEvaluate(blocked, marker))

    def blocked_and_other_done():
        status = out / "cells" / finished / "status.json"
        return marker.is_file() and status.is_file() and _status(out, finished).state == "done"

    stop = threading.Event()
    # A process started in the background by a non-interactive shell (CI runners, nohup) inherits
    # SIGINT ignored, and then interrupt_main does nothing: give Ctrl-C its Python meaning back.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = _interrupt_when(blocked_and_other_done, stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_study(study, stages=stages, progress=False, executor=RayExecutor())
    finally:
        stop.set()
        watcher.join()
        signal.signal(signal.SIGINT, previous)
    assert _status(out, finished).state == "done"
    before = _status(out, blocked)
    assert (before.state, before.stage) == ("interrupted", "evaluate")
    adapter = out / "cells" / blocked / "train" / "adapter" / "adapter_model.safetensors"
    trained_at = adapter.stat().st_mtime_ns

    again = run_study(load_study(spec_file, [f"out={out}"]), progress=False,
                      executor=RayExecutor())
    assert not again.failed and again.skipped == [finished]
    after = _status(out, blocked)
    assert after.state == "done" and adapter.stat().st_mtime_ns == trained_at  # train was not redone
    assert {k: after.timings[k] for k in ("mix", "train")} == before.timings and "evaluate" in after.timings
    _assert_same_cells(out, local_out, [finished, blocked])


def test_cell_reservation_no_node_can_hold_is_refused(ray_cluster):
    with pytest.raises(KnowpackError, match=r"asks for 1 CPU\(s\) and 1 GPU\(s\), .*nodes: 2 CPU/0 GPU"):
        RayExecutor(RayConfig(gpus_per_cell=1))._resources(ray_cluster)
    with pytest.raises(KnowpackError, match=r"asks for 3 CPU\(s\) and 0 GPU"):
        RayExecutor(RayConfig(cpus_per_cell=3))._resources(ray_cluster)
    assert RayExecutor()._resources(ray_cluster) == (1, 0)  # CPU-only: no GPU by default


def test_missing_ray_is_one_clear_error_before_any_work(spec_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["study", "run", str(spec_file), "--set", f"out={out}", "-q",
                                      "--executor", "ray"])
    assert isinstance(result.exception, KnowpackError)
    assert "pip install 'knowpack[ray]'" in str(result.exception)
    assert not out.exists()  # refused before the base probe


def test_ray_options_without_the_ray_executor_are_refused():
    with pytest.raises(KnowpackError, match="--address, --cpus-per-cell only apply to the Ray executor"):
        make_executor("local", {"address": "ray://head:10001", "cpus_per_cell": 2})
    with pytest.raises(KnowpackError, match="unknown executor 'dask'"):
        make_executor("dask")
    with pytest.raises(KnowpackError, match="--cpus-per-cell"):
        make_executor("ray", {"cpus_per_cell": 0})
