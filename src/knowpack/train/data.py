"""Training examples: read train.jsonl, render the chat prompt, tokenize and mask the labels.

``loss="answer"``: only the assistant content ("Answer: {answer}") and the end-of-turn token that
closes it carry loss. ``loss="all"``: every real (non-pad) token carries loss, as in the paper's
released code. Padding is recognised by the attention mask, never by token id, because many
tokenizers reuse the end-of-turn token as pad token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from knowpack.errors import KnowpackError

IGNORE_INDEX = -100
TRAIN_FIELDS = ("id", "fact_id", "question", "answer", "role")


@dataclass(frozen=True)
class TrainExample:
    """One line of ``train.jsonl`` (written by ``knowpack mix``)."""

    id: str
    fact_id: str
    question: str
    answer: str
    role: str


def read_train_file(path: Path) -> list[TrainExample]:
    """Read ``train.jsonl``; every problem is reported with its line number."""
    path = Path(path)
    if not path.is_file():
        raise KnowpackError(f"training file not found: {path}",
                            hint="build one with `knowpack mix ... --out DIR` and pass DIR/train.jsonl")
    examples, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg})")
            continue
        missing = [f for f in ("question", "answer") if not str(row.get(f, "")).strip()]
        if missing:
            problems.append(f"line {number}: missing {', '.join(missing)}")
            continue
        examples.append(TrainExample(id=str(row.get("id", number)), fact_id=str(row.get("fact_id", row.get("id", number))),
                                     question=row["question"], answer=row["answer"], role=str(row.get("role", "unknown"))))
    if problems:
        raise KnowpackError(f"{path}: {len(problems)} bad line(s): " + "; ".join(problems[:5]),
                            hint="train.jsonl needs one JSON object per line with question and answer")
    if not examples:
        raise KnowpackError(f"{path} has no training examples", hint="check the mixture (knowpack mix)")
    return examples


def _messages(question: str, answer: str) -> list[dict]:
    from knowpack.probe.prompts import training_messages

    return training_messages(question, answer)


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    for token_id, token in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    return ids


def encode_example(tokenizer, question: str, answer: str, *, loss: str, max_length: int) -> dict:
    """Tokenize one chat-formatted zero-shot example and build its labels.

    Returns ``input_ids`` and ``labels`` (lists of ints); label ``-100`` = no loss. ``loss`` is
    "all" (every token), "answer" (the assistant turn "Answer: …" and its end-of-turn marker: what
    training optimises) or "answer_text" (only the tokens of the answer string itself: the
    "Answer:" prefix and the end-of-turn marker are the same for every fact, so a measure of what
    a model knows about one fact must not count them).
    """
    from knowpack.models.loading import render_chat

    messages = _messages(question, answer)
    text = render_chat(tokenizer, messages, add_generation_prompt=False)
    content = messages[-1]["content"]
    # The answer is the last occurrence of the assistant content in the rendered text.
    start = text.rfind(content)
    if start < 0:
        raise KnowpackError("the chat template does not reproduce the assistant answer verbatim",
                            hint="use a tokenizer whose chat template keeps message content unchanged")
    end = start + len(content)
    if loss == "answer_text" and content.endswith(answer):
        start = end - len(answer)  # the assistant content is "Answer: {answer}"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(enc["input_ids"])
    if len(input_ids) > max_length:
        raise KnowpackError(f"training example is {len(input_ids)} tokens, longer than max_length={max_length}: "
                            f"{question[:60]!r}",
                            hint="raise --max-length (truncating would cut the answer off)")
    if loss == "all":
        return {"input_ids": input_ids, "labels": list(input_ids)}
    specials = _special_ids(tokenizer)
    labels = [IGNORE_INDEX] * len(input_ids)
    last = None
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if b > start and a < end:
            labels[i] = input_ids[i]
            last = i
    if last is None:
        raise KnowpackError(f"no answer tokens found for {question[:60]!r}", hint="check the chat template")
    # The end-of-turn marker teaches the model to stop after the answer.
    if loss == "answer" and last + 1 < len(input_ids) and input_ids[last + 1] in specials:
        labels[last + 1] = input_ids[last + 1]
    return {"input_ids": input_ids, "labels": labels}


class Collator:
    """Right-pad a list of encoded examples into tensors (labels of padding are -100)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[row, :n] = torch.tensor(b["input_ids"])
            labels[row, :n] = torch.tensor(b["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
