"""The probe folder's files as typed classes, and the one reader later stages use.

A probe folder holds ``categories.jsonl`` (one :class:`CategoryRow` per fact), ``generations.jsonl``
(one :class:`GenerationRow` per answer), ``shots.json`` (:class:`ShotSets`), ``summary.json``
(:class:`ProbeSummary`) and ``manifest.json`` (written last). Mix, train, evaluate and the study
read it through :class:`ProbeFolder` only, so no stage guesses where a probe keeps what.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from knowpack.facts.schema import Fact
from knowpack.manifest import Manifest, finished_folder
from knowpack.probe.config import ProbeConfig
from knowpack.probe.slick import Category
from knowpack.schema import JsonArtifact, RowArtifact

WRITER = "knowpack probe"


class CategoryRow(RowArtifact):
    """One fact's SliCK category and the evidence behind it (``categories.jsonl``).

    ``greedy_answers`` may hold fewer than N answers when early exit settled the category;
    ``samples`` counts the sampled answers actually drawn.
    """

    file_name = "categories.jsonl"
    writer = WRITER

    id: str
    category: Category
    p_greedy: float
    p_sample: float
    greedy_answers: list[str]
    greedy_correct: list[bool]
    sampled_correct: int
    samples: int
    refused: bool


class GenerationRow(RowArtifact):
    """One generated answer with its checks (``generations.jsonl``)."""

    file_name = "generations.jsonl"
    writer = WRITER

    id: str
    prompt: int
    kind: Literal["greedy", "sample"]
    sample: int | None
    text: str
    answer: str
    correct: bool
    exact: bool
    refusal: bool


class ShotSets(JsonArtifact):
    """The few-shot exemplars of a probe (``shots.json``), so later probes ask the same prompts.

    ``fixed``: ``sets`` holds the N shot sets as fact records, ``held_out_ids`` the facts of the
    probed file that were used as shots (not probed). ``relation``: ``per_fact`` maps a fact id
    to the ids of its N shot sets, drawn from a pool of ``pool_size`` facts.
    """

    file_name = "shots.json"
    writer = WRITER

    mode: Literal["fixed", "relation"]
    sets: list[list[Fact]] | None = None
    held_out_ids: list[str] | None = None
    pool_size: int | None = None
    per_fact: dict[str, list[list[str]]] | None = None

    def to_json(self) -> dict[str, Any]:
        # Each mode writes only its own keys (the file layout of both modes is part of the contract).
        keys = ("mode", "sets", "held_out_ids") if self.mode == "fixed" else ("mode", "pool_size", "per_fact")
        return {"format_version": self.version, **self.model_dump(mode="json", include=set(keys))}


class Shares(BaseModel):
    """Counts and shares per category over a group of facts."""

    model_config = ConfigDict(extra="ignore")

    n: int
    counts: dict[str, int]
    shares: dict[str, float]
    refusal_rate: float


class ProbeSummary(Shares, JsonArtifact):
    """What a probe found (``summary.json``): shares overall, per relation and per tier, and how.

    ``exemplars`` names where the fixed few-shot exemplars came from: ``held_out`` (facts of the
    probed file, not probed), ``given`` (a caller's shot pool) or the packaged exemplar pool.
    """

    file_name = "summary.json"
    writer = WRITER

    per_relation: dict[str, Shares]
    per_tier: dict[str, Shares]
    greedy_generations: int
    sampled_generations: int
    held_out_ids: list[str]
    config: dict[str, Any]
    model_hash: str
    adapter: str | None = None
    run_key: str
    exemplars: str | None = None
    seconds: float = 0.0


class ProbeFolder:
    """A finished probe folder, read lazily: categories, shots, summary, config, base-model hash."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = finished_folder(folder, stage="probe", done=is_done)

    @cached_property
    def rows(self) -> dict[str, CategoryRow]:
        """``categories.jsonl`` by fact id."""
        return {row.id: row for row in CategoryRow.read_rows(self.folder)}

    @cached_property
    def summary(self) -> ProbeSummary:
        return ProbeSummary.read(self.folder)

    @cached_property
    def shots(self) -> ShotSets:
        return ShotSets.read(self.folder)

    @property
    def config(self) -> ProbeConfig:
        """The settings the probe ran with (later probes of adapters reuse them)."""
        return ProbeConfig.model_validate(self.summary.config)

    @property
    def model_hash(self) -> str:
        return self.summary.model_hash

    def shot_sets(self) -> list[list[Fact]] | None:
        """The fixed shot sets (None for same-relation shots, which are drawn per fact)."""
        return self.shots.sets if self.shots.mode == "fixed" else None

    def category_dicts(self) -> list[dict[str, Any]]:
        """The rows as plain dicts, in file order (what the mixture builder consumes)."""
        return [row.model_dump(mode="json") for row in self.rows.values()]


def is_done(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a finished probe (its manifest is written last)."""
    folder = Path(folder)
    return all(cls.exists(folder) for cls in (CategoryRow, ProbeSummary, ShotSets, Manifest))
