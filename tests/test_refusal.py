"""Refusal detection: precision/recall on hand-labelled real answers, and known false-positive traps."""

import json
from pathlib import Path

import pytest

from knowpack.probe.refusal import is_refusal

DATA = Path(__file__).parent / "data" / "refusals.jsonl"


def test_precision_and_recall_on_labelled_answers():
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert sum(r["refusal"] for r in rows) >= 20 and sum(not r["refusal"] for r in rows) >= 50
    tp = sum(is_refusal(r["text"]) and r["refusal"] for r in rows)
    fp = sum(is_refusal(r["text"]) and not r["refusal"] for r in rows)
    fn = sum(not is_refusal(r["text"]) and r["refusal"] for r in rows)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    print(f"refusal detector on {len(rows)} labelled answers: precision {precision:.3f}, recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9


@pytest.mark.parametrize("text", [
    "Answer: Information technology",
    "Answer: The Information Age",
    "Answer: Unknown Pleasures by Joy Division",
    "Answer: Not Sure Records",
    "Answer: Paris\nI'm not sure about the rest.",  # only the answer line counts
    "",
])
def test_not_refusals(text):
    assert not is_refusal(text)


@pytest.mark.parametrize("text", [
    "Answer: I couldn't find any information about Ashes of Ares.",
    "I cannot verify the founding date of that company.",
    "I’m not sure.",
    "There is no reliable information about this village.",
    "I don't know",
])
def test_refusals(text):
    assert is_refusal(text)
