"""Prompts that do not fit the model's context are refused before any work, never a crash mid-run.

A 100,000-character question would make a batched prefill try to allocate hundreds of GB; a prompt
just longer than the context window would make the model attend past its position table. The
check is cheap: every question is tokenized once and the few facts whose bound is over the limit
are rendered exactly, so only real offenders are reported.
"""

from __future__ import annotations

from typing import Any

from knowpack.errors import KnowpackError
from knowpack.probe.config import ProbeConfig
from knowpack.probe.prompts import fewshot_prompt
from knowpack.probe.shots import ShotPlan

_TEMPLATE_TOKENS = 32  # chat-template tokens around one question and its generation prompt (generous)


def context_length(backend: Any) -> int | None:
    """The model's context window in tokens (None when the backend does not say)."""
    limit = getattr(backend, "context_length", None)
    if isinstance(limit, int) and limit > 0:
        return limit
    config = getattr(getattr(backend, "model", None), "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def _token_count(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def check_prompt_lengths(plan: ShotPlan, config: ProbeConfig, backend: Any) -> None:
    """Raise one clear error listing the facts whose few-shot prompt + answer budget exceeds the context."""
    tokenizer, limit = getattr(backend, "tokenizer", None), context_length(backend)
    if tokenizer is None or limit is None or not plan.facts:
        return
    if plan.shot_sets is not None:
        prefix = max(_token_count(tokenizer, [fewshot_prompt(backend, plan.facts[0], shots)[1] or ""
                                              for shots in plan.shot_sets]))
    else:  # same-relation shots: bound each shot by the longest question and answer of the pool
        pool = [f for facts in (plan.pool_by_relation or {}).values() for f in facts]
        longest = max(_token_count(tokenizer, [f.question for f in pool] + [f.answer for f in pool]), default=0)
        prefix = config.shots * (2 * longest + _TEMPLATE_TOKENS)
    budget = limit - config.max_new_tokens
    questions = _token_count(tokenizer, [f.question for f in plan.facts])
    suspects = [f for f, n in zip(plan.facts, questions) if n + prefix + _TEMPLATE_TOKENS > budget]
    too_long = []
    for fact in suspects:  # the bound may overestimate: render the real prompts of these few
        length = max(_token_count(tokenizer, [fewshot_prompt(backend, fact, shots)[0]
                                              for shots in plan.shots(fact, config)]))
        if length > budget:
            too_long.append((fact.id, length))
    if too_long:
        examples = ", ".join(f"{fid} ({n} tokens)" for fid, n in too_long[:5])
        raise KnowpackError(
            f"{len(too_long)} fact(s) have few-shot prompts longer than the model's context of {limit} tokens "
            f"minus {config.max_new_tokens} answer tokens: {examples}",
            hint="shorten or drop those questions (`knowpack facts validate` reports overlong fields), "
                 "or lower --shots")
