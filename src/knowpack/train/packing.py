"""Packed training batches: the shared prompt once, no padding, logits only where the loss looks.

Every training example starts with the same chat prompt (system message, "Question: " …), and
with loss on the answer only, a handful of its ~40 tokens carry a label. A right-padded batch
recomputes the shared prompt in every row, computes padding, and projects every position onto the
full vocabulary. A packed batch is one row instead:

    [shared prefix][own tokens of example 1][own tokens of example 2] …

with a block attention mask (each example's tokens see the prefix and their own earlier tokens,
never another example), position ids that continue the prefix for every example (so each token
sits at the position it has in its own sequence), and the LM head applied only at the positions
whose next token is labelled (``logits_to_keep``). Every labelled token gets exactly the hidden
state it gets in the padded batch, so the loss is the same mean over the same tokens; floating
point sums run in a different order, and LoRA dropout draws one mask for the shared prefix
instead of one per example.

:func:`packing_supported` checks once per run, on a real batch, that this model's forward gives
the padded batch's loss; models that do not (attention implementations that ignore a custom
mask, heads with extra logit processing) train with padded batches instead.
"""

from __future__ import annotations

import inspect
import logging

import torch

from knowpack.models.adapters import causal_lm
from knowpack.train.data import IGNORE_INDEX, Collator

logger = logging.getLogger(__name__)

# Attention implementations that apply a custom 4D mask as given.
_MASKED_ATTENTION = {"sdpa": torch.bool, "eager": None}


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    shortest = min(len(r) for r in rows)
    length = 0
    while length < shortest - 1 and all(r[length] == rows[0][length] for r in rows):
        length += 1
    return length


class PackingCollator:
    """Pack encoded examples (``input_ids`` + ``labels``) into one row with a shared prefix."""

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        ids = [b["input_ids"] for b in batch]
        prefix = shared_prefix_length(ids)
        tokens, positions, segments = list(ids[0][:prefix]), list(range(prefix)), [0] * prefix
        scored, targets = [], []
        for number, (row, labels) in enumerate(((b["input_ids"], b["labels"]) for b in batch), start=1):
            start = len(tokens)  # where this example's own tokens begin in the packed row
            tokens += row[prefix:]
            positions += range(prefix, len(row))
            segments += [number] * (len(row) - prefix)
            for j in range(1, len(row)):
                if labels[j] != IGNORE_INDEX:  # token j is predicted from the hidden state at j - 1
                    scored.append(j - 1 if j - 1 < prefix else start + j - 1 - prefix)
                    targets.append(labels[j])
        pos, seg = torch.tensor(positions), torch.tensor(segments)
        # Key k is visible from query q when it is not later in q's own sequence and belongs to the
        # shared prefix or to q's own example.
        visible = (pos[None, :] <= pos[:, None]) & ((seg[None, :] == 0) | (seg[None, :] == seg[:, None]))
        return {"input_ids": torch.tensor([tokens]), "position_ids": pos[None, :],
                "attention_mask": visible[None, None], "score_index": torch.tensor(scored, dtype=torch.long),
                "targets": torch.tensor(targets, dtype=torch.long)}


class CausalLMLoss(torch.nn.Module):
    """Mean next-token loss of a batch, padded (``labels``) or packed (``score_index`` + ``targets``).

    A module of its own so that DDP wraps it whole: its forward is what runs under DDP's hooks,
    whichever of the two batch forms the run uses.
    """

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model

    def forward(self, **batch) -> torch.Tensor:
        if "score_index" not in batch:
            return self.peft_model(**batch).loss
        mask = batch["attention_mask"]
        config = causal_lm(self.peft_model).config
        if _MASKED_ATTENTION.get(config._attn_implementation) is None:  # eager adds the mask to the scores
            dtype = causal_lm(self.peft_model).dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        logits = self.peft_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                 attention_mask=mask, logits_to_keep=batch["score_index"], use_cache=False).logits
        return torch.nn.functional.cross_entropy(logits[0].float(), batch["targets"])


def packing_supported(peft_model, sample: list[dict], pad_token_id: int) -> bool:
    """Whether this model trains correctly on packed batches: its loss on ``sample`` packed equals
    the padded batch's loss (dropout off, no gradient, no random draws: the run is unchanged)."""
    model = causal_lm(peft_model)
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in _MASKED_ATTENTION or "logits_to_keep" not in inspect.signature(model.forward).parameters:
        logger.info("padded batches: %s attention or no logits_to_keep", implementation)
        return False
    loss = CausalLMLoss(peft_model)
    was_training = peft_model.training
    peft_model.eval()
    try:
        with torch.no_grad():
            padded = loss(**Collator(pad_token_id)(sample))
            packed = loss(**PackingCollator()(sample))
    finally:
        peft_model.train(was_training)
    same = bool(torch.isclose(padded, packed, rtol=1e-4, atol=1e-5))
    if not same:
        logger.warning("this model's loss on packed batches differs from padded batches (%.6f vs %.6f); "
                       "training with padded batches", float(packed), float(padded))
    return same
