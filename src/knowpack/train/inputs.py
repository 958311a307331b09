"""What training needs from upstream folders, derived in one place (the CLI and the study both call it).

A mix folder names its trained Unknown facts and held-out retention facts and the base-model
probe it was drawn from; the per-epoch curves probe those facts with that probe's settings and
shot sets, so every epoch is measured exactly as the base model was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.facts.schema import Fact
from knowpack.manifest import Manifest
from knowpack.models.adapters import has_adapter_files
from knowpack.mix.artifacts import MixFolder
from knowpack.probe.artifacts import ProbeFolder
from knowpack.probe.config import ProbeConfig

SUMMARY_FILE = "train_summary.json"
ADAPTER_DIR = "adapter"


@dataclass
class CurveInputs:
    """Facts and prompts of the per-epoch reliability (trained Unknown) and retention (held-out HK) curves."""

    curve_facts: list[Fact]
    retention_facts: list[Fact]
    probe_config: ProbeConfig | None
    shot_sets: list[list[Fact]] | None

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``train_adapter``."""
        return {"curve_facts": self.curve_facts, "retention_facts": self.retention_facts,
                "probe_config": self.probe_config, "shot_sets": self.shot_sets}


def curve_inputs(mix_dir: str | os.PathLike) -> CurveInputs:
    """Curve inputs of the mixture in ``mix_dir`` and of the probe folder it names.

    Without a probe folder (a mixture built elsewhere), the curves use default probe settings
    and shot sets drawn from held-out facts that neither curve evaluates, so no fact is ever a
    shot in its own prompt; with too few such facts the curves use no shots at all.
    """
    from knowpack.probe.prompts import build_shot_sets

    mix = MixFolder(mix_dir)
    sets = mix.eval_sets
    inputs = CurveInputs(curve_facts=mix.facts_of(sets.trained_unknown), retention_facts=mix.facts_of(sets.retention),
                         probe_config=None, shot_sets=None)
    if mix.probe_dir is not None and (mix.probe_dir / Manifest.file_name).is_file():
        probe = ProbeFolder(mix.probe_dir)
        inputs.probe_config, inputs.shot_sets = probe.config, probe.shot_sets()
        return inputs
    config = inputs.probe_config = ProbeConfig()
    evaluated = {*sets.trained_unknown, *sets.retention, *sets.trained_known}
    spare = [f for fid, f in mix.facts.items() if fid not in evaluated]
    if config.shot_pool == "fixed" and len(spare) >= config.prompts * config.shots:
        inputs.shot_sets = build_shot_sets(spare, config)
    return inputs


def is_done(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a finished training run: its summary and final adapter are written last."""
    folder = Path(folder)
    return (folder / SUMMARY_FILE).is_file() and has_adapter_files(folder / ADAPTER_DIR)
