"""Study runner: probe the base model once, then mix → train → evaluate every grid cell.

Cells live in content-addressed folders, so a rerun skips finished cells and resumes the rest:
each stage says itself whether its folder is finished (``is_done``) and resumes itself from its
own files. A failing cell is recorded and the others go on.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from knowpack.io import stable_hash, write_jsonl
from knowpack.manifest import refuse_foreign, stamp
from knowpack.study.artifacts import StudyRecord
from knowpack.study.grid import Cell, expand_grid, hash_identity, study_identity
from knowpack.study.spec import Study
from knowpack.study.store import CellStore, StudyStore, now

if TYPE_CHECKING:
    from knowpack.study.executors import Executor

log = logging.getLogger(__name__)


@dataclass
class Stages:
    """The stage functions a study calls; tests pass fakes, real runs use :meth:`real`."""

    read_facts: Callable
    sample_facts: Callable | None
    load_model: Callable
    run_probe: Callable
    build_mixture: Callable
    train_adapter: Callable
    evaluate: Callable

    @classmethod
    def real(cls) -> "Stages":
        """The installed stage implementations (imported here so `study status` stays fast)."""
        from knowpack.evaluate.runner import evaluate
        from knowpack.facts.default_set import sample_facts
        from knowpack.facts.io import read_facts
        from knowpack.mix.build import build_mixture
        from knowpack.models import load_model
        from knowpack.probe.runner import run_probe
        from knowpack.train.trainer import train_adapter

        return cls(read_facts=read_facts, sample_facts=sample_facts, load_model=load_model,
                   run_probe=run_probe, build_mixture=build_mixture, train_adapter=train_adapter,
                   evaluate=evaluate)


@dataclass
class StudyRun:
    """What a `study run` did: the study folder, every cell, and which ones failed."""

    out_dir: Path
    cells: list[Cell]
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


@dataclass
class CellContext:
    """What every cell of a study shares: the spec, the stages, the store, the facts and the loaded
    model (one per process — a Ray worker builds its own from the same inputs)."""

    study: Study
    stages: Stages
    store: StudyStore
    facts: list
    model: Any
    base_dir: Path
    progress: bool
    paraphrases: dict[str, list[str]] | None = None


def _load_facts(study: Study, stages: Stages, store: StudyStore) -> tuple[list, Path]:
    """Read (and sample) the study's facts once; the exact set is saved beside the results."""
    ident = {"facts": study.spec.facts, "facts_sample": study.spec.facts_sample}
    path = store.root / "facts" / f"{stable_hash(ident)}.jsonl"
    if path.is_file():
        return stages.read_facts(path), path
    facts = stages.read_facts(study.spec.facts)
    if study.spec.facts_sample and study.spec.facts_sample < len(facts):
        # The sample is seeded by the first grid seed so the whole study sees one fixed fact set.
        facts = stages.sample_facts(facts, study.spec.facts_sample, seed=study.spec.grid.seed[0])
    write_jsonl(path, facts)
    return facts, path


def _write_study_file(study: Study, store: StudyStore, cells: list[Cell]) -> None:
    from knowpack.study.plan import study_claims

    identity = study_identity(study)
    claims = study_claims(study)
    StudyRecord(name=study.spec.name, source=str(study.source) if study.source else None,
                overrides=study.overrides, spec=study.spec.model_dump(mode="json"), identity=identity,
                cells=[c.key for c in cells], written=now(), claims_source=study.spec.claims,
                claims=None if claims is None else [c.model_dump(mode="json", by_alias=True, exclude_unset=True)
                                                          for c in claims]).write(store.root)
    for cell in cells:
        cs = store.cell(cell.key)
        cs.root.mkdir(parents=True, exist_ok=True)
        # Rewritten every run: the folder key is fixed, but the evaluation settings may have changed.
        cell.record(identity).write(cs.root)
        if not cs.status_file.is_file():
            cs.write_status("pending", title=cell.title())


def _stage_steps(ctx: CellContext, cell: Cell, cs: CellStore) -> list[tuple[str, Callable[[], bool], Callable[[], Any]]]:
    """(name, is it done?, run it) per stage of a cell; each stage decides its own completion."""
    from knowpack.evaluate.artifacts import is_done as evaluated
    from knowpack.mix.artifacts import is_done as mixed
    from knowpack.probe.artifacts import ProbeFolder
    from knowpack.train.inputs import curve_inputs
    from knowpack.train.inputs import is_done as trained

    stages = ctx.stages
    return [
        ("mix", lambda: mixed(cs.mix_dir),
         lambda: stages.build_mixture(cell.mix, ctx.facts, ProbeFolder(ctx.base_dir).category_dicts(), cs.mix_dir,
                                      probe_dir=ctx.base_dir.resolve(), **_mix_extras(ctx))),
        ("train", lambda: trained(cs.train_dir),
         lambda: stages.train_adapter(cell.train, ctx.model, cs.mix_dir / "train.jsonl", cs.train_dir,
                                      progress=ctx.progress, **curve_inputs(cs.mix_dir).as_kwargs())),
        ("evaluate", lambda: evaluated(cs.eval_dir),
         lambda: stages.evaluate(ctx.study.eval, ctx.model, cs.train_dir / "adapter", cs.mix_dir, cs.eval_dir,
                                 progress=ctx.progress, base_cache=ctx.base_dir.parent / "reprobes")),
    ]


def run_cell(ctx: CellContext, cell: Cell, cs: CellStore) -> None:
    """Run the missing stages of one cell, recording per-stage wall time in status.json."""
    status = cs.write_status("running", title=cell.title(), started=cs.status().started or now())
    timings = dict(status.timings)
    for name, done, step in _stage_steps(ctx, cell, cs):
        if done():
            continue
        cs.write_status("running", stage=name)
        t0 = time.perf_counter()
        step()
        # Times add up over resumed runs: the total is the real compute spent on the cell.
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 3)
        cs.write_status("running", timings=timings)
    cs.write_status("done", timings=timings, finished=now(), seconds=round(sum(timings.values()), 3))


def _mix_extras(ctx: CellContext) -> dict[str, Any]:
    return {"paraphrases": ctx.paraphrases} if ctx.paraphrases else {}


def _model_is_clean(loaded: Any) -> bool:
    """True when no LoRA layers are left in the shared base model (stages must restore it)."""
    model = getattr(loaded, "model", None)
    if model is None or not hasattr(model, "named_modules"):
        return True
    return not hasattr(model, "peft_config") and not any("lora_" in n for n, _ in model.named_modules())


def ensure_clean_model(ctx: CellContext) -> None:
    """Reload the base model if a stage left adapter layers in it, so the next cell starts from
    the true base model (training on top of a previous cell's adapter would corrupt every result)."""
    if not _model_is_clean(ctx.model):
        log.warning("the base model still carries LoRA layers after a cell; reloading it")
        ctx.model = ctx.stages.load_model(ctx.study.spec.model)


def run_study(study: Study, *, stages: Stages | None = None, progress: bool = True, mlflow: bool = False,
              executor: Executor | None = None) -> StudyRun:
    """Run every cell of ``study`` (skipping finished ones) and aggregate results.csv/summary.csv.

    Returns a :class:`StudyRun`; ``failed`` maps cell keys to their error message. The caller
    decides the exit code, so one broken cell never hides the others' results. ``executor``
    (see ``knowpack.study.executors``) runs the cells; the default runs them here, one by one.
    """
    from knowpack.report.aggregate import write_results

    stages = stages or Stages.real()
    refuse_foreign(study.out_dir, marker=StudyRecord.file_name, command="knowpack study run")
    store = StudyStore(study.out_dir)
    cells = expand_grid(study)
    _write_study_file(study, store, cells)
    todo = [c for c in cells if not store.cell(c.key).is_done()]
    run = StudyRun(out_dir=store.root, cells=cells, skipped=[c.key for c in cells if c not in todo])
    if run.skipped:
        log.info("%d/%d cells already done; skipping them", len(run.skipped), len(cells))
    if todo:
        _run_cells(study, stages, store, todo, run, progress=progress, mlflow=mlflow, executor=executor)
    write_results(store.root)
    return run


def _prepare(study: Study, stages: Stages, store: StudyStore, cells: list[Cell], progress: bool) -> CellContext:
    """Load facts and the model once, probe the base model once for all cells, then preflight."""
    from knowpack.probe.artifacts import ProbeFolder, is_done
    from knowpack.study.plan import preflight

    facts, facts_path = _load_facts(study, stages, store)
    log.info("facts: %d (%s)  model: %s", len(facts), facts_path, study.spec.model)
    model = stages.load_model(study.spec.model)
    preflight(study, cells, model)
    base = base_probe_dir(study, store)
    if not is_done(base):
        log.info("probing the base model once for all cells → %s", base)
        stages.run_probe(study.probe, facts, model, base, progress=progress)
    _check_same_model(model, ProbeFolder(base), study)
    preflight(study, cells, model, ProbeFolder(base).category_dicts())  # enough facts for every cell?
    paraphrases = None
    if study.spec.paraphrases:
        paraphrases = {f.id: list(f.paraphrases) for f in stages.read_facts(study.spec.paraphrases)}
    return CellContext(study=study, stages=stages, store=store, facts=facts, model=model, base_dir=base,
                    progress=progress, paraphrases=paraphrases)


def base_probe_dir(study: Study, store: StudyStore) -> Path:
    """The study's base-probe folder: it depends on model, facts and probe settings only, so every
    cell (and every study with the same three) shares it."""
    ident = {k: v for k, v in hash_identity(study).items() if k in ("model", "facts", "facts_sample", "probe")}
    return store.base_dir(stable_hash(ident))


def _check_same_model(model: Any, base, study: Study) -> None:
    """Refuse to go on when the model's weights changed since the study's base probe (same name,
    other content): every finished cell's adapter would be evaluated on a model it was not trained on."""
    from knowpack.errors import KnowpackError

    loaded = getattr(model, "model_hash", None)
    if loaded and base.model_hash != loaded:
        raise KnowpackError(f"model {study.spec.model!r} is not the model this study was run with "
                            f"(base probe {base.model_hash}, loaded {loaded})",
                            hint="its weights changed: set a new `out` for the study (or restore the model)")


def _run_cells(study: Study, stages: Stages, store: StudyStore, todo: list[Cell], run: StudyRun, *,
               progress: bool, mlflow: bool, executor: Executor | None = None) -> None:
    from knowpack.study.executors import LocalExecutor

    ctx = _prepare(study, stages, store, todo, progress)
    stamp(store.root, stage="study", config=study.spec, seed=study.spec.grid.seed[0],
          inputs={"base_probe": ctx.base_dir.name}, details={"cells": [c.key for c in run.cells]})
    (executor or LocalExecutor()).run(ctx, todo, run, mlflow=mlflow)


def run_one_cell(ctx: CellContext, cell: Cell, run: StudyRun, *, mlflow: bool) -> None:
    """Run one cell in this process on the shared model, recording its outcome (a failure is
    recorded, not raised, so one failing cell never stops the grid; an interrupt is re-raised)."""
    cs = ctx.store.cell(cell.key)
    ensure_clean_model(ctx)
    try:
        run_cell(ctx, cell, cs)
    except KeyboardInterrupt:
        cs.write_status("interrupted")
        raise
    except Exception as exc:  # noqa: BLE001 - one failing cell must not stop the grid
        record_failure(run, cell, cs, exc, traceback.format_exc())
    else:
        record_success(ctx.store, cs, mlflow=mlflow)


def failure_message(exc: BaseException) -> str:
    """One line for status.json and the summary: the error's type and its own message."""
    return f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"


def record_failure(run: StudyRun, cell: Cell, cs: CellStore, exc: BaseException, trace: str) -> None:
    """Mark a cell failed: the traceback in error.log, the one-line message in status.json."""
    message = failure_message(exc)
    cs.error_log.write_text(trace, encoding="utf-8")
    cs.write_status("failed", error=message, failed_at=now())
    run.failed[cell.key] = message
    log.error("cell %s (%s) failed: %s", cell.key, cell.title(), message)


def record_success(store: StudyStore, cs: CellStore, *, mlflow: bool) -> None:
    """What follows a finished cell in the process that drives the study (the MLflow log)."""
    if mlflow:
        from knowpack.study.store import log_cell_to_mlflow

        log_cell_to_mlflow(store.root, cs)
