"""Report: aggregation of a hand-made study folder into results/summary CSVs and report.html."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from test_study_fakes import make_fake_study

from knowpack.errors import KnowpackError
from knowpack.report.aggregate import paired_tests, write_results
from knowpack.report.html import build_report, fmt_ci

REQUIRED = ["unknown", "extra", "kind", "seed", "reliability", "positive_shift", "negative_shift",
            "prompt_sensitivity_negative", "refusal_rate_base", "refusal_rate", "unique_answers_base",
            "unique_answers", "mmlu_base", "mmlu"]


def test_results_and_summary(tmp_path):
    study = make_fake_study(tmp_path / "s")
    results, summary = write_results(study)
    on_disk = pd.read_csv(study / "results.csv")
    assert set(REQUIRED) <= set(on_disk.columns)
    assert len(on_disk) == 2 * 2 * 2  # n × mixtures × seeds: one row per cell and seed
    assert on_disk["epochs"].eq(3).all()
    assert "truthfulqa_mc1" not in on_disk  # not configured → column left out, not NaN
    assert len(summary) == 4 and summary["n_seeds"].eq(2).all()
    # mean ± CI of two seeds recomputed by hand
    row = summary[(summary["unknown"] == 10) & (summary["mixture"] == "w/o")].iloc[0]
    vals = results[(results["unknown"] == 10) & (results["mixture"] == "w/o")]["reliability"]
    assert row["reliability_mean"] == pytest.approx(vals.mean())
    half = 12.706204736 * vals.std(ddof=1) / math.sqrt(2)
    assert row["reliability_ci_high"] - row["reliability_mean"] == pytest.approx(half, rel=1e-6)


def test_paired_tests_against_baseline(tmp_path):
    study = make_fake_study(tmp_path / "s")
    table = paired_tests(study, n_boot=200)
    assert set(table["mixture"]) == {"10 Para"} and set(table["baseline"]) == {"w/o"}
    assert set(table["shift"]) == {"positive", "negative"}
    assert (table["pairs"] > 0).all() and table["p_mcnemar"].between(0, 1).all()
    r = table.iloc[0]
    assert r["diff"] == pytest.approx(r["rate"] - r["rate_baseline"])


def test_report_html_sections_and_images(tmp_path):
    study = make_fake_study(tmp_path / "s")
    path = build_report(study)
    page = path.read_text()
    for title in ("Reliability vs epoch", "Knowledge shifts", "Benchmarks", "Refusals and answer diversity",
                  "Why facts shifted", "Category transition matrices", "Attractor answers",
                  "Paired comparisons", "Run manifest"):
        assert title in page, title
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 4  # reliability, shifts, benchmarks, transitions
    assert "src=\"http" not in page and "<script src" not in page  # self-contained
    for name in ("reliability", "shifts", "benchmarks", "refusals_unique", "explanations", "transitions",
                 "attractors", "paired_tests"):
        assert (study / "tables" / f"{name}.csv").is_file(), name
    assert {p.name for p in (study / "plots").glob("*.png")} >= {
        "reliability_vs_epoch.png", "shifts_vs_n.png", "benchmarks_vs_n.png", "transitions.png"}


def test_report_without_benchmarks_explains_how_to_configure(tmp_path):
    study = make_fake_study(tmp_path / "s", ns=(10,), mixtures=((0, "paraphrase"),), benchmarks=False, failed=1)
    page = build_report(study).read_text()
    assert "not configured" in page and "eval.truthfulqa_path" in page
    assert "Incomplete cells" in page and "RuntimeError: boom" in page


def test_report_on_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(KnowpackError, match="holds no study cells"):
        build_report(tmp_path)


def test_fmt_ci():
    assert fmt_ci(0.5, 0.4, 0.6) == "0.500 ± 0.100"
    assert fmt_ci(0.5, math.nan, math.nan) == "0.500"
    assert fmt_ci(math.nan, math.nan, math.nan) == "—"


def test_report_when_no_cell_finished(tmp_path):
    study = make_fake_study(tmp_path / "s", ns=(10,), mixtures=((0, "paraphrase"),), failed=2)
    page = build_report(study).read_text()
    assert "No finished cells yet" in page and "Incomplete cells" in page
    assert pd.read_csv(study / "results.csv")["state"].eq("failed").all()


def test_report_opens_with_the_verdicts_and_writes_findings(tmp_path):
    study = make_fake_study(tmp_path / "s")
    html = build_report(study).read_text()
    assert html.index('id="verdicts"') < html.index('id="reliability"')
    findings = (study / "findings.md").read_text()
    for claim in ("C1", "C2", "C3", "C4", "C5", "C6"):
        assert f"| **{claim}**" in findings
    # Two seeds cannot decide a claim whose rule asks for three: said, not guessed.
    assert "not decidable" in findings
    assert "knowpack study run" in findings and "knowpack report" in findings
    table = pd.read_csv(study / "tables" / "verdicts.csv")
    assert set(table["verdict"]) <= {"supported", "contradicted", "undecided"}
    # Every part of every claim, not only the deciding one, in a table and on the page.
    parts = pd.read_csv(study / "tables" / "verdict_parts.csv")
    assert set(parts["claim"]) == set(table["claim"]) and len(parts) >= len(table)
    assert "Every part of every claim" in html


def test_reliability_plot_leaves_out_mixtures_without_a_curve(tmp_path, monkeypatch):
    """A control adapter trains no Unknown fact: no reliability curve, so no legend entry either."""
    import pandas as pd

    from knowpack.report import plots

    curves = pd.DataFrame([{"unknown": 4, "mixture": m, "epoch": e, "reliability": r}
                           for m, r in (("w/o", 0.5), ("1 HK", 0.7), ("Ctrl", float("nan"))) for e in (1, 2)])
    saved = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.setdefault("fig", fig) and path)
    plots.reliability_curves(curves, tmp_path / "r.png")
    [legend] = saved["fig"].legends
    assert [t.get_text() for t in legend.get_texts()] == ["w/o", "1 HK"]


def test_report_with_control_cells_that_skipped_the_benchmarks(tmp_path):
    """benchmarks_on_controls: false leaves the control cells without MMLU: NaN, not an error."""
    study = make_fake_study(tmp_path / "s", mixtures=((0, "paraphrase"), (10, "paraphrase"), (0, "control")),
                            control_benchmarks=False)
    results, _ = write_results(study)
    control = results[results["kind"] == "control"]
    assert len(control) == 4 and control["mmlu"].isna().all()
    assert results.loc[results["kind"] != "control", "mmlu"].notna().all()
    page = build_report(study).read_text()
    assert "Benchmarks" in page and (study / "plots" / "benchmarks_vs_n.png").is_file()
