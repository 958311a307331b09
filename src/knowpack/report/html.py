"""`knowpack report`: one self-contained report.html (PNG figures embedded as base64) per study.

Every table shown is also written to ``STUDY_DIR/tables/*.csv`` and every figure to
``STUDY_DIR/plots/*.png``, so numbers can be reused without scraping the HTML.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from jinja2 import Environment

from knowpack.errors import KnowpackError
from knowpack.io import sha256_file, write_text
from knowpack.manifest import Manifest
from knowpack.report import aggregate as agg
from knowpack.report import plots
from knowpack.study.store import StudyStore

BENCHMARK_HINT = (
    "Benchmarks were not configured for this study. MMLU ships with knowpack's dependencies: add "
    "<code>eval: {benchmarks: [mmlu], mmlu_limit: 20}</code> to the study YAML (<code>mmlu_limit: null</code> "
    "for the full test set). For TruthfulQA point <code>eval.truthfulqa_path</code> to a local copy "
    "(HF multiple_choice layout, mc_task.json or TruthfulQA.csv) and add <code>truthfulqa</code> to "
    "<code>eval.benchmarks</code>.")


def fmt_ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    """``mean ± half-width`` of a 95% interval; just the mean when there is one seed; — when missing."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if low is None or math.isnan(low) or math.isnan(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def pivot_ci(table: pd.DataFrame, column: str, digits: int = 3) -> pd.DataFrame:
    """Rows = n Unknown facts, columns = mixtures (paper order), cells = ``mean ± CI``."""
    cells = table.assign(v=[fmt_ci(m, lo, hi, digits) for m, lo, hi in zip(
        table[f"{column}_mean"], table[f"{column}_ci_low"], table[f"{column}_ci_high"])])
    wide = cells.pivot(index="unknown", columns="mixture", values="v")
    wide = wide[plots.mixture_order(wide.columns)].fillna("—")
    wide.columns.name = None
    return wide.rename_axis("# Unknown").reset_index()


def _html_table(frame: pd.DataFrame, *, index: bool = True, digits: int = 3) -> str:
    if frame is None or frame.empty:
        return ""
    table = frame.to_html(classes="tbl", index=index, na_rep="—", border=0, escape=True,
                          float_format=lambda x: f"{x:.{digits}f}")
    return f'<div class="tblwrap">{table}</div>'


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


class _Builder:
    """Collects sections; writes each table to tables/ and each plot to plots/ as it goes."""

    def __init__(self, store: StudyStore):
        self.store = store
        self.sections: list[dict[str, str]] = []

    def table(self, name: str, frame: pd.DataFrame) -> pd.DataFrame:
        if frame is not None and not frame.empty:
            agg.write_csv(frame, self.store.tables_dir / f"{name}.csv")
        return frame

    def plot(self, name: str) -> Path:
        return self.store.plots_dir / f"{name}.png"

    def add(self, anchor: str, title: str, body: str, note: str = "") -> None:
        self.sections.append({"id": anchor, "title": title, "body": body, "note": note})

    def add_empty(self, anchor: str, title: str, why: str = "No evaluated cells yet.") -> None:
        """A section that says why it has nothing to show (the reader should not hunt for it)."""
        self.add(anchor, title, f"<p class='empty'>{html.escape(why)}</p>")


FIGURES = {"C1": "Reliability (Table 2)", "C2": "Reliability vs epoch (Fig. 2)", "C3": "Knowledge shifts (Table 3)",
           "C4": "Benchmarks (Figs. 3-4)", "C5": "Refusals (Table 4)", "C6": "Refusals and answer diversity, "
           "attractor answers (Table 4)"}


def study_verdicts(store: StudyStore, results: pd.DataFrame, curves: pd.DataFrame):
    """The claims recorded in study.json (fixed before the run), decided on the finished cells."""
    from knowpack.report.claims import evaluate_claims
    from knowpack.report.claims_schema import Claim

    record = store.record()
    if record is None or not record.claims:
        return None
    claims = [Claim.model_validate(c) for c in record.claims]
    return evaluate_claims(claims, results, curves, lambda key: agg.fact_outcomes(store.cell(key)), missing="report")


def reproduce_command(store: StudyStore) -> str:
    """The commands that rerun the study (or the capacity search that made it) and rebuild this report."""
    from knowpack.capacity.artifacts import CapacityResults

    record = store.record()
    given = record.source if record is not None and record.source else None
    if CapacityResults.exists(store.root):
        # A capacity folder is written by `knowpack capacity`; capacity.json says how (flags included).
        command = CapacityResults.read(store.root).command or f"knowpack capacity {given or 'CAPACITY.yaml'}"
        return f"{command} && knowpack report {store.root}"
    source = given or "STUDY.yaml"
    sets = "".join(f" --set '{o}'" for o in (record.overrides if record is not None else []))
    return f"knowpack study run {source}{sets} && knowpack report {store.root}"


def _verdicts(b: _Builder, verdicts) -> None:
    from knowpack.report.claims import render_markdown, verdict_frame

    if verdicts is None:
        return b.add_empty("verdicts", "Verdicts", "The study names no claims (`claims: null`).")
    table = b.table("verdicts", verdict_frame(verdicts))
    shown = table[[c for c in ("claim", "title", "statistic", "estimate", "ci_low", "ci_high", "n_pairs", "unit",
                               "verdict", "reason") if c in table]]
    write_text(b.store.root / "findings.md", "# Findings\n\n" + render_markdown(
        verdicts, reproduce=reproduce_command(b.store), figures={k: v for k, v in FIGURES.items()}))
    # A claim's verdict shows its deciding part; every part (each n, mixture, comparison) is listed too.
    parts = b.table("verdict_parts", verdict_frame(verdicts, parts=True))
    body = _html_table(shown, index=False, digits=3)
    if not parts.empty:
        body += "<h3>Every part of every claim</h3>" + _html_table(
            parts[[c for c in ("claim", "check", "level", "estimate", "ci_low", "ci_high", "n_pairs", "unit",
                               "p_value", "verdict") if c in parts]], index=False, digits=3)
    b.add("verdicts", "Verdicts on the paper's claims", body,
          "Each claim is a comparison fixed before the run (recorded in study.json): a paired statistic over "
          "seeds or over held-out facts, its 95% CI, and the rule: supported when the CI lies on the claimed "
          "side, contradicted when it lies on the other, undecided otherwise. Claims this grid cannot decide "
          "say why. The same table is written to findings.md.")


def _reliability(b: _Builder, summary: pd.DataFrame, curves: pd.DataFrame) -> None:
    table = b.table("reliability", agg.metric_table(summary, ["reliability"]))
    fig = plots.reliability_curves(curves, b.plot("reliability_vs_epoch"))
    body = _img(fig, "reliability vs epoch")
    if not table.empty:
        body += ("<h3>Reliability after the last epoch (paper Table 2)</h3>"
                 + _html_table(pivot_ci(table, "reliability"), index=False))
    b.add("reliability", "Reliability vs epoch (paper Fig. 2)", body or "<p class='empty'>No finished cells yet.</p>",
          "Share of (trained Unknown fact × few-shot prompt) pairs answered correctly, per epoch checkpoint. "
          "Lines: mean over seeds; band: min–max over seeds. Table: mean ± 95% t-interval half-width.")


def _metric_section(b: _Builder, summary: pd.DataFrame, name: str, columns: list[str], title: str) -> pd.DataFrame:
    """Write tables/<name>.csv with mean/CI of ``columns``; an empty section when nothing is evaluated."""
    table = b.table(name, agg.metric_table(summary, columns))
    if table.empty:
        b.add_empty(name, title)
    return table


YARDSTICKS = {"paired_floor": "paired floor", "prompt_sensitivity": "prompt sensitivity",
              "second_draw": "shift on other prompts"}


def _shifts(b: _Builder, summary: pd.DataFrame) -> None:
    cols = ["positive_shift", "negative_shift",
            *(f"{name}_{side}" for name in YARDSTICKS for side in ("positive", "negative"))]
    table = _metric_section(b, summary, "shifts", cols, "Knowledge shifts (paper Table 3)")
    if table.empty:
        return
    parts = []
    for side in ("positive", "negative"):
        wide = pivot_ci(table, f"{side}_shift")
        for name, label in YARDSTICKS.items():
            if f"{name}_{side}_mean" in table:
                values = table.groupby("unknown")[f"{name}_{side}_mean"].mean()
                wide[label] = wide["# Unknown"].map(values).map(lambda v: "—" if math.isnan(v) else f"{v:.3f}")
        wide.insert(1, "shift", side)
        parts.append(wide)
    wide = pd.concat(parts).sort_values(["# Unknown", "shift"], ascending=[True, False], kind="stable")
    body = _img(plots.shifts_vs_n(summary, b.plot("shifts_vs_n")), "shifts vs n") + _html_table(wide, index=False)
    b.add("shifts", "Knowledge shifts (paper Table 3)", body,
          "Share of held-out (untrained) facts whose SliCK category improved (positive: UK→MK/HK, MK→HK, "
          "WK→MK/HK) or degraded (negative: HK→MK/WK/UK, MK→WK/UK). SameRel columns train each Unknown fact "
          "with k known facts of its own relation (HighlyKnown first, then MaybeKnown). Ctrl columns are control adapters: "
          "the same number of examples and steps with known facts only, i.e. what fine-tuning itself does. "
          "Paired floor: the base model probed again with the same prompts (the like-for-like yardstick, "
          "close to zero); prompt sensitivity: the base model with another draw of few-shot prompts; shift "
          "on other prompts: the cell's shift measured on that second draw (mean over the cells of each n).")


def _benchmarks(b: _Builder, summary: pd.DataFrame) -> None:
    names = ["mmlu_base", "mmlu", "truthfulqa_mc1_base", "truthfulqa_mc1", "truthfulqa_mc2_base", "truthfulqa_mc2"]
    present = [n for n in names if f"{n}_mean" in summary and not summary[f"{n}_mean"].isna().all()]
    if not present:
        b.add("benchmarks", "Benchmarks (paper Figs. 3–4)", f"<p class='note-box'>{BENCHMARK_HINT}</p>")
        return
    table = b.table("benchmarks", agg.metric_table(summary, present))
    body = _img(plots.benchmarks_vs_n(summary, b.plot("benchmarks_vs_n")), "benchmarks vs n")
    for name in [n for n in present if not n.endswith("_base")]:
        label = plots.BENCHMARK_LABELS.get(name, name)
        base_txt = _base_benchmark_text(table, f"{name}_base_mean")
        body += f"<h3>{html.escape(label)}{base_txt}</h3>" + _html_table(pivot_ci(table, name), index=False)
    settings = _study(b.store).get("identity", {}).get("eval") or {}  # the full EvalConfig
    note = "Accuracy of the adapted model; the dashed line is the base model on the same questions."
    if "mmlu_shots" in settings:
        limit = settings.get("mmlu_limit")
        sample = "every question" if limit is None else f"at most {limit} questions per subject"
        note += f" MMLU: {settings['mmlu_shots']}-shot, {sample} (the paper: full test set, 5-shot)."
    b.add("benchmarks", "Benchmarks (paper Figs. 3–4)", body, note)


def _base_benchmark_text(table: pd.DataFrame, column: str) -> str:
    """`` — base model 0.412`` (per model when the study compares several); empty without a value."""
    base = table.get(column)
    if base is None or base.isna().all():
        return ""
    if "model" not in table:
        return f" — base model {base.mean():.3f}"
    from knowpack.study.grid import model_name

    per_model = table.groupby("model", sort=False)[column].mean()
    return " — base model " + ", ".join(f"{model_name(m)} {v:.3f}" for m, v in per_model.items())


def _refusals(b: _Builder, summary: pd.DataFrame) -> None:
    cols = ["refusal_rate_base", "refusal_rate", "unique_answers_base", "unique_answers"]
    table = _metric_section(b, summary, "refusals_unique", cols, "Refusals and answer diversity (paper Table 4)")
    if table.empty:
        return
    from knowpack.study.grid import model_name

    rows = []
    # One base-model row per model compared (each adapter is measured against its own base model).
    for name, part in (table.groupby("model", sort=False) if "model" in table else [(None, table)]):
        rows.append({"model": "base model" if name is None else f"base model {model_name(name)}",
                     "refusal rate": f"{part['refusal_rate_base_mean'].mean():.3f}",
                     "unique answers": f"{part['unique_answers_base_mean'].mean():.0f}"})
    for _, r in table.iterrows():
        rows.append({"model": f"{r['unknown']} UK + {r['mixture']}",
                     "refusal rate": fmt_ci(r["refusal_rate_mean"], r["refusal_rate_ci_low"], r["refusal_rate_ci_high"]),
                     "unique answers": fmt_ci(r["unique_answers_mean"], r["unique_answers_ci_low"],
                                              r["unique_answers_ci_high"], 0)})
    b.add("refusals_unique", "Refusals and answer diversity (paper Table 4)", _html_table(pd.DataFrame(rows), index=False),
          "Refusal rate: share of probed facts with at least one refusing greedy answer. Unique answers: "
          "distinct normalized greedy answer spans over all probed facts (refusals skipped); a drop means "
          "answers collapse onto a few attractors.")


def _explanations(b: _Builder) -> None:
    table = b.table("explanations", agg.explanations_table(b.store.root))
    if table.empty:
        return b.add_empty("explanations", "Why facts shifted (paper Table 5)", "No shift explanations found.")
    reasons = [c for c in ("n", "non_refusal", "explosion", "target", "domain", "explained") if c in table]
    wide = table.pivot_table(index=["unknown", "mixture"], columns="shift", values=reasons, sort=False)
    wide = wide.swaplevel(axis=1)
    shifts = [s for s in ("Unknown→HighlyKnown", "HighlyKnown→Unknown") if s in wide.columns.get_level_values(0)]
    wide = wide[[(s, r) for s in shifts for r in reasons if (s, r) in wide.columns]]
    wide = wide.loc[agg.order_cells(table[["unknown", "mixture"]].drop_duplicates()).itertuples(index=False, name=None)]
    wide.index.names = ["# Unknown", "mixture"]
    wide.columns.names = [None, None]
    b.add("explanations", "Why facts shifted (paper Table 5)", _html_table(wide, digits=2),
          "For untrained facts that moved Unknown→HighlyKnown or back: n = shifted facts (mean over seeds), "
          "then the share explained by each reason "
          "(reasons overlap). non_refusal: the base model refused; explosion: the new answer is an attractor; "
          "target: the new answer is a trained answer; domain: the fact shares a domain with a trained fact.")


def _transitions(b: _Builder) -> None:
    transitions = b.table("transitions", agg.transitions_table(b.store.root))
    fig = plots.transition_heatmaps(agg.transition_matrices(transitions), b.plot("transitions"))
    b.add("transitions", "Category transition matrices", _img(fig, "transition matrices")
          or "<p class='empty'>No transitions.csv found.</p>",
          "Untrained facts, category before (rows) → after training (columns), summed over seeds; each "
          "cell shows the row share and the count. The last panels are the base-vs-base yardsticks.")


def _attractors(b: _Builder) -> None:
    table = b.table("attractors", agg.attractors_table(b.store.root))
    body = _html_table(_attractor_summary(table), index=False) if not table.empty else \
        "<p class='empty'>No attractor answers: no answer became significantly more frequent after training.</p>"
    b.add("attractors", "Attractor answers", body,
          "Answers whose frequency on untrained facts rose significantly over the base model "
          "(one-sided binomial test, multiple-testing corrected); the top 3 per cell, counts summed over seeds. "
          "tables/attractors.csv lists them per seed with p-values.")


def _attractor_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (n, mixture): its most frequent attractors, with counts summed over seeds."""
    rows = []
    for (n, mixture), g in table.groupby(["unknown", "mixture"], sort=False):
        seeds = g["seed"].nunique()
        per = g.groupby("answer").agg(before=("count_before", "sum"), after=("count_after", "sum"),
                                      seeds=("seed", "nunique")).sort_values("after", ascending=False)
        shown = [f"“{a}” {int(r.before)}→{int(r.after)}" + (f" ({r.seeds}/{seeds} seeds)" if seeds > 1 else "")
                 for a, r in per.head(3).iterrows()]
        rows.append({"# Unknown": n, "mixture": mixture, "attractors (count before→after)": " · ".join(shown)})
    return pd.DataFrame(rows)


def _paired(b: _Builder) -> None:
    table = b.table("paired_tests", agg.paired_tests(b.store.root))
    if table.empty:
        return b.add_empty("paired", "Paired comparisons between mixtures",
                           "Needs at least two mixtures with the same n and seed.")
    b.add("paired", "Paired comparisons between mixtures", _html_table(table, index=False, digits=4),
          "Each mixture against the baseline mixture with the same n and seed, on the held-out facts both "
          "cells share (pairs pooled over seeds). diff = rate(mixture) − rate(baseline) with a paired "
          "bootstrap 95% CI; p = exact McNemar test on the facts where the two cells disagree.")


def _capacity(b: _Builder) -> None:
    """The capacity searches (``knowpack capacity``): facts held per arm, which limit bound it, in words."""
    from knowpack.capacity import artifacts as cap
    from knowpack.capacity import plots as cap_plots

    if not cap.CapacityResults.exists(b.store.root):
        return
    results = cap.CapacityResults.read(b.store.root)
    frame = b.table("capacity", cap.capacity_frame(results))
    shown = frame[[c for c in frame.columns if frame[c].notna().any()]]
    words = "".join(f"<li>{html.escape(cap.describe_arm(arm))}</li>" for arm in results.arms)
    figures = [cap_plots.capacity_vs_rank(frame, b.plot("capacity_vs_rank")),
               cap_plots.capacity_vs_parameters(frame, b.plot("capacity_vs_parameters")),
               cap_plots.bits_vs_parameters(frame, b.plot("capacity_bits")),
               cap_plots.bits_per_trial(results, b.plot("capacity_bits_per_trial"))]
    limits = [f"reliability lower bound ≥ {results.reliability:g}"] if results.reliability is not None else []
    limits += [f"{name.replace('_', ' ')} upper bound ≤ {budget:g}" for name, budget in results.budgets.items()]
    rerun = (f"<p>Rerun (finished trials are reused; the spec as run, with any command-line flags, is in "
             f"capacity.json): <code>{html.escape(reproduce_command(b.store))}</code></p>")
    body = (f"<ul>{words}</ul>" + rerun + "".join(_img(f, "capacity") for f in figures if f is not None)
            + _html_table(shown, index=False, digits=4))
    b.add("capacity", "Capacity: facts an adapter holds before a limit", body,
          f"Per method and rank, the largest n of new facts whose trial (every seed, each with its control "
          f"adapter) kept every limit: {'; '.join(limits)} ({results.confidence:.0%} t-interval over seeds; a "
          f"single seed is its own bound). Harms — {cap.harm_legend()}. Bits are likelihood bits (written on "
          f"trained facts, destroyed on held-out known facts): per trainable parameter at n found, and per "
          f"trial on the way there. {cap.REFERENCE_NOTE}")


def _base_probes(store: StudyStore) -> dict[str, Any]:
    """Per base-probe folder: model hash, probed facts and the category counts every cell starts from."""
    from knowpack.probe.artifacts import ProbeSummary, is_done

    out = {}
    for folder in sorted(p for p in (store.root / "base").glob("*") if is_done(p)):
        summary = ProbeSummary.read(folder)
        out[folder.name] = {"model_hash": summary.model_hash, "facts": summary.n, "seconds": summary.seconds,
                            "categories": summary.counts, "exemplars": summary.exemplars}
    return out


def _yaml(obj: Any) -> str:
    # Flow style for leaf lists keeps seeds and grid axes on one line each.
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, default_flow_style=None)


def _study(store: StudyStore) -> dict[str, Any]:
    record = store.record()
    return record.model_dump() if record is not None else {}


def _manifest(b: _Builder, results: pd.DataFrame) -> None:
    store = b.store
    study = _study(store)
    manifest = Manifest.read(store.root).model_dump() if Manifest.exists(store.root) else {}
    facts = sorted((store.root / "facts").glob("*.jsonl")) if (store.root / "facts").is_dir() else []
    info = {
        "study": study.get("name"), "spec file": study.get("source"), "overrides": study.get("overrides") or [],
        "seeds": sorted({int(s) for s in results["seed"].dropna()}) if "seed" in results else [],
        "facts files (sha256)": {f.name: sha256_file(f) for f in facts},
        "base probe": _base_probes(store),
        "python": manifest.get("python"), "platform": manifest.get("platform"),
        "packages": manifest.get("packages", {}), "study run started": manifest.get("created"),
    }
    columns = ("key", "unknown", "mixture", *agg.varying_facets(results), "seed", "state", "epochs", "wall_seconds")
    cells = results[[c for c in columns if c in results]]
    body = ("<pre>" + html.escape(_yaml({k: v for k, v in info.items() if v not in (None, [], {})})) + "</pre>"
            + "<h3>Cells (content-addressed folders under cells/)</h3>" + _html_table(cells, index=False, digits=0)
            + "<h3>Study spec (after overrides)</h3><pre>"
            + html.escape(_yaml(study.get("spec", {}))) + "</pre>")
    b.add("manifest", "Run manifest", body)


def _failed(b: _Builder, results: pd.DataFrame) -> None:
    bad = results[results["state"] != "done"]
    if bad.empty:
        return
    rows = []
    for _, r in bad.iterrows():
        status = store_status(b.store, r["key"])
        rows.append({"cell": r["key"], "config": f"{r['unknown']} UK + {r['mixture']} seed {r['seed']}",
                     "state": r["state"], "error": status.get("error", "")})
    b.add("incomplete", "Incomplete cells", _html_table(pd.DataFrame(rows), index=False),
          "These cells are left out of every table and figure; rerun `knowpack study run` to finish them.")


def store_status(store: StudyStore, key: str) -> dict[str, Any]:
    return store.cell(key).status().model_dump()


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>knowpack — {{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;margin:0;background:#f6f7f9}
header{background:#1f2a3c;color:#fff;padding:22px 40px}
header h1{margin:0 0 4px;font-size:24px} header p{margin:0;color:#c9d1de}
nav{background:#fff;border-bottom:1px solid #dde1e7;padding:8px 40px;position:sticky;top:0;z-index:2;
display:flex;flex-wrap:wrap;gap:4px 18px}
nav a{color:#2a5db0;text-decoration:none;font-size:14px;white-space:nowrap}
.tblwrap{overflow-x:auto}
main{max-width:1240px;margin:0 auto;padding:10px 40px 40px}
section{background:#fff;border:1px solid #e2e5ea;border-radius:8px;padding:18px 24px;margin:18px 0}
h2{margin:0 0 8px;font-size:20px} h3{font-size:16px;margin:18px 0 6px}
.note{color:#555;font-size:13.5px;margin:0 0 12px;max-width:1000px}
.note-box{background:#fff8e5;border:1px solid #f0d68a;padding:10px 14px;border-radius:6px}
.empty{color:#888;font-style:italic}
img{max-width:100%;height:auto;display:block;margin:8px 0}
table.tbl{border-collapse:collapse;font-size:13.5px;margin:6px 0 10px}
table.tbl th,table.tbl td{border-bottom:1px solid #e6e8ec;padding:4px 10px;text-align:right;white-space:nowrap}
table.tbl th{background:#f0f2f5;font-weight:600}
table.tbl tr:nth-child(even) td{background:#fafbfc}
pre{background:#f4f5f7;padding:10px 14px;border-radius:6px;overflow-x:auto;font-size:12.5px}
code{background:#f0f1f4;padding:1px 4px;border-radius:3px}
.kpi{display:flex;gap:14px;flex-wrap:wrap;margin-top:10px}
.kpi div{background:#2c3a52;border-radius:6px;padding:6px 12px;font-size:13px}
.kpi b{display:block;font-size:18px;color:#fff}
</style></head><body>
<header><h1>{{ title }}</h1><p>{{ subtitle }}</p>
<div class="kpi">{% for k, v in kpis %}<div><b>{{ v }}</b>{{ k }}</div>{% endfor %}</div></header>
<nav>{% for s in sections %}<a href="#{{ s.id }}">{{ s.title }}</a>{% endfor %}</nav>
<main>{% for s in sections %}
<section id="{{ s.id }}"><h2>{{ s.title }}</h2>{% if s.note %}<p class="note">{{ s.note }}</p>{% endif %}
{{ s.body|safe }}</section>{% endfor %}
</main></body></html>
"""


def build_report(study_dir: str | Path) -> Path:
    """Aggregate a study folder and write ``report.html`` (+ tables/*.csv, plots/*.png); returns its path."""
    store = StudyStore(study_dir)
    if not store.cells_dir.is_dir() or not store.cells():
        raise KnowpackError(f"{study_dir} holds no study cells",
                            hint="pass the `out` folder of a study (run `knowpack study run CONFIG` first)")
    results, summary = agg.write_results(store.root)
    curves = agg.curves_frame(store.root)
    b = _Builder(store)
    b.table("curves", curves)
    _capacity(b)
    _verdicts(b, study_verdicts(store, results, curves))
    # Cells that differ in model, early stopping or another varying axis get their own series label.
    shown = agg.with_series(summary)
    _reliability(b, shown, curves)
    _shifts(b, shown)
    _benchmarks(b, shown)
    _refusals(b, shown)
    _explanations(b)
    _transitions(b)
    _attractors(b)
    _paired(b)
    _failed(b, results)
    _manifest(b, results)
    study = _study(store)
    model = (study.get("identity") or {}).get("model", "?")
    if isinstance(model, list):  # grid.model: the models compared side by side
        from knowpack.study.grid import model_name

        model = " vs ".join(model_name(m) for m in model)
    done = int((results["state"] == "done").sum())
    kpis = [("cells done", f"{done}/{len(results)}"),
            ("seeds", str(results["seed"].nunique())),
            ("n values", ", ".join(str(n) for n in sorted(results["unknown"].unique()))),
            ("mixtures", str(results["mixture"].nunique()))]
    subtitle = (f"model {model} · generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC · "
                "reproducing Pletenev et al. 2025, “How Much Knowledge Can You Pack into a LoRA Adapter "
                "without Harming LLM?”")
    page = Environment(autoescape=True).from_string(_TEMPLATE).render(
        title=f"knowpack study: {study.get('name', store.root.name)}", subtitle=subtitle,
        kpis=kpis, sections=b.sections)
    write_text(store.report_html, page)
    return store.report_html
