"""The Ray executor: every cell of a study as one Ray task, on a local Ray instance or a cluster.

The driver (the process running ``knowpack study run``) prepares the study exactly as the local
executor does — facts, preflight checks and the one base probe — and then submits one task per
unfinished cell, each reserving ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs. Tasks read
and write the study folder directly (cell stage folders, the base probe, status.json), so every
worker must see ``out`` at the same path: automatic on one machine, shared storage (NFS, a
cluster file system) on a remote cluster. Facts travel through Ray's object store.

A worker process loads the model on its first cell and keeps it for the cells it runs next. A
failed task is retried once (an exception or a crashed worker: a retry resumes from the stage
folders the first attempt finished); a second failure is recorded in the cell's status.json and
error.log like the local executor records it, and the other cells go on.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import socket
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from knowpack.errors import KnowpackError
from knowpack.progress import progress_bar
from knowpack.schema import StrictModel, invalid

log = logging.getLogger(__name__)

# One retry: enough for a transient fault (a preempted or crashed worker, a full disk that was
# cleaned), while a cell that fails deterministically costs one extra attempt, not many.
RETRIES = 1
# ray.wait returns at least this often, so Ctrl-C is handled promptly and the bar stays current.
_POLL_SECONDS = 1.0
# How long an interrupted run waits for its cancelled tasks to stop before it marks them.
_CANCEL_WAIT_SECONDS = 10.0
_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")
# The model loaded in this worker process, by model spec (see _worker_model).
_WORKER_MODELS: dict[str, Any] = {}


def require_ray():
    """Import ray lazily: it is an optional extra, so say how to install it when missing."""
    try:
        import ray
    except ImportError:
        raise KnowpackError("--executor ray needs the ray package, which is not installed",
                            hint="pip install 'knowpack[ray]'  (or run with --executor local)") from None
    return ray


class RayConfig(StrictModel):
    """Where the cells run and what each one reserves."""

    address: str | None = Field(None, description="Ray cluster to run on (ray://head:10001, head:6379 or "
                                                  "auto); none starts a local Ray instance")
    cpus_per_cell: int = Field(1, ge=1, description="CPU cores reserved per cell; also the cell's torch threads")
    gpus_per_cell: float | None = Field(None, ge=0, description="GPUs reserved per cell (by default 1 when "
                                                                "the cluster has GPUs, else 0)")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "RayConfig":
        """Validate options named like the CLI flags, with errors naming those flags."""
        try:
            return cls.model_validate(options)
        except ValidationError as exc:
            raise invalid("Ray executor option", exc, hint="see `knowpack study run --help`",
                          rename=lambda name: "--" + name.replace("_", "-")) from None


@dataclass(frozen=True)
class SharedInputs:
    """What every cell task needs from the driver; put into Ray's object store once per run."""

    study: Any
    stages: Any
    store_root: Path
    base_dir: Path
    facts: list
    paraphrases: dict[str, list[str]] | None


@dataclass(frozen=True)
class CellOutcome:
    """Where a finished cell ran, for the driver's log."""

    key: str
    host: str
    pid: int
    loaded_model: bool


def _worker_model(shared: SharedInputs) -> tuple[Any, bool]:
    """The model for ``shared.study`` in this worker process, loaded on its first cell only.

    Only one model is kept: a study uses one model, and a worker that moves on to another
    study's cells should not hold two copies in memory. A model loaded here is checked against
    the base probe's model hash, since a remote worker may resolve the same spec (``default``, a
    path) to other weights than the driver did.
    """
    from knowpack.probe.artifacts import ProbeFolder
    from knowpack.study.cells import check_same_model

    spec = shared.study.spec.model
    if spec in _WORKER_MODELS:
        return _WORKER_MODELS[spec], False
    _WORKER_MODELS.clear()
    model = shared.stages.load_model(spec)
    check_same_model(model, ProbeFolder(shared.base_dir), shared.study)
    _WORKER_MODELS[spec] = model
    return model, True


def run_cell_task(shared: SharedInputs, cell: Any, threads: int) -> CellOutcome:
    """Body of one Ray task: run the missing stages of ``cell`` (raises on failure, so Ray retries).

    torch gets exactly the task's CPU reservation as threads: a worker inheriting one thread per
    core while other tasks share those cores runs several times slower, and a fixed count keeps
    the cell's numbers independent of how many cells share the machine.
    """
    from knowpack.runtime import configure_threads
    from knowpack.study.cells import CellContext, ensure_clean_model, run_cell
    from knowpack.study.store import StudyStore

    configure_threads(threads)  # remembered: later model loads in this worker keep the count
    model, loaded = _worker_model(shared)
    ctx = CellContext(study=shared.study, stages=shared.stages, store=StudyStore(shared.store_root),
                   facts=shared.facts, model=model, base_dir=shared.base_dir, progress=False,
                   paraphrases=shared.paraphrases)
    ensure_clean_model(ctx)  # a stage that left LoRA layers behind on this worker's last cell
    _WORKER_MODELS[shared.study.spec.model] = ctx.model
    run_cell(ctx, cell, ctx.store.cell(cell.key))
    return CellOutcome(key=cell.key, host=socket.gethostname(), pid=os.getpid(), loaded_model=loaded)


class RayExecutor:
    """Runs each cell as a Ray task; joins ``config.address`` or starts a local Ray instance.

    A Ray connection this process already has (``ray.init`` called by the caller) is used as it
    is and left open; an instance this executor starts is shut down when the cells are done.
    """

    def __init__(self, config: RayConfig | None = None):
        self.config = config or RayConfig()

    def run(self, ctx: Any, cells: list, run: Any, *, mlflow: bool) -> None:
        ray = require_ray()
        started = _connect(ray, self.config.address)
        try:
            cpus, gpus = self._resources(ray)
            task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=RETRIES,
                              retry_exceptions=True)(run_cell_task)
            shared = ray.put(_shared_inputs(ctx))
            _release_driver_model(ctx)
            refs = {task.remote(shared, cell, cpus): cell for cell in cells}
            _collect_all(ray, refs, ctx, run, mlflow=mlflow)
        finally:
            if started:
                ray.shutdown()

    def _resources(self, ray) -> tuple[int, float]:
        """(CPUs, GPUs) per cell. A cell's task runs on one node, so a reservation that no node
        can hold is refused here: Ray would otherwise queue the tasks forever."""
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        cpus, gpus = self.config.cpus_per_cell, self.config.gpus_per_cell
        if gpus is None:
            gpus = 1 if any(r.get("GPU", 0) >= 1 for r in nodes) else 0
        if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
            sizes = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes) or "none"
            raise KnowpackError(f"a cell asks for {cpus} CPU(s) and {gpus:g} GPU(s), but no node of the Ray "
                                f"cluster has that much (nodes: {sizes})",
                                hint="lower --cpus-per-cell / --gpus-per-cell, or add a larger node")
        log.info("Ray: %d CPU(s) + %g GPU(s) per cell on %d node(s) with %g CPU(s), %g GPU(s) in all", cpus, gpus,
                 len(nodes), sum(r.get("CPU", 0) for r in nodes), sum(r.get("GPU", 0) for r in nodes))
        return cpus, gpus


def _connect(ray, address: str | None) -> bool:
    """Connect to Ray; True when this call started (and so must stop) the instance."""
    if ray.is_initialized():
        log.info("Ray: using this process's existing Ray connection")
        return False
    try:
        if address:
            ray.init(address=address)
        else:
            # No dashboard: it costs a CPU's worth of startup on small machines, and the driver's
            # progress bar already shows how far the study is.
            ray.init(include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address}" if address else "locally"
        raise KnowpackError(f"cannot start or reach Ray {where}: {exc}".splitlines()[0],
                            hint="check --address (ray://head:10001, head:6379 or auto) and that the "
                                 "cluster runs the same ray version") from None
    return True


def _shared_inputs(ctx: Any) -> SharedInputs:
    # Absolute paths: a worker's working directory is not the driver's on a remote node.
    return SharedInputs(study=ctx.study, stages=ctx.stages, store_root=ctx.store.root.resolve(),
                        base_dir=ctx.base_dir.resolve(), facts=ctx.facts, paraphrases=ctx.paraphrases)


def _release_driver_model(ctx: Any) -> None:
    """Drop the driver's model (loaded for the base probe): the workers load their own, and on a
    GPU machine the driver's copy would hold memory a cell's task needs."""
    ctx.model = None
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _collect_all(ray, refs: dict, ctx: Any, run: Any, *, mlflow: bool) -> None:
    """Record each cell as its task finishes, advancing the driver's bar; on Ctrl-C, stop the
    tasks still queued or running and mark the running cells interrupted."""
    pending = dict(refs)
    total = len(pending)
    with progress_bar("study", total, unit="cells", enabled=ctx.progress) as bar:
        bar.describe(f"study: {total} cell(s) on Ray")
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=_POLL_SECONDS)
                for ref in ready:
                    _record(ray, ref, pending.pop(ref), ctx, run, mlflow=mlflow)
                    bar.advance(1)
                if ready:
                    bar.describe(f"study: {total - len(pending)}/{total} cells finished on Ray")
        except KeyboardInterrupt:
            _interrupt(ray, pending, ctx.store)
            raise


def _record(ray, ref, cell: Any, ctx: Any, run: Any, *, mlflow: bool) -> None:
    """Write a finished task's outcome into the cell's folder, as the local executor does."""
    from knowpack.study.cells import record_failure, record_success

    cs = ctx.store.cell(cell.key)
    try:
        outcome = ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - the task failed on every attempt: record it, go on
        # The worker's own exception and traceback, not Ray's wrapper around them.
        record_failure(run, cell, cs, getattr(exc, "cause", None) or exc, _remote_traceback(ray, exc))
        return
    log.info("cell %s (%s) done on %s, pid %d%s", cell.key, cell.title(), outcome.host, outcome.pid,
             " (loaded the model)" if outcome.loaded_model else "")
    record_success(ctx.store, cs, mlflow=mlflow)


def _remote_traceback(ray, exc: BaseException) -> str:
    """The failed task's traceback as error.log shows a local one. A task error's text is the
    worker's traceback, but headed by the task's name, pid and ip and with terminal colours."""
    if not isinstance(exc, ray.exceptions.RayTaskError):  # e.g. the worker process died
        return "".join(traceback.format_exception(exc))
    where, _, frames = _ANSI_CODES.sub("", str(exc)).partition("\n")
    return f"Traceback (most recent call last), in Ray task {where.strip()}:\n{frames}\n"


def _interrupt(ray, pending: dict, store: Any) -> None:
    """Cancel unfinished tasks, wait for them to stop, then mark the cells that had started."""
    from knowpack.study.artifacts import CellStatus

    for ref in pending:
        ray.cancel(ref, force=True)
    ray.wait(list(pending), num_returns=len(pending), timeout=_CANCEL_WAIT_SECONDS)
    for cell in pending.values():
        cs = store.cell(cell.key)
        # The raw state: a cell on another host always looks alive to status(), so it would
        # stay "running" forever once its task is gone.
        if CellStatus.exists(cs.root) and CellStatus.read(cs.root).state == "running":
            cs.write_status("interrupted")
    log.warning("interrupted: %d cell(s) stopped; rerun the same command to resume them", len(pending))
