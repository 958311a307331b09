"""The transformers backend: a scheduler (policy, no tensors) and a model runner (tensors, no policy).

``HFBackend.steps`` is the whole engine loop: the ``Scheduler`` plans, the ``ModelRunner``
executes the plan on the model and reports the chosen tokens, the scheduler finishes rows and
requests. See ``scheduler`` for why work is scheduled as it is, ``model_runner`` for why the
engine does not use ``model.generate``, ``sampling`` and ``retrace`` for how samples stay
independent of their batch mates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

from knowpack.models.loading import render_chat
from knowpack.models.adapters import attach_adapter
from knowpack.probe.backends.base import ListFeed, Request
from knowpack.probe.backends.engine_config import EngineConfig
from knowpack.probe.backends.model_runner import ModelRunner
from knowpack.probe.backends.registry import register_backend
from knowpack.probe.backends.scheduler import (AdmitPlan, AdmitResult, Capabilities, PrefixIndex, Sampling, Scheduler,
                                               StepPlan, length_groups)
from knowpack.probe.backends.tokens import TokenRules, encode_prompts, eos_token_ids, newline_tokens, span_complete

# Importable from here, where callers have always found them.
__all__ = ["HFBackend", "encode_prompts", "eos_token_ids", "length_groups", "newline_token_mask", "span_complete"]


def newline_token_mask(tokenizer, vocab_size: int) -> torch.Tensor:
    """Bool mask over the vocabulary: tokens whose decoded text contains a newline."""
    return torch.tensor(newline_tokens(tokenizer, vocab_size), dtype=torch.bool)


def _vocab_size(model, tokenizer) -> int:
    embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return embeddings.weight.shape[0] if embeddings is not None else len(tokenizer)


@register_backend("hf")
class HFBackend:
    """Continuous batching on a transformers causal LM (optionally wrapped by PEFT).

    ``loaded``: a LoadedModel; its ``model`` may already be a ``PeftModel`` (the trainer probes
    its in-memory adapter). ``batch_size``: facts per chunk, which sizes the row budget and
    the prefix prefill passes. ``stop_at_newline``: stop once the answer line is complete (off
    = run to EOS / ``max_new_tokens``). ``cache_prefixes``: keep shared-prefix caches across
    calls — only valid while the weights do not change (the probe runner turns it on for one
    run); off by default so a backend held by a trainer never serves stale caches.
    ``engine``: the scheduling knobs (row budget, prefix reuse, …), which never change answers.
    """

    def __init__(self, loaded, adapter: str | None = None, *, batch_size: int = 32, stop_at_newline: bool = True,
                 cache_prefixes: bool = False, engine_config: EngineConfig | None = None):
        self.tokenizer = loaded.tokenizer
        self.model = attach_adapter(loaded.model, adapter, model_hash=getattr(loaded, "model_hash", None))
        self.model_hash = getattr(loaded, "model_hash", None)
        self.batch_size = max(1, int(batch_size))
        self.engine = engine_config or EngineConfig()
        self.cache_prefixes = cache_prefixes
        self.rules = TokenRules.of(self.tokenizer, self.model, _vocab_size(self.model, self.tokenizer),
                                   stop_at_newline=stop_at_newline)
        self.runner = ModelRunner(self.model, pad_id=self.rules.pad_id, config=self.engine, batch_size=self.batch_size)
        self._prefixes = PrefixIndex(self.engine.max_cached_prefixes)

    @property
    def tokens_processed(self) -> int:
        """Prompt + generated tokens run through the model (for MFU)."""
        return self.runner.tokens_processed

    @property
    def forward_passes(self) -> int:
        return self.runner.forward_passes

    def render(self, messages: list[dict[str, str]]) -> str:
        """Render chat messages with the model's chat template, generation prompt appended."""
        return render_chat(self.tokenizer, messages, add_generation_prompt=True)

    # -- protocol -------------------------------------------------------------------------
    def greedy(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """One greedy answer per prompt (argmax decoding)."""
        prefix = self._shared_text(prompts)
        return [texts[0] for texts in self._serve_list([Request(p, prefix=prefix) for p in prompts],
                                                       max_new_tokens=max_new_tokens)]

    def sample(self, prompts: list[str], n: int, *, temperature: float, top_k: int,
               max_new_tokens: int, seeds: list[int]) -> list[list[str]]:
        """``n`` samples per prompt at ``temperature`` with ``top_k``; sample i of request r
        draws from a generator seeded by (seeds[r], i) only."""
        if len(seeds) != len(prompts):
            raise ValueError("sample() needs one seed per prompt")
        if n <= 0:
            return [[] for _ in prompts]
        prefix = self._shared_text(prompts)
        requests = [Request(p, samples=n, seed=seed, prefix=prefix) for p, seed in zip(prompts, seeds)]
        return self._serve_list(requests, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)

    def _serve_list(self, requests: list[Request], **settings) -> list[list[str]]:
        # Similar lengths share a batch (less padding); answers go back in the caller's order.
        order = sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt), i))
        feed = ListFeed([requests[i] for i in order])
        self.stream(feed, **settings)
        out: list[list[str]] = [[] for _ in requests]
        for position, texts in zip(order, feed.answers()):
            out[position] = texts
        return out

    @staticmethod
    def _shared_text(prompts: list[str]) -> str | None:
        shared = os.path.commonprefix(prompts) if len(prompts) > 1 else ""
        return shared or None

    def stream(self, feed, *, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0) -> None:
        """Serve ``feed`` with continuous batching: finished rows leave the batch at once and new
        requests join whenever half of the row budget is free, so no decode step runs for a
        handful of stragglers while work is waiting."""
        for _ in self.steps(feed, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k):
            pass

    def steps(self, feed, *, max_new_tokens: int, temperature: float = 1.0,
              top_k: int = 0) -> Iterator[tuple[AdmitPlan | StepPlan, AdmitResult | list[int]]]:
        """``stream``, one executed plan at a time: yields each plan with the runner's report.

        For callers that watch the schedule (tests, profiling); consume it to the end, since
        the model is in eval mode until then. Each plan runs in inference mode, and the caller
        runs outside it between plans.
        """
        was_training, completed = self.model.training, False
        self.model.eval()  # dropout off even when the trainer hands over a model in train mode
        try:
            with torch.inference_mode():
                self.runner.prepare()
                scheduler = Scheduler(feed, self.rules, self.engine, Sampling(max_new_tokens, temperature, top_k),
                                      batch_size=self.batch_size, prefixes=self._prefixes,
                                      capabilities=Capabilities(self.runner.row_editing, self.runner.prefix_attention))
            self.runner.begin_call(temperature, top_k)
            while True:
                with torch.inference_mode():
                    plan = scheduler.schedule()
                    if plan is None:
                        break
                    result = self.runner.admit(plan) if isinstance(plan, AdmitPlan) else self.runner.step(plan)
                    scheduler.update(result)
                yield plan, result
            completed = True
        finally:
            # Prefix caches survive only a completed call (an interrupted plan may have indexed
            # a prefix whose KV was never computed), and only while the weights do not change.
            keep = completed and self.cache_prefixes
            self.runner.end_call(keep_prefixes=keep)
            if not keep:
                self._prefixes.clear()
            self.model.train(was_training)
