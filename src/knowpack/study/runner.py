"""Study runner: probe the base model once, then mix → train → evaluate every grid cell.

Cells live in content-addressed folders, so a rerun skips finished cells and resumes the rest:
each stage says itself whether its folder is finished (``is_done``) and resumes itself from its
own files. A failing cell is recorded and the others go on. How one cell runs is in ``cells``;
which process runs it is the executor's business (``executors``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from knowpack.io import stable_hash, write_jsonl
from knowpack.manifest import refuse_foreign, stamp
from knowpack.study.artifacts import StudyRecord
from knowpack.study.cells import CellContext, Stages, StudyRun, check_same_model
from knowpack.study.executors import Executor, LocalExecutor
from knowpack.study.grid import Cell, cell_identity, expand_grid, hash_identity, study_identity
from knowpack.study.spec import Study
from knowpack.study.store import StudyStore, now

__all__ = ["Stages", "StudyRun", "run_study"]

log = logging.getLogger(__name__)


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
    if study.spec.grid.model:
        identity["model"] = study.models  # each cell.json names its own one
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
        cell.record(cell_identity(study, cell)).write(cs.root)
        if not cs.status_file.is_file():
            cs.write_status("pending", title=cell.title())


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
    check_same_model(model, ProbeFolder(base), study)
    preflight(study, cells, model, ProbeFolder(base).category_dicts(), facts)  # enough facts for every cell?
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


def _run_cells(study: Study, stages: Stages, store: StudyStore, todo: list[Cell], run: StudyRun, *,
               progress: bool, mlflow: bool, executor: Executor | None = None) -> None:
    """Prepare every model of the study (base probe, preflight), then run its cells model by model.

    Every model is probed and checked before the first cell trains, so a problem with the second
    model fails in minutes, not after the first model's cells; only the model whose cells run
    stays loaded.
    """
    groups = [(model, [c for c in todo if (c.model or study.spec.model) == model]) for model in study.models]
    contexts = []
    for i, (model, cells) in enumerate(g for g in groups if g[1]):
        ctx = _prepare(study.for_model(model) if study.spec.grid.model else study, stages, store, cells, progress)
        if i:
            contexts[-1][0].model = None  # released; ensure_clean_model loads it again for its cells
        contexts.append((ctx, cells))
    # One base probe per model; with several models each is named after its model.
    base = {"base_probe" if not study.spec.grid.model else f"base_probe[{ctx.study.spec.model}]": ctx.base_dir.name
            for ctx, _ in contexts}
    stamp(store.root, stage="study", config=study.spec, seed=study.spec.grid.seed[0], inputs=base,
          details={"cells": [c.key for c in run.cells]})
    for ctx, cells in contexts:
        (executor or LocalExecutor()).run(ctx, cells, run, mlflow=mlflow)

