"""ProbeConfig: every knob of the SliCK-style knowledge probe (docs/design.md, "Categories")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from knowpack.schema import StrictModel

from knowpack.probe.backends.engine_config import EngineConfig

# Fields that change how fast a probe runs but not what it computes; cache keys leave them out.
SPEED_ONLY_FIELDS: frozenset[str] = frozenset({"batch_size", "engine"})


class ProbeConfig(StrictModel):
    """How facts are probed: N few-shot prompts × (1 greedy + n sampled) answers each.

    Defaults follow the paper / SliCK: 10 prompts of 4 shots, greedy up to 32 new tokens,
    16 samples at T=0.5 with top-k 40. ``samples=0`` gives the paper's 3-category variant.
    """

    prompts: int = Field(10, ge=1, description="N: few-shot prompts per fact")
    shots: int = Field(4, ge=0, description="S: question/answer shots per prompt")
    samples: int = Field(16, ge=0, description="n: sampled answers per prompt (0 = greedy only)")
    temperature: float = Field(0.5, gt=0.0, description="sampling temperature")
    top_k: int = Field(40, ge=0, description="top-k for sampling (0 = whole vocabulary)")
    max_new_tokens: int = Field(32, ge=1, description="generation budget per answer")
    shot_pool: Literal["fixed", "relation"] = "fixed"
    match: Literal["word", "substring", "exact"] = "word"
    seed: int = 0
    early_exit: bool = Field(True, description="stop generating once a fact's category is certain")
    batch_size: int = Field(32, ge=1, description="facts per resumable chunk; up to 4x as many sequences "
                                                  "decode together")
    backend: str = "hf"
    # Left out of every dump while at its defaults, so configs and run keys written before the
    # engine had knobs stay valid; it changes speed, never answers.
    engine: EngineConfig = Field(default_factory=EngineConfig, exclude_if=lambda engine: engine == EngineConfig(),
                                 description="scheduling knobs of the hf engine (row budget, prefix reuse, …)")

    def result_key(self) -> dict:
        """The fields that determine the probe's results (used for content-addressed caching)."""
        return self.model_dump(mode="json", exclude=set(SPEED_ONLY_FIELDS))
