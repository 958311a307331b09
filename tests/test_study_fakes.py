"""Fake stage outputs shared by the study and report tests (no model, no training).

The numbers are deterministic functions of the cell's axes, so two runs of the same study must
produce byte-identical results.csv files.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from knowpack.evaluate.artifacts import EvalMeta, EvalMetrics
from knowpack.io import write_json
from knowpack.manifest import stamp
from knowpack.mix.artifacts import EvalSets
from knowpack.mix.config import mixture_label
from knowpack.probe.slick import CATEGORIES as CATS
from knowpack.study.artifacts import CellRecord, CellStatus, StudyRecord

N_FACTS = 60


def fake_categories(n_facts: int = N_FACTS) -> list[dict]:
    """Base-probe categories: a fixed mix of the four categories."""
    return [{"id": f"f{i:03d}", "category": CATS[i % 4]} for i in range(n_facts)]


def fake_after(base: str, fid: str, n: int, extra: int, seed: int) -> str:
    """Category after training: more Unknown facts → more flips, seeded per (cell, fact)."""
    rng = random.Random(f"{fid}-{n}-{extra}-{seed}")
    if rng.random() < min(0.6, 0.05 + 0.004 * n + 0.01 * extra):
        return rng.choice(CATS)
    return base


def write_fake_eval(out_dir: Path, *, n: int, extra: int, kind: str, seed: int, trained: list[str],
                    categories: list[dict], benchmarks: bool | str = True) -> dict:
    """metrics.json / per_fact.parquet / transitions.csv in the evaluate stage's formats.

    ``benchmarks``: True = MMLU results, False = not configured, a string = skipped for that reason.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    after = {c["id"]: fake_after(c["category"], c["id"], n, extra, seed) for c in categories}
    held = [c for c in categories if c["id"] not in trained]
    pos = {("Unknown", "MaybeKnown"), ("Unknown", "HighlyKnown"), ("MaybeKnown", "HighlyKnown"),
           ("WeaklyKnown", "MaybeKnown"), ("WeaklyKnown", "HighlyKnown")}
    neg = {("HighlyKnown", "MaybeKnown"), ("HighlyKnown", "Unknown"), ("MaybeKnown", "Unknown"),
           ("HighlyKnown", "WeaklyKnown"), ("MaybeKnown", "WeaklyKnown")}
    pairs = [(c["category"], after[c["id"]]) for c in held]
    counts = {a: {b: sum(p == (a, b) for p in pairs) for b in CATS} for a in CATS}
    reliability = round(min(1.0, 0.5 + 0.1 * extra / max(1, extra) + seed % 3 * 0.05), 4)
    metrics = {
        "reliability": {"reliability": reliability, "n_facts": len(trained)},
        "shifts": {"untrained": {
            "all": {"n": len(held), "positive_share": sum(p in pos for p in pairs) / len(held),
                    "negative_share": sum(p in neg for p in pairs) / len(held), "counts": counts},
            "paired_floor": {"positive_share": 0.0, "negative_share": 0.01},
            "prompt_sensitivity": {"positive_share": 0.02, "negative_share": 0.03}}},
        "refusals": {"all": {"base": {"fact_rate": 0.15}, "adapted": {"fact_rate": round(0.1 / n, 4)}}},
        "collapse": {"base": {"unique_answers": 200}, "adapted": {"unique_answers": 200 - n - extra},
                     "attractors": [{"answer": "paris", "count_before": 1, "count_after": 9 + n,
                                     "share_after": 0.1, "p_adjusted": 0.001, "training_target": False}]},
        "explanations": {
            "Unknown→HighlyKnown": {"n": 4, "counts": {}, "shares": {"non_refusal": 0.25, "explosion": 0.0,
                                                                   "target": 0.5, "domain": 0.5, "explained": 0.75}},
            "HighlyKnown→Unknown": {"n": 2, "counts": {}, "shares": {"explosion": 0.5, "target": 0.0,
                                                                   "domain": 0.0, "explained": 0.5}}},
        "benchmarks": ({"mmlu": {"base": {"acc": 0.30}, "adapted": {"acc": round(0.30 - 0.001 * n, 4)}}}
                       if benchmarks is True else {"status": "not configured"} if not benchmarks
                       else {"skipped": benchmarks}),
    }
    meta = EvalMeta(model_hash="fake", adapter="adapter", adapter_hash="fake", mix="mix", n_facts=len(categories),
                    n_trained_facts=len(trained), probe_config={})
    EvalMetrics(meta=meta, **metrics).write(out_dir)
    pd.DataFrame({"id": [c["id"] for c in categories],
                  "trained": [c["id"] in trained for c in categories],
                  "base_category": [c["category"] for c in categories],
                  "adapted_category": [after[c["id"]] for c in categories]}).to_parquet(out_dir / "per_fact.parquet")
    rows = [{"comparison": "base→adapted", "group": "untrained", "subgroup": "all", "from": a, "to": b,
             "count": counts[a][b], "share": counts[a][b] / len(held)} for a in CATS for b in CATS]
    rows += [{"comparison": "base→base(other prompts)", "group": "untrained", "subgroup": "all", "from": a, "to": b,
              "count": int(a == b) * 10, "share": None} for a in CATS for b in CATS]
    pd.DataFrame(rows).to_csv(out_dir / "transitions.csv", index=False)
    stamp(out_dir, stage="evaluate", config={}, key="fake", inputs={"model": "fake"})
    return metrics


def write_fake_curve(train_dir: Path, *, epochs: int, extra: int, seed: int) -> None:
    """curve.csv rising towards 1 (faster with more extra items); an adapter folder beside it."""
    rows = [{"epoch": e, "loss": round(2.0 / e, 4),
             "reliability": round(min(1.0, e * (0.2 + 0.05 * extra) + 0.01 * seed % 3), 4),
             "retention": 0.9, "seconds": 1.0} for e in range(1, epochs + 1)]
    (train_dir / "adapter").mkdir(parents=True, exist_ok=True)
    (train_dir / "adapter" / "adapter_config.json").write_text("{}")
    pd.DataFrame(rows).to_csv(train_dir / "curve.csv", index=False)


def write_fake_training(train_dir: Path, *, epochs: int, extra: int, seed: int) -> None:
    """A finished training folder: curve, adapter config and the summary written last."""
    write_fake_curve(train_dir, epochs=epochs, extra=extra, seed=seed)
    write_json(train_dir / "train_summary.json", {"epochs_run": epochs})


def make_fake_study(root: Path, *, ns=(10, 50), mixtures=((0, "paraphrase"), (10, "paraphrase")),
                    seeds=(1, 2), benchmarks: bool = True, failed: int = 0,
                    control_benchmarks: bool = True) -> Path:
    """A study folder (study.json + cells/*) as `study run` leaves it, written through its artifact classes."""
    categories = fake_categories()
    keys = []
    for n in ns:
        for extra, kind in mixtures:
            for seed in seeds:
                key = f"c{n}-{extra}-{kind[:4]}-{seed}"
                keys.append(key)
                cell = root / "cells" / key
                trained = [c["id"] for c in categories if c["category"] == "Unknown"][: max(1, n // 10)]
                CellRecord(key=key, eval_key="e1", mixture=mixture_label(extra, kind),
                           axes={"unknown": n, "extra": extra, "kind": kind, "seed": seed}, mix={}, train={}
                           ).write(cell)
                EvalSets(trained_unknown=trained).write(cell / "mix")
                if failed and len(keys) <= failed:
                    CellStatus(state="failed", error="RuntimeError: boom").write(cell)
                    continue
                write_fake_training(cell / "train", epochs=3, extra=extra, seed=seed)
                write_fake_eval(cell / "eval" / "e1", n=n, extra=extra, kind=kind, seed=seed, trained=trained,
                                categories=categories,
                                benchmarks=benchmarks if control_benchmarks or kind != "control"
                                else "control adapter (benchmarks_on_controls: false)")
                CellStatus(state="done", timings={"mix": 0.1, "train": 2.0, "evaluate": 1.0}, seconds=3.1).write(cell)
    from knowpack.report.claims_schema import paper_claims

    StudyRecord(name="fake", identity={"model": "tiny"}, cells=keys, claims_source="paper",
                claims=[c.model_dump(mode="json", by_alias=True, exclude_unset=True) for c in paper_claims()],
                spec={"name": "fake", "grid": {"unknown": list(ns), "seed": list(seeds)}}).write(root)
    return root
