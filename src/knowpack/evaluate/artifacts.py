"""The evaluation folder's ``metrics.json`` as a typed class.

``metrics.json`` holds one section per metric of the registry (``reliability``, ``shifts``, …,
each the metric's own summary) and ``meta``: what was evaluated. Readers ask for a value by one
dotted path (``shifts.untrained.all.negative_share``); there are no alternative spellings to try.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from knowpack.manifest import Manifest
from knowpack.schema import JsonArtifact


class EvalMeta(BaseModel):
    """What one evaluation was about: base model, adapter, mixture, base probe and probe settings."""

    model_config = ConfigDict(extra="ignore")

    model_hash: str
    adapter: str
    adapter_hash: str
    mix: str
    probe_dir: str | None = None
    n_facts: int
    n_trained_facts: int
    probe_config: dict[str, Any]
    # With eval.benchmark_shot_category: the category, shot mode and exemplar ids of the re-probes.
    shots: dict[str, Any] | None = None


class EvalMetrics(JsonArtifact):
    """``metrics.json``: ``meta`` plus one section per metric (the metric's name is the key)."""

    model_config = ConfigDict(extra="allow")
    file_name = "metrics.json"
    writer = "knowpack evaluate"

    meta: EvalMeta

    @property
    def sections(self) -> dict[str, Any]:
        """Every metric's summary, by metric name."""
        return dict(self.__pydantic_extra__ or {})

    def value(self, path: str) -> Any:
        """The value at a dotted path (``None`` when the metric or the key is absent)."""
        node: Any = self.sections
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def number(self, path: str) -> float:
        """The value at ``path`` as a float; NaN when absent or not a number (e.g. "not configured")."""
        value = self.value(path)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return math.nan
        return float(value)

    def scalars(self) -> dict[str, float]:
        """Every finite number in the metric sections, flattened to ``a.b.c`` names."""
        return {name: value for name, value in flatten(self.sections).items()
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``a.b.c`` keys (lists and strings are kept as leaves)."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif prefix:
        out[prefix[:-1]] = obj
    return out


def is_done(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a finished evaluation (its manifest is written last)."""
    folder = Path(folder)
    return EvalMetrics.exists(folder) and Manifest.exists(folder) and Manifest.read(folder).stage == "evaluate"
