"""MixConfig: how a training mixture is composed (DESIGN.md "Mixture")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MixKind = Literal["highly_known", "maybe_known", "paraphrase"]
# Category a known-fact kind draws from.
KIND_CATEGORY = {"highly_known": "HighlyKnown", "maybe_known": "MaybeKnown"}


class MixConfig(BaseModel):
    """n Unknown facts + k extra items per Unknown fact of one kind, drawn with ``seed``.

    ``heldout_per_category`` facts of every category are reserved for locality evaluation
    before any training fact is drawn, so the held-out sets do not depend on n or k and are
    the same across a study grid that shares the seed. ``retention_sample`` of the held-out
    HighlyKnown facts are re-checked after every training epoch.
    """

    model_config = ConfigDict(extra="forbid")

    unknown: int = Field(ge=1, description="n: Unknown facts to train on")
    extra: int = Field(0, ge=0, description="k: extra items per Unknown fact")
    kind: MixKind = "paraphrase"
    seed: int = 0
    heldout_per_category: int = Field(50, ge=0)
    retention_sample: int = Field(20, ge=0)
