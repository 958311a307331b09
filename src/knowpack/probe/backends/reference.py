"""The naive reference the fast path is checked against: one ``model.generate`` per prompt."""

from __future__ import annotations

from typing import Any

import torch

from knowpack.probe.backends.hf import encode_prompts


def naive_generate(loaded, prompts: list[str], *, max_new_tokens: int = 32, samples: int = 0,
                   temperature: float = 0.5, top_k: int = 40) -> list[dict[str, Any]]:
    """Reference implementation: one ``model.generate`` call per prompt, EOS stop only.

    Used by tests and the benchmark as ground truth for the fast path; returns per prompt
    ``{"greedy": text, "samples": [texts]}`` (no batching, no early exit, no prefix reuse).
    """
    model, tokenizer = loaded.model, loaded.tokenizer
    out = []
    with torch.inference_mode():
        for ids in encode_prompts(tokenizer, prompts):
            input_ids = torch.tensor([ids], device=next(model.parameters()).device)
            mask = torch.ones_like(input_ids)
            g = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                               max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                               temperature=None, top_p=None, top_k=None)
            row: dict[str, Any] = {"greedy": tokenizer.decode(g[0, len(ids):], skip_special_tokens=True)}
            if samples:
                s = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True,
                                   temperature=temperature, top_k=top_k, top_p=None,
                                   num_return_sequences=samples, max_new_tokens=max_new_tokens,
                                   pad_token_id=tokenizer.pad_token_id)
                row["samples"] = [tokenizer.decode(x[len(ids):], skip_special_tokens=True) for x in s]
            out.append(row)
    return out
