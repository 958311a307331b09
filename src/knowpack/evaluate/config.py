"""EvalConfig: what `knowpack evaluate` measures and with which settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

from knowpack.schema import StrictModel

BENCHMARK_NAMES: tuple[str, ...] = ("mmlu", "truthfulqa")
ShotCategory = Literal["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]


class EvalConfig(StrictModel):
    """Settings of one evaluation (docs/design.md, "Configs").

    ``probe`` holds ProbeConfig fields that override the base probe's own settings (read from the
    mix's probe folder), so the adapted model is probed exactly like the base model unless asked.
    """

    metrics: list[str] | None = Field(None, description="metric names to run; None = all registered")
    probe: dict[str, Any] = Field(default_factory=dict, description="ProbeConfig overrides")
    facts: str | None = Field(None, description="fact file the base probe ran on; default: found via the "
                                                "mix/probe manifests, else the mix's eval_facts.jsonl")
    max_untrained: int | None = Field(
        None, ge=0, description="re-probe at most this many untrained facts (seeded sample; held-out "
                                "and retention facts are always kept); None = every probed fact")
    seed: int = 0
    # Few-shot exemplars of one knowledge category: does the category of the shots change the
    # knowledge that is measured? Applies to knowpack's fact re-probes only; MMLU and TruthfulQA
    # keep the exemplars lm-eval takes from their own datasets (those are not facts with a category).
    benchmark_shot_category: ShotCategory | None = Field(
        None, description="take the few-shot exemplars of every fact re-probe (reliability, shifts, yardsticks) "
                          "from base-probe facts of this category outside the mixture, and re-probe the base "
                          "model with the same shots; None = the base probe's own shots")
    # The yardsticks of every shift, on the untrained facts: the paired floor (the base model
    # probed again with the same prompts, facts in another order: what batching alone changes,
    # close to zero) and prompt sensitivity (the base model with another draw of few-shot prompts).
    noise_floor: bool = Field(True, description="measure the paired floor and prompt sensitivity of the base model")
    second_draw: bool = Field(True, description="also probe the adapter with the second prompt draw, so a shift "
                                                "can be shown not to be an artefact of one prompt set")
    noise_seed_offset: int = Field(1, ge=1, description="seed offset of the second draw of few-shot prompts")
    # Answer collapse.
    attractor_alpha: float = Field(0.05, gt=0, lt=1)
    attractor_correction: Literal["bh", "bonferroni"] = "bh"
    attractor_min_count: int = Field(3, ge=1, description="ignore answers seen fewer times after training")
    top_answers: int = Field(20, ge=1)
    # Adapter canary.
    canary_facts: int = Field(4, ge=1)
    canary_tolerance: float = Field(1e-5, ge=0, description="max |Δlogit| at or below which the adapter counts as inert")
    # Benchmarks through lm-evaluation-harness.
    benchmarks: list[Literal["mmlu", "truthfulqa"]] = Field(default_factory=lambda: list(BENCHMARK_NAMES))
    mmlu_limit: int | None = Field(20, ge=1, description="questions per subject (seeded sample); None = all")
    mmlu_subjects: list[str] | None = Field(None, description="subset of subjects; None = all 57")
    mmlu_shots: int = Field(5, ge=0, le=5)
    truthfulqa_path: Path | None = Field(None, description="local TruthfulQA file (HF multiple_choice layout, "
                                                             "mc_task.json or TruthfulQA.csv)")
    truthfulqa_limit: int | None = Field(None, ge=1)
    benchmark_batch_size: int = Field(8, ge=1)
    benchmark_cache: bool = Field(True, description="cache base-model benchmark results under knowpack_home()")
    # A control adapter answers what fine-tuning on known facts does to the facts; the paper's claims
    # on benchmarks (C4) compare adapters that learned new facts. Off, a mixture without Unknown
    # facts skips the benchmarks: on the default model that is 28 s of a control cell's ~65 s.
    benchmarks_on_controls: bool = Field(True, description="also run the benchmarks on control adapters "
                                                           "(mixtures without Unknown facts)")

    @model_serializer(mode="wrap")
    def _without_defaults_added_later(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo):
        # Evaluations are addressed by the hash of this dump: a setting added later stays out of it
        # at its default, so existing studies keep their evaluations instead of redoing them.
        data = handler(self)
        if isinstance(data, dict) and data.get("benchmarks_on_controls") is True:
            data.pop("benchmarks_on_controls")
        return data

    def benchmark_settings(self) -> dict[str, Any]:
        """The settings that decide a benchmark result (the cache key, with model and data hashes)."""
        return {
            "mmlu_limit": self.mmlu_limit, "mmlu_subjects": self.mmlu_subjects,
            "mmlu_shots": self.mmlu_shots, "truthfulqa_limit": self.truthfulqa_limit, "seed": self.seed,
        }
