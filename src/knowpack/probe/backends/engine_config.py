"""EngineConfig: the tuning knobs of the transformers probe engine.

Every knob changes how fast the engine runs, never what it answers: rows decode independently
(prefix attention equals attention over the whole sequence, samples draw from their own
generators), so the schedule may change freely. The defaults were tuned on a 2-core CPU with
SmolLM2-135M and ≈145-token few-shot prompts.
"""

from __future__ import annotations

from pydantic import Field

from knowpack.schema import StrictModel


class EngineConfig(StrictModel):
    """How the continuous-batching engine schedules and lays out its work."""

    max_rows: int | None = Field(None, ge=1, description="sequences decoded together (default: rows_per_fact × "
                                                         "batch size; never fewer than the batch size)")
    rows_per_fact: int = Field(4, ge=1, description="row budget per fact of a chunk when max_rows is unset: "
                                                    "room for a greedy answer and the samples that follow it")
    max_cached_prefixes: int = Field(32, ge=1, description="few-shot prefix KV caches kept (oldest dropped first)")
    pass_overhead_tokens: int = Field(24, ge=0, description="a forward pass costs about as much as this many "
                                                            "prompt tokens (CPU); prefill groups trade padding "
                                                            "against passes at this rate")
    retrace_after_steps: int = Field(8, ge=0, description="samples of a greedy answer still decoding wait until it "
                                                          "has run this many steps (most short answers finish "
                                                          "first, and a finished path is cheaper to retrace)")
    retrace_max_top_k: int = Field(1024, ge=1, description="keep greedy paths for retracing only when top-k is at "
                                                           "most this (each step keeps a top-k distribution)")
    per_row_above: int = Field(8, ge=0, description="more prefix groups than this in a batch: lay prefixes out "
                                                    "per row instead of one matmul per group")
    compact_dead_share: float = Field(0.125, gt=0.0, le=1.0, description="rebuild a batch once this share of its "
                                                                        "rows finished (a rebuild copies the "
                                                                        "whole cache)")
    spare_columns: int = Field(48, ge=0, description="cache columns allocated ahead: about the decode steps of "
                                                     "one answer, so appending rarely reallocates")
    prefix_reuse: bool = Field(True, description="prefill each shared few-shot prefix once and attend to it "
                                                 "from every row that starts with it")

    def row_budget(self, batch_size: int) -> int:
        """Sequences decoded together for chunks of ``batch_size`` facts."""
        return max(batch_size, self.max_rows or self.rows_per_fact * batch_size)
