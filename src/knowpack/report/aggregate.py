"""Aggregation: one results.csv row per cell (= per seed), summary.csv with t-CIs across seeds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from knowpack.evaluate.artifacts import EvalMetrics
from knowpack.io import atomic_path
from knowpack.report.stats import t_interval
from knowpack.study.store import CellStore, StudyStore

AXIS_COLUMNS = ["unknown", "extra", "kind", "seed", "rank", "lr", "loss", "preset", "model", "early_stop", "method"]
ID_COLUMNS = ["key", "mixture", *AXIS_COLUMNS, "state"]
# Axes besides n and the mixture that can tell cells apart; the report shows the ones that vary
# beside the mixture label (``10 Para | tiny-a, early stop``), so no two series share a column.
FACET_AXES = ("model", "method", "early_stop", "rank", "lr", "loss", "preset")
FACET_SEPARATOR = " | "

# results.csv column -> its one dotted path in metrics.json.
METRIC_PATHS: dict[str, str] = {
    "reliability": "reliability.reliability",
    # Shifts are measured on untrained (held-out) facts: spill-over, not the facts that were taught.
    "positive_shift": "shifts.untrained.all.positive_share",
    "negative_shift": "shifts.untrained.all.negative_share",
    # Their yardsticks: base vs base on the same prompts, base vs base on other prompts, and the
    # shift itself measured on the other prompt draw.
    "paired_floor_positive": "shifts.untrained.paired_floor.positive_share",
    "paired_floor_negative": "shifts.untrained.paired_floor.negative_share",
    "prompt_sensitivity_positive": "shifts.untrained.prompt_sensitivity.positive_share",
    "prompt_sensitivity_negative": "shifts.untrained.prompt_sensitivity.negative_share",
    "second_draw_positive": "shifts.untrained.second_draw.positive_share",
    "second_draw_negative": "shifts.untrained.second_draw.negative_share",
    "refusal_rate_base": "refusals.all.base.fact_rate",
    "refusal_rate": "refusals.all.adapted.fact_rate",
    "unique_answers_base": "collapse.base.unique_answers",
    "unique_answers": "collapse.adapted.unique_answers",
    "mmlu_base": "benchmarks.mmlu.base.acc",
    "mmlu": "benchmarks.mmlu.adapted.acc",
    "truthfulqa_mc1_base": "benchmarks.truthfulqa.base.mc1",
    "truthfulqa_mc1": "benchmarks.truthfulqa.adapted.mc1",
    "truthfulqa_mc2_base": "benchmarks.truthfulqa.base.mc2",
    "truthfulqa_mc2": "benchmarks.truthfulqa.adapted.mc2",
    # Knowledge written and destroyed, per trainable parameter (capacity).
    "trainable_parameters": "bits.trainable_parameters",
    "bits_written": "bits.likelihood.written",
    "bits_destroyed": "bits.likelihood.destroyed",
    "bits_per_parameter": "bits.likelihood_bits_per_parameter",
    "em_bits_per_parameter": "bits.exact_match_bits_per_parameter",
    "facts_learned": "bits.facts_learned",
    "facts_per_parameter": "bits.facts_per_parameter",
}
# Columns dropped from results.csv when no cell has them (benchmarks without data, yardsticks turned off).
OPTIONAL_PREFIXES = ("truthfulqa", "paired_floor", "prompt_sensitivity", "second_draw", "trainable_parameters",
                     "bits", "em_bits", "facts_learned", "facts_per_parameter")
REQUIRED_METRICS = [c for c in METRIC_PATHS if not c.startswith(OPTIONAL_PREFIXES)]
RUN_COLUMNS = ["epochs", "final_loss", "train_seconds", "wall_seconds"]


def metric_values(metrics: EvalMetrics) -> dict[str, float]:
    """The results.csv metric columns read from one metrics.json (NaN where absent)."""
    row = {column: metrics.number(path) for column, path in METRIC_PATHS.items()}
    row["attractors"] = float(len(metrics.value("collapse.attractors") or []))
    return row


def _curve(cs: CellStore) -> pd.DataFrame | None:
    path = cs.train_dir / "curve.csv"
    if not path.is_file():
        return None
    curve = pd.read_csv(path)
    return curve if len(curve) else None


def cell_row(cs: CellStore) -> dict[str, Any]:
    """One results.csv row: cell axes, state, metrics (NaN until evaluated), epochs, wall time."""
    from knowpack.evaluate.artifacts import is_done

    record, status = cs.record, cs.status()
    row: dict[str, Any] = {"key": cs.key, "mixture": record.mixture, "state": status.state}
    row.update({a: record.axes.get(a) for a in AXIS_COLUMNS})
    row.update(cell_facets(record))
    evaluated = is_done(cs.eval_dir)
    row.update(metric_values(EvalMetrics.read(cs.eval_dir)) if evaluated
               else dict.fromkeys([*METRIC_PATHS, "attractors"], math.nan))
    curve = _curve(cs)
    row["epochs"] = int(curve["epoch"].max()) if curve is not None else math.nan
    row["final_loss"] = float(curve["loss"].iloc[-1]) if curve is not None and "loss" in curve else math.nan
    row["train_seconds"] = status.timings.get("train", math.nan)
    row["wall_seconds"] = status.seconds if status.seconds is not None else (
        sum(status.timings.values()) if status.timings else math.nan)
    return row


def cell_facets(record) -> dict[str, Any]:
    """The cell's model and early-stopping setting, filled in even when they are not grid axes
    (the study's one model, the train config's ``early_stop``), so every row names both."""
    return {"model": record.axes.get("model") or record.identity.get("model"),
            "early_stop": record.axes["early_stop"] if record.axes.get("early_stop") is not None
            else record.train.get("early_stop")}


def _facet_text(name: str, value: Any) -> str:
    if name == "model":
        from knowpack.study.grid import model_name

        return model_name(value)
    if name == "early_stop":
        # numpy booleans (pandas cells) are not ``True``; a CSV round trip gives strings.
        on = value == "True" if isinstance(value, str) else bool(value) and value == value
        return "early stop" if on else "fixed epochs"
    return f"{name}={value}"


def varying_facets(frame: pd.DataFrame) -> list[str]:
    """The facet axes of ``frame`` with more than one value (what the report must tell apart)."""
    return [c for c in FACET_AXES if c in frame and frame[c].astype(str).nunique() > 1]


def series_label(mixture: str, values: dict[str, Any], facets: list[str]) -> str:
    """The mixture label, followed by the varying facet values when there are any."""
    if not facets:
        return mixture
    return mixture + FACET_SEPARATOR + ", ".join(_facet_text(f, values.get(f)) for f in facets)


def with_series(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``mixture`` replaced by :func:`series_label` (unchanged when nothing varies)."""
    facets = varying_facets(frame)
    if frame.empty or not facets:
        return frame
    labels = [series_label(row["mixture"], row, facets) for row in frame.to_dict("records")]
    return frame.assign(mixture=labels)


def cell_series(study_dir: str | Path) -> dict[str, str]:
    """Cell key → its report label (:func:`series_label` over the study's varying facets)."""
    cells = StudyStore(study_dir).cells()
    rows = [{"key": cs.key, "mixture": cs.record.mixture, **{a: cs.record.axes.get(a) for a in FACET_AXES},
             **cell_facets(cs.record)} for cs in cells]
    frame = pd.DataFrame(rows, columns=["key", "mixture", *FACET_AXES])
    return dict(zip(frame["key"], with_series(frame)["mixture"])) if len(frame) else {}


def results_frame(study_dir: str | Path) -> pd.DataFrame:
    """results.csv as a DataFrame (one row per cell; every cell of the grid, done or not)."""
    rows = [cell_row(cs) for cs in StudyStore(study_dir).cells()]
    frame = pd.DataFrame(rows, columns=[*ID_COLUMNS, *METRIC_PATHS, "attractors", *RUN_COLUMNS])
    # Optional metrics that no cell produced (e.g. TruthfulQA without data) are dropped, not shown as NaN.
    optional = [c for c in METRIC_PATHS if c not in REQUIRED_METRICS and frame[c].isna().all()]
    empty_axes = [a for a in ("rank", "lr", "loss", "preset", "method") if frame[a].isna().all()]
    return frame.drop(columns=optional + empty_axes)


def group_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that identify a cell apart from its seed."""
    return ["mixture", *[a for a in AXIS_COLUMNS if a in frame and a != "seed"]]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in [*METRIC_PATHS, "attractors", *RUN_COLUMNS] if c in frame]


def summary_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval across seeds of every metric, per cell (finished seeds only)."""
    done = results[results["state"] == "done"]
    keys = group_columns(results)
    rows = []
    for values, group in done.groupby(keys, dropna=False, sort=True):
        row = dict(zip(keys, values))
        row["n_seeds"] = len(group)
        for column in metric_columns(results):
            iv = t_interval(group[column].tolist())
            row.update({f"{column}_mean": iv.mean, f"{column}_ci_low": iv.low, f"{column}_ci_high": iv.high})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values(["unknown", "extra", "kind"]).reset_index(drop=True)
    return frame


def curves_frame(study_dir: str | Path) -> pd.DataFrame:
    """Every cell's curve.csv stacked with its axes (for the reliability-vs-epoch figure)."""
    parts, labels = [], cell_series(study_dir)
    for cs in StudyStore(study_dir).cells():
        curve = _curve(cs)
        if curve is None:
            continue
        record = cs.record
        parts.append(curve.assign(key=cs.key, mixture=labels.get(cs.key, record.mixture),
                                  **{a: record.axes.get(a) for a in ("unknown", "extra", "kind", "seed")}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a CSV atomically (readers never see half a table)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_results(study_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``results.csv`` and ``summary.csv`` in the study folder and return both frames."""
    store = StudyStore(study_dir)
    results = results_frame(study_dir)
    summary = summary_frame(results)
    write_csv(results, store.results_csv)
    write_csv(summary, store.summary_csv)
    return results, summary


# ---------------------------------------------------------------------------------------------
# Report tables. Each returns a tidy numeric frame (written to tables/*.csv); html.py formats it.

def order_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort rows by n, then mixture in the paper's column order."""
    from knowpack.report.plots import mixture_order

    order = {m: i for i, m in enumerate(mixture_order(frame["mixture"]))}
    return frame.assign(_o=frame["mixture"].map(order)).sort_values(["unknown", "_o"], kind="stable").drop(columns="_o")


def metric_table(summary: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """unknown, mixture, the varying facets (model, early_stop, …), n_seeds + mean/CI of ``columns``
    (the ones present), in paper order."""
    keep = [c for c in columns if f"{c}_mean" in summary]
    if summary.empty or not keep:
        return pd.DataFrame()
    cols = ["unknown", "mixture", *varying_facets(summary), "n_seeds"] + \
        [f"{c}_{s}" for c in keep for s in ("mean", "ci_low", "ci_high")]
    return order_cells(summary[cols]).reset_index(drop=True)


def cell_metrics(study_dir: str | Path) -> list[tuple[CellStore, dict[str, Any], EvalMetrics]]:
    """(cell, cell.json as a dict, metrics.json) for every evaluated cell."""
    from knowpack.evaluate.artifacts import is_done

    labels = cell_series(study_dir)
    # ``mixture`` is the report label: cells of other models or settings never share a row.
    return [(cs, {**cs.record.model_dump(), "mixture": labels.get(cs.key, cs.record.mixture)},
             EvalMetrics.read(cs.eval_dir))
            for cs in StudyStore(study_dir).cells() if is_done(cs.eval_dir)]


def explanations_table(study_dir: str | Path) -> pd.DataFrame:
    """Paper Table 5: per cell and shift direction, the number of shifts and each reason's share."""
    rows = []
    for cs, config, metrics in cell_metrics(study_dir):
        ex = metrics.value("explanations")
        if not isinstance(ex, dict):
            continue
        for shift, entry in ex.items():
            if not isinstance(entry, dict) or "shares" not in entry:
                continue
            row = {"unknown": config["axes"]["unknown"], "mixture": config["mixture"],
                   "seed": config["axes"]["seed"], "shift": shift, "n": entry.get("n", 0)}
            row.update({k: v for k, v in entry["shares"].items()})
            rows.append(row)
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    reasons = [c for c in ("non_refusal", "explosion", "target", "domain", "explained") if c in frame]
    # Mean over seeds: counts as the average number of shifted facts, shares as average shares.
    agg = frame.groupby(["unknown", "mixture", "shift"], sort=False)[["n", *reasons]].mean().reset_index()
    agg["seeds"] = frame.groupby(["unknown", "mixture", "shift"], sort=False)["seed"].nunique().to_numpy()
    return order_cells(agg).reset_index(drop=True)


def attractors_table(study_dir: str | Path, top: int = 3) -> pd.DataFrame:
    """The ``top`` attractor answers per cell (answers whose frequency rose significantly)."""
    rows = []
    for cs, config, metrics in cell_metrics(study_dir):
        found = metrics.value("collapse.attractors") or []
        for rank, a in enumerate(found[:top], 1):
            rows.append({"unknown": config["axes"]["unknown"], "mixture": config["mixture"],
                         "seed": config["axes"]["seed"], "rank": rank, "answer": a.get("answer"),
                         "count_before": a.get("count_before"), "count_after": a.get("count_after"),
                         "share_after": a.get("share_after"), "p_adjusted": a.get("p_adjusted"),
                         "training_target": a.get("training_target")})
    return order_cells(pd.DataFrame(rows)).reset_index(drop=True) if rows else pd.DataFrame()


def transitions_table(study_dir: str | Path) -> pd.DataFrame:
    """Summed transition counts on untrained facts per (n, mixture) over seeds, plus the yardsticks."""
    parts = []
    for cs, config, _metrics in cell_metrics(study_dir):
        path = cs.eval_dir / "transitions.csv"
        if not path.is_file():
            continue
        t = pd.read_csv(path)
        t = t[(t["group"] == "untrained") & (t["subgroup"] == "all")]
        parts.append(t.assign(unknown=config["axes"]["unknown"], mixture=config["mixture"]))
    if not parts:
        return pd.DataFrame()
    frame = pd.concat(parts, ignore_index=True)
    summed = frame.groupby(["comparison", "unknown", "mixture", "from", "to"], sort=False)["count"].sum().reset_index()
    return summed


def transition_matrices(transitions: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, before×after count matrix) per (n, mixture), then the base-vs-base yardsticks."""
    if transitions.empty:
        return []
    out = []
    adapted = order_cells(transitions[transitions["comparison"] == "base→adapted"])
    for (n, mixture), g in adapted.groupby(["unknown", "mixture"], sort=False):
        out.append((f"{n} UK + {mixture}", g.pivot_table(index="from", columns="to", values="count", aggfunc="sum")))
    for comparison, title in (("base→base(same prompts)", "paired floor (base vs base)"),
                              ("base→base(other prompts)", "prompt sensitivity (base vs base)")):
        floor = transitions[transitions["comparison"] == comparison]
        # Every cell of a seed shares its base-model re-probes; one cell's matrix is the yardstick —
        # one per facet group (each model has its own base model).
        groups = floor["mixture"].str.partition(FACET_SEPARATOR)[2] if len(floor) else pd.Series(dtype=str)
        for group in dict.fromkeys(groups):
            part = floor[groups == group]
            first = part.iloc[0]
            part = part[(part["unknown"] == first["unknown"]) & (part["mixture"] == first["mixture"])]
            out.append((f"{title}{' · ' + group if group else ''}",
                        part.pivot_table(index="from", columns="to", values="count", aggfunc="sum")))
    return out


def fact_outcomes(cs: CellStore) -> pd.DataFrame | None:
    """Per held-out fact: did it shift positively / negatively (from per_fact.parquet)?"""
    from knowpack.evaluate.metrics.shifts import NEGATIVE, POSITIVE

    path = cs.eval_dir / "per_fact.parquet"
    if not path.is_file():
        return None
    pf = pd.read_parquet(path)
    pf = pf.dropna(subset=["base_category", "adapted_category"])
    pf = pf[~pf["trained"].astype(bool)]  # held-out = never in train.jsonl
    pairs = list(zip(pf["base_category"], pf["adapted_category"]))
    return pd.DataFrame({"id": pf["id"].to_numpy(),
                         "positive": [p in POSITIVE for p in pairs],
                         "negative": [p in NEGATIVE for p in pairs]})


def _paired_mixtures(evaluated: dict[tuple, CellStore]) -> list[tuple[int, str, str]]:
    """(n, baseline, mixture) pairs to compare: per n and per facet group (the label after
    ``" | "``: a model, a setting), every mixture against the group's first one (``w/o`` when present)."""
    from knowpack.report.plots import mixture_order

    pairs = []
    for n in sorted({k[0] for k in evaluated}):
        groups: dict[str, list[str]] = {}
        for label in mixture_order({k[1] for k in evaluated if k[0] == n}):
            groups.setdefault(label.partition(FACET_SEPARATOR)[2], []).append(label)
        for labels in groups.values():
            pairs += [(n, labels[0], mixture) for mixture in labels[1:]]
    return pairs


def _paired_rows(evaluated: dict[tuple, CellStore], n: int, baseline: str, mixture: str, n_boot: int) -> list[dict]:
    """The positive and negative shift rows of one mixture against its baseline at n."""
    from knowpack.report.stats import mcnemar_exact, paired_bootstrap

    a_parts, b_parts = {"positive": [], "negative": []}, {"positive": [], "negative": []}
    seeds = sorted(s for (m_n, m, s) in evaluated if m_n == n and m == mixture and (n, baseline, s) in evaluated)
    for seed in seeds:
        a, b = fact_outcomes(evaluated[(n, mixture, seed)]), fact_outcomes(evaluated[(n, baseline, seed)])
        if a is None or b is None:
            continue
        joined = a.merge(b, on="id", suffixes=("_a", "_b"))
        for side in a_parts:
            a_parts[side] += joined[f"{side}_a"].tolist()
            b_parts[side] += joined[f"{side}_b"].tolist()
    rows = []
    for side in ("positive", "negative"):
        a_vals, b_vals = a_parts[side], b_parts[side]
        if not a_vals:
            continue
        test = mcnemar_exact(a_vals, b_vals)
        diff = paired_bootstrap(a_vals, b_vals, n_boot=n_boot, seed=n)
        rows.append({"unknown": n, "mixture": mixture, "baseline": baseline, "shift": side,
                     "seeds": len(seeds), "pairs": test.n,
                     "rate": sum(a_vals) / len(a_vals), "rate_baseline": sum(b_vals) / len(b_vals),
                     "diff": diff.diff, "diff_ci_low": diff.low, "diff_ci_high": diff.high,
                     "only_mixture": test.only_a, "only_baseline": test.only_b, "p_mcnemar": test.pvalue})
    return rows


def paired_tests(study_dir: str | Path, *, n_boot: int = 2000) -> pd.DataFrame:
    """Each mixture vs the baseline mixture (``w/o`` when present) at the same n, paired per fact.

    Pairs are the held-out facts both cells share, pooled over the seeds where both cells finished;
    returns rates, their difference with a paired bootstrap CI and the exact McNemar p-value. With
    several models (or other varying facets) each is compared within its own group.
    """
    evaluated = {}
    for cs, config, _ in cell_metrics(study_dir):
        axes = config["axes"]
        evaluated[(axes["unknown"], config["mixture"], axes["seed"])] = cs
    rows = [row for n, baseline, mixture in _paired_mixtures(evaluated)
            for row in _paired_rows(evaluated, n, baseline, mixture, n_boot)]
    return pd.DataFrame(rows)
