"""Bits of knowledge an adapter wrote and destroyed, per fact and per trainable parameter.

Two measures, each split into *written* (on the trained facts, signed: a trained fact that got
worse subtracts) and *destroyed* (on held-out known facts, losses only: a held-out fact that got
better does not pay for one that got worse):

* likelihood bits — log2 p_adapter(a|q) − log2 p_base(a|q), summed over the tokens of the
  answer a, teacher-forced in the training prompt format. The format's own tokens (the "Answer:"
  prefix, the end-of-turn marker) are not counted: they say nothing about one fact.
* exact-match bits — a fact turned from wrong to right earns log2(1/π_r(a)), π_r(a) being the
  share of the facts of its relation whose normalized answer is a. Guessing a relation's most
  common answer is cheap, so an adapter whose answers collapse onto one popular answer earns
  little; a fact turned from right to wrong costs the same amount.

Capacity is compared with the 2 bits per parameter that Allen-Zhu & Li (Physics of Language
Models 3.3, arXiv 2404.05405) measured for knowledge stored in fully trained language models.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from knowpack.errors import KnowpackError

logger = logging.getLogger(__name__)

ALLEN_ZHU_LI_BITS_PER_PARAMETER = 2.0
# Bumped whenever what answer_log2probs measures changes (prompt format, counted tokens), so cached
# base-model values of an older definition are never reused.
ANSWER_LOG2P_VERSION = 2


# ---------------------------------------------------------------- teacher-forced log-probabilities

def _encode_all(tokenizer, items: Sequence[tuple[str, str, str]], max_length: int) -> list[tuple[str, dict]]:
    from knowpack.train.data import encode_example

    seen: set[str] = set()
    encoded = []
    for fact_id, question, answer in items:
        if fact_id in seen:
            raise KnowpackError(f"fact id {fact_id!r} appears twice in the log-probability request",
                                hint="pass each fact once")
        seen.add(fact_id)
        encoded.append((fact_id, encode_example(tokenizer, question, answer, loss="answer_text",
                                                          max_length=max_length)))
    return encoded


def _batch_log2probs(model, batch: dict) -> list[list[float]]:
    """Per-row log2-probabilities of the labelled tokens of one right-padded batch."""
    import torch

    from knowpack.train.data import IGNORE_INDEX

    labels = batch["labels"]
    # Position t predicts token t + 1: keep the positions whose next token is labelled.
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    device = next(model.parameters()).device
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                   logits_to_keep=keep.to(device)).logits
    if logits.ndim == 3:
        # A model that ignores a boolean logits_to_keep returns every position; select them here.
        logits = logits[keep.to(logits.device)]
    targets = labels[:, 1:][keep[:, :-1]].to(logits.device)
    picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None])[:, 0] / math.log(2)
    counts = keep.sum(dim=1).tolist()
    return [row.tolist() for row in torch.split(picked.cpu(), counts)]


def answer_log2probs(model, tokenizer, items: Sequence[tuple[str, str, str]], *, max_length: int,
                     batch_size: int = 8) -> dict[str, list[float]]:
    """Teacher-forced log2 p(token) of every answer token, per fact id.

    ``items`` are ``(fact_id, question, answer)``; each is rendered exactly as a training example
    and teacher-forced, but only the tokens of the answer string count: the "Answer:" prefix and
    the end-of-turn marker also carry training loss, yet they are the same for every fact, and an
    adapter that learned the format would otherwise gain bits on every held-out fact it forgot
    (measured: "destroyed" stayed 0.0 on every capacity trial when they counted). Batches are
    right-padded (real tokens keep their positions and never attend to padding, so values do not
    depend on the batch) and only the labelled positions go through the LM head, which keeps the
    vocabulary-sized logits small. Works for a plain model and a PeftModel alike; dropout is off
    while measuring.
    """
    import torch

    from knowpack.train.data import Collator

    if batch_size < 1:
        raise KnowpackError(f"batch_size must be at least 1, got {batch_size}", hint="pass --batch-size 1 or more")
    encoded = _encode_all(tokenizer, items, max_length)
    # Similar lengths together waste less padding; ties keep input order so runs are reproducible.
    encoded.sort(key=lambda pair: len(pair[1]["input_ids"]))
    collate = Collator(tokenizer.pad_token_id)
    was_training = model.training
    model.eval()
    result: dict[str, list[float]] = {}
    try:
        with torch.inference_mode():
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start:start + batch_size]
                rows = _batch_log2probs(model, collate([example for _, example in chunk]))
                result.update((fact_id, row) for (fact_id, _), row in zip(chunk, rows))
    finally:
        model.train(was_training)
    return {fact_id: result[fact_id] for fact_id, _, _ in items}


def base_and_adapted_log2probs(peft_model, tokenizer, items: Sequence[tuple[str, str, str]], *, max_length: int,
                               batch_size: int = 8) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(base, adapted) answer log2-probabilities from one PeftModel, the base with its adapter disabled.

    One model in memory serves both sides, and both see identical token sequences.
    """
    if not hasattr(peft_model, "disable_adapter"):
        raise KnowpackError("base and adapted log-probabilities need a model carrying a PEFT adapter",
                            hint="load the adapter onto the base model first (knowpack.models.adapters.attach_adapter)")
    adapted = answer_log2probs(peft_model, tokenizer, items, max_length=max_length, batch_size=batch_size)
    with peft_model.disable_adapter():
        base = answer_log2probs(peft_model, tokenizer, items, max_length=max_length, batch_size=batch_size)
    return base, adapted


# ---------------------------------------------------------------- the two measures

class BitsTotals(BaseModel):
    """Bits one measure counts for one adapter."""

    written: float  # signed sum over the trained facts
    destroyed: float  # losses only, over the held-out known facts (>= 0)
    net: float  # written - destroyed
    trained_facts: int
    heldout_facts: int


def _disjoint(trained_ids: Iterable[str], heldout_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    trained, heldout = list(dict.fromkeys(trained_ids)), list(dict.fromkeys(heldout_ids))
    both = sorted(set(trained) & set(heldout))
    if both:
        raise KnowpackError(f"{len(both)} fact(s) are both trained and held out: {', '.join(both[:5])}",
                            hint="held-out facts must not be in the training mixture")
    return trained, heldout


def _missing(ids: Iterable[str], *tables: Mapping[str, Any], what: str) -> None:
    absent = [fid for fid in ids if any(fid not in table for table in tables)]
    if absent:
        raise KnowpackError(f"{what} missing for {len(absent)} fact(s): {', '.join(absent[:5])}",
                            hint="measure every trained and held-out fact before and after training")


def _totals(deltas: Mapping[str, float], trained: list[str], heldout: list[str]) -> BitsTotals:
    written = sum(deltas[f] for f in trained)
    destroyed = sum(max(0.0, -deltas[f]) for f in heldout)
    return BitsTotals(written=written, destroyed=destroyed, net=written - destroyed,
                      trained_facts=len(trained), heldout_facts=len(heldout))


def likelihood_bits(base: Mapping[str, Sequence[float]], adapted: Mapping[str, Sequence[float]],
                    trained_ids: Iterable[str], heldout_ids: Iterable[str]
                    ) -> tuple[BitsTotals, dict[str, dict[str, Any]]]:
    """Likelihood bits from per-token answer log2-probabilities of the base and the adapted model."""
    trained, heldout = _disjoint(trained_ids, heldout_ids)
    _missing(trained + heldout, base, adapted, what="answer log-probabilities")
    deltas, per_fact = {}, {}
    for fid in trained + heldout:
        if len(base[fid]) != len(adapted[fid]):
            raise KnowpackError(f"fact {fid!r}: {len(base[fid])} base answer tokens but {len(adapted[fid])} adapted",
                                hint="compute both sides with the same tokenizer and max_length")
        before, after = float(sum(base[fid])), float(sum(adapted[fid]))
        deltas[fid] = after - before
        per_fact[fid] = {"bits_answer_tokens": len(base[fid]), "bits_log2p_base": before,
                         "bits_log2p_adapted": after, "bits_likelihood": after - before}
    return _totals(deltas, trained, heldout), per_fact


def _answer_key(answer: str) -> str:
    from knowpack.probe.matching import normalize

    # An answer made only of punctuation normalizes to ""; its raw form still tells answers apart.
    return normalize(answer) or answer.strip().casefold()


def answer_rarity_bits(facts: Iterable[Any]) -> dict[str, float]:
    """log2(1/π_r(a)) per fact: how surprising its answer is among the answers of its relation.

    ``facts`` are the fact pool (objects with ``id``, ``relation`` and ``answer``); π_r(a) is
    counted on normalized answers, so "Paris" and "paris." are the same answer.
    """
    keyed = [(fact.id, fact.relation, _answer_key(fact.answer)) for fact in facts]
    per_relation: dict[str, Counter] = defaultdict(Counter)
    for _, relation, key in keyed:
        per_relation[relation][key] += 1
    totals = {relation: sum(counts.values()) for relation, counts in per_relation.items()}
    return {fid: math.log2(totals[relation] / per_relation[relation][key]) for fid, relation, key in keyed}


def exact_match_bits(rarity: Mapping[str, float], before: Mapping[str, bool], after: Mapping[str, bool],
                     trained_ids: Iterable[str], heldout_ids: Iterable[str]
                     ) -> tuple[BitsTotals, dict[str, dict[str, Any]]]:
    """Exact-match bits from correctness before and after training (see the module docstring)."""
    trained, heldout = _disjoint(trained_ids, heldout_ids)
    _missing(trained + heldout, rarity, before, after, what="answer rarity or correctness")
    deltas, per_fact = {}, {}
    for fid in trained + heldout:
        change = int(bool(after[fid])) - int(bool(before[fid]))  # +1 gained, -1 lost, 0 unchanged
        deltas[fid] = change * rarity[fid]
        per_fact[fid] = {"bits_answer_rarity": rarity[fid], "bits_exact_match": deltas[fid]}
    return _totals(deltas, trained, heldout), per_fact


# ---------------------------------------------------------------- per adapter

class AdapterBits(BaseModel):
    """Knowledge written and destroyed by one adapter, per trainable parameter."""

    trainable_parameters: int
    likelihood: BitsTotals
    exact_match: BitsTotals
    likelihood_bits_per_parameter: float  # net likelihood bits / trainable parameters
    exact_match_bits_per_parameter: float  # net exact-match bits / trainable parameters
    facts_learned: int  # trained facts wrong before and right after
    facts_lost: int  # held-out facts right before and wrong after
    facts_per_parameter: float  # facts_learned / trainable parameters
    reference_bits_per_parameter: float = ALLEN_ZHU_LI_BITS_PER_PARAMETER
    reference: str = "Allen-Zhu & Li 2024, Physics of Language Models 3.3 (arXiv 2404.05405)"


@dataclass(frozen=True)
class BitsMeasurement:
    """The adapter's summary plus per-fact columns (fact id -> columns) for per_fact.parquet."""

    summary: AdapterBits
    per_fact: dict[str, dict[str, Any]]


def measure_bits(*, base_log2p: Mapping[str, Sequence[float]], adapted_log2p: Mapping[str, Sequence[float]],
                 rarity: Mapping[str, float], correct_before: Mapping[str, bool], correct_after: Mapping[str, bool],
                 trained_ids: Iterable[str], heldout_ids: Iterable[str], trainable_parameters: int) -> BitsMeasurement:
    """Both measures for one adapter, normalised by its trainable parameters.

    ``heldout_ids`` should be the held-out facts the base model knew: only they can be destroyed.
    """
    if trainable_parameters < 1:
        raise KnowpackError(f"trainable_parameters must be positive, got {trainable_parameters}",
                            hint="pass the trainable parameter count from the adapter's training manifest")
    trained, heldout = _disjoint(trained_ids, heldout_ids)
    lik, lik_rows = likelihood_bits(base_log2p, adapted_log2p, trained, heldout)
    em, em_rows = exact_match_bits(rarity, correct_before, correct_after, trained, heldout)
    learned = sum(1 for f in trained if correct_after[f] and not correct_before[f])
    lost = sum(1 for f in heldout if correct_before[f] and not correct_after[f])
    summary = AdapterBits(
        trainable_parameters=trainable_parameters, likelihood=lik, exact_match=em,
        likelihood_bits_per_parameter=lik.net / trainable_parameters,
        exact_match_bits_per_parameter=em.net / trainable_parameters,
        facts_learned=learned, facts_lost=lost, facts_per_parameter=learned / trainable_parameters)
    role = {**{f: "trained" for f in trained}, **{f: "heldout" for f in heldout}}
    per_fact = {f: {"bits_set": role[f], **lik_rows[f], **em_rows[f]} for f in trained + heldout}
    return BitsMeasurement(summary=summary, per_fact=per_fact)
