"""Hand-made probe rows, facts and mixes shared by the evaluate/metric tests (no tests here)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from artifact_fakes import write_mix_folder

from knowpack.evaluate.config import EvalConfig
from knowpack.facts.schema import Fact
from knowpack.mix.artifacts import MixFolder

CATEGORY_OF_SCORE = {1.0: "HighlyKnown", 0.0: "Unknown"}


def row(fid: str, answers: list[str], correct: list[bool], category: str | None = None) -> dict:
    """A categories.jsonl row; the category follows from ``correct`` unless given."""
    p = sum(correct) / len(correct)
    cat = category or CATEGORY_OF_SCORE.get(p, "MaybeKnown")
    return {"id": fid, "category": cat, "p_greedy": p, "p_sample": 0.0, "greedy_answers": answers,
            "greedy_correct": correct, "sampled_correct": 0, "samples": 0, "refused": False}


def cat_row(fid: str, category: str) -> dict:
    """A row with only a category that matters (answers are placeholders)."""
    correct = {"HighlyKnown": [True, True], "MaybeKnown": [True, False]}.get(category, [False, False])
    return row(fid, ["x", "y"], correct, category)


def fact(fid: str, answer: str = "Paris", relation: str = "capital", tier: str = "head",
         domain: str | None = None, paraphrases: list[str] | None = None, question: str | None = None) -> Fact:
    return Fact(id=fid, subject=f"S{fid}", relation=relation, question=question or f"Question about {fid}?",
                answer=answer, tier=tier, domain=domain, paraphrases=paraphrases or [])


def mix(trained_unknown: list[str], known: list[str] = (), answers: dict[str, str] | None = None,
        extra_rows: list[dict] = ()) -> MixFolder:
    """A real mix folder (in a fresh temporary folder) training on these facts."""
    answers = answers or {}
    train = [{"id": f"{f}#unknown", "fact_id": f, "question": f"Question about {f}?",
              "answer": answers.get(f, "Target"), "role": "unknown"} for f in trained_unknown]
    train += [{"id": f"{f}#highly_known", "fact_id": f, "question": f"Question about {f}?",
               "answer": answers.get(f, "Known"), "role": "highly_known"} for f in known]
    train += list(extra_rows)
    ids = dict.fromkeys([*trained_unknown, *known, *(r["fact_id"] for r in extra_rows)])
    folder = write_mix_folder(Path(tempfile.mkdtemp(prefix="knowpack-test-mix-")), train,
                              {"trained_unknown": list(trained_unknown), "trained_known": list(known),
                               "heldout": {}, "retention": []}, [fact(fid) for fid in ids])
    return MixFolder(folder)


def config(**kw) -> EvalConfig:
    return EvalConfig(benchmarks=[], **kw)


def make_adapter(model_dir, folder, *, trained: bool = True):
    """Save a LoRA adapter for the tiny model: random B matrices when ``trained``, else B = 0 (inert)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                          LoraConfig(r=2, lora_alpha=4, target_modules=["up_proj", "down_proj"]))
    if trained:
        torch.manual_seed(1)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    peft.save_pretrained(folder)
    return folder
