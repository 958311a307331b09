"""`knowpack capacity`: one capacity search per arm (method × rank) over ordinary study cells.

Every arm's trials run as study grids into one folder, so the folder is also a study: the report
shows every cell the searches trained, plus a capacity section read from ``capacity.json``.
Before the first search the base probe is known (the first trial makes it), and the range of n is
lowered to what the probe can supply, so no trial fails hours in for want of Unknown facts.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from knowpack.capacity.artifacts import CSV_NAME, ArmResult, CapacityResults, capacity_frame
from knowpack.capacity.search import search_capacity
from knowpack.capacity.spec import CapacityRun, arm_label
from knowpack.capacity.trials import ArmTrials, as_json, trial_study
from knowpack.errors import KnowpackError

logger = logging.getLogger(__name__)


def _fits(run: CapacityRun, n: int, categories: list[dict], arm: ArmTrials) -> bool:
    """Whether the base probe has enough facts for the trial of n (treated and control cells)."""
    from knowpack.study.grid import expand_grid
    from knowpack.study.plan import preflight

    study = trial_study(run, n, method=arm.method, rank=arm.rank)
    try:
        preflight(study, expand_grid(study), None, categories)
    except KnowpackError:
        return False
    return True


def pool_limit(run: CapacityRun, arm: ArmTrials) -> int:
    """The largest n ≤ n_max the base probe can supply (the n_min trial must have run: it made the probe)."""
    from knowpack.probe.artifacts import ProbeFolder
    from knowpack.study.runner import base_probe_dir
    from knowpack.study.store import StudyStore

    section = run.section
    study = trial_study(run, section.n_min, method=arm.method, rank=arm.rank)
    categories = ProbeFolder(base_probe_dir(study, StudyStore(run.out_dir))).category_dicts()
    if _fits(run, section.n_max, categories, arm):
        return section.n_max
    low, high = section.n_min, section.n_max  # low fits (its trial ran), high does not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if _fits(run, mid, categories, arm) else (low, mid)
    logger.warning("the base probe supplies at most n=%d for these trials (n_max %d lowered)", low, section.n_max)
    return low


def _search_arm(arm: ArmTrials, n_max: int) -> ArmResult:
    section = arm.run.section
    config = section.search_config(n_max=n_max)
    result = search_capacity(arm.trial(config.budgets), config)
    if n_max < section.n_max:
        result.notes.append(f"n_max lowered from {section.n_max} to {n_max}: the base probe has no more facts "
                            "for these trials (probe more facts to search further)")
    trials = [as_json(arm.details[t.n]) for t in result.trials]
    return ArmResult(method=arm.method, rank=arm.rank, trainable_parameters=arm.trainable_parameters(),
                     n_max_searched=n_max, search=result, trials=trials, cells=list(arm.cell_keys),
                     seconds=round(sum(t["seconds"] for t in trials), 3))


def _record_all_cells(out_dir: Path, arms: list[ArmResult]) -> None:
    """study.json lists the last trial's cells only; list every cell of every search, so the report
    and results.csv show all of them."""
    from knowpack.study.artifacts import StudyRecord

    record = StudyRecord.read(out_dir)
    cells = list(dict.fromkeys(key for arm in arms for key in arm.cells))
    record.model_copy(update={"cells": cells}).write(out_dir)


def write_outputs(out_dir: Path, results: CapacityResults) -> None:
    """capacity.json, capacity.csv, the four plots, study.json's cell list and results.csv."""
    from knowpack.capacity import plots
    from knowpack.report.aggregate import write_csv, write_results

    results.write(out_dir)
    frame = capacity_frame(results)
    write_csv(frame, out_dir / CSV_NAME)
    plots.capacity_vs_rank(frame, out_dir / "plots" / "capacity_vs_rank.png")
    plots.capacity_vs_parameters(frame, out_dir / "plots" / "capacity_vs_parameters.png")
    plots.bits_vs_parameters(frame, out_dir / "plots" / "capacity_bits.png")
    plots.bits_per_trial(results, out_dir / "plots" / "capacity_bits_per_trial.png")
    _record_all_cells(out_dir, results.arms)
    write_results(out_dir)


def run_capacity(run: CapacityRun, *, stages=None, progress: bool = True) -> CapacityResults:
    """Search every arm and write the capacity outputs into the spec's ``out`` folder.

    Arms run one after another; each trial reuses any cell an earlier search (or an earlier,
    killed run of this one) already finished. ``stages`` replaces the study stages (tests).
    """
    from knowpack.study.store import now

    started, t0 = now(), time.perf_counter()
    section = run.section
    arms = [ArmTrials(run, method, rank, stages=stages, progress=progress) for method, rank in section.arms()]
    arms[0].details_for(section.n_min)  # the first trial also makes the base probe
    n_max = pool_limit(run, arms[0])
    done: list[ArmResult] = []
    for arm in arms:
        done.append(_search_arm(arm, n_max))
        logger.info("capacity %s: n found %d (%s)", arm_label(arm.method, arm.rank), done[-1].search.n_found,
                    ", ".join(done[-1].search.bound_by))
    results = CapacityResults(
        name=run.spec.name, model=run.spec.model, spec=run.spec.model_dump(mode="json"),
        reliability=section.reliability, budgets=section.budgets(), confidence=section.confidence, arms=done,
        started=started, finished=now(), seconds=round(time.perf_counter() - t0, 2), command=run.command())
    write_outputs(run.out_dir, results)
    return results
