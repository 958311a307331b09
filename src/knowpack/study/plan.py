"""Loading a study and every check that can be decided before the first training.

``load_study`` validates the YAML, its overrides, every cell's stage configs, metric names and
MMLU subjects. ``preflight`` runs once the model and then the base probe are at hand, still
before any cell trains: LoRA target modules the model does not have, and cells that need more
facts of a category than the probe found. A study that would fail after hours
fails in seconds instead, with every problem listed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from knowpack.errors import KnowpackError
from knowpack.schema import validation_problems
from knowpack.study.grid import Cell, expand_grid
from knowpack.study.spec import Study, StudySpec, apply_overrides, raise_invalid, read_yaml


def parse_study(raw: dict[str, Any], *, source: Path | None = None, overrides: list[str] | None = None) -> Study:
    """Validate a raw study dict (after overrides) and every cell's configs; one error lists all problems."""
    overrides = list(overrides or [])
    data = apply_overrides(raw, overrides)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise_invalid(validation_problems(exc), source)
    study = Study(spec=spec, source=source, overrides=overrides)
    problems = _eval_problems(study)
    try:
        study_claims(study)  # a broken claim file fails now, not when the report is built
    except KnowpackError as exc:
        problems.append(f"claims: {exc.message}")
    try:
        expand_grid(study)  # cell configs (mix, train per grid point): a typo fails before hours of work
    except KnowpackError as exc:
        problems += exc.message.split("\n  ")
    if problems:
        raise_invalid(problems, source)
    return study


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read, override and validate a study YAML file."""
    return parse_study(read_yaml(path), source=Path(path), overrides=overrides)


def study_claims(study: Study):
    """The parsed claims the study's report will decide (None when the spec says none)."""
    from knowpack.report.claims_schema import load_claims, paper_claims

    if study.spec.claims is None:
        return None
    return paper_claims() if study.spec.claims == "paper" else load_claims(study.spec.claims)


def _eval_problems(study: Study) -> list[str]:
    """Metric names and MMLU subjects that do not exist."""
    from knowpack.evaluate.registry import load_builtin_metrics

    problems = []
    known = load_builtin_metrics()
    for name in study.eval.metrics or []:
        if name not in known:
            problems.append(f"eval.metrics: unknown metric {name!r} (choose from: {', '.join(sorted(known))})")
    if "mmlu" in study.eval.benchmarks and study.eval.mmlu_subjects:
        from knowpack.evaluate.benchmarks import mmlu

        subjects = {row["subject"] for row in mmlu.load_test()}
        for subject in study.eval.mmlu_subjects:
            if mmlu.subject_key(subject) not in subjects:
                problems.append(f"eval.mmlu_subjects: unknown MMLU subject {subject!r}")
    if study.eval.truthfulqa_path is not None and "truthfulqa" in study.eval.benchmarks \
            and not Path(study.eval.truthfulqa_path).expanduser().is_file():
        problems.append(f"eval.truthfulqa_path: file not found: {study.eval.truthfulqa_path}")
    return problems


def _target_problems(cells: list[Cell], model) -> list[str]:
    """LoRA target modules that the model does not have (checked once per distinct target list)."""
    from knowpack.train.trainer import linear_module_names

    available = set(linear_module_names(model))
    missing = sorted({t for cell in cells for t in cell.train.targets if t not in available})
    if not missing:
        return []
    return [f"train.targets: module(s) {', '.join(missing)} not found in the model "
            f"(available linear modules: {', '.join(sorted(available))})"]


def _category_shots_needed(study: Study) -> int:
    """Facts of ``eval.benchmark_shot_category`` the evaluation takes as fixed exemplars (0: none),
    outside the mixture; same-relation shots need no fixed number."""
    if study.eval.benchmark_shot_category is None:
        return 0
    probe = study.probe.model_copy(update=study.eval.probe)  # what the evaluation's re-probes use
    return probe.prompts * probe.shots if probe.shot_pool == "fixed" else 0


def _pool_problems(study: Study, cells: list[Cell], categories: list[dict], facts: list | None = None) -> list[str]:
    """Cells whose mixture needs more facts of a category (or, for same-relation mixtures, of a
    relation) than the base probe found."""
    from knowpack.mix.build import same_relation_problems
    from knowpack.mix.config import KIND_CATEGORY

    counts = Counter(row["category"] for row in categories)
    problems, shots = [], _category_shots_needed(study)
    for cell in cells:
        mix = cell.mix
        reserved = {c: min(mix.heldout_per_category, counts[c]) for c in counts}
        free = {c: counts[c] - reserved.get(c, 0) for c in counts}
        need: Counter = Counter()
        if mix.kind == "control":
            need["HighlyKnown"] += mix.unknown * (1 + mix.extra)
        else:
            need["Unknown"] += mix.unknown
            if mix.kind in KIND_CATEGORY:
                need[KIND_CATEGORY[mix.kind]] += mix.unknown * mix.extra
        if shots:
            need[study.eval.benchmark_shot_category] += shots
        for category, n in need.items():
            if n > free.get(category, 0):
                with_shots = f", {shots} of them few-shot exemplars" if shots and category == \
                    study.eval.benchmark_shot_category else ""
                problems.append(f"grid cell {cell.title()}: needs {n} {category} facts{with_shots}, the base probe has "
                                f"{counts.get(category, 0)} ({reserved.get(category, 0)} held out for evaluation)")
        if facts is not None and not any(p.startswith(f"grid cell {cell.title()}:") for p in problems):
            # The same draws as `knowpack mix`: which relations the n Unknown facts fall in decides the need.
            problems += [f"grid cell {cell.title()}: {p}" for p in same_relation_problems(mix, facts, categories)]
    return problems


def preflight(study: Study, cells: list[Cell], model, categories: list[dict] | None = None,
              facts: list | None = None) -> None:
    """Every check decidable from the spec and the model (and, once they are given, the base probe's
    ``categories`` and the study's ``facts``, whose relations same-relation mixtures need), before
    the first cell trains."""
    if categories is None:
        problems = _target_problems(cells, model.model) if getattr(model, "model", None) is not None else []
    else:
        problems = _pool_problems(study, cells, categories, facts)
    if problems:
        raise KnowpackError("the study cannot run as specified:\n" + "\n".join(f"  {p}" for p in problems),
                            hint="fix the keys named above, or probe more facts (facts_sample, facts)")
