"""The mix folder's files as typed classes, and the one reader train and evaluate use.

A mix folder holds ``train.jsonl`` (one :class:`TrainRow` per training example), ``eval_sets.json``
(:class:`EvalSets`: which fact ids were trained on and which are held out), ``eval_facts.jsonl``
(the Fact record behind every id there, so later stages need no other fact file),
``summary.json`` (:class:`MixSummary`, naming the probe folder the mixture was drawn from) and
``manifest.json`` (written last).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.manifest import Manifest, finished_folder
from knowpack.schema import JsonArtifact, RowArtifact

WRITER = "knowpack mix"
Role = Literal["unknown", "paraphrase", "highly_known", "maybe_known", "same_relation_known", "control"]


class TrainRow(RowArtifact):
    """One training example (``train.jsonl``); ``fact_id`` is the fact it teaches."""

    file_name = "train.jsonl"
    writer = WRITER

    id: str
    fact_id: str
    question: str
    answer: str
    role: Role


class EvalSets(JsonArtifact):
    """Fact ids by purpose (``eval_sets.json``).

    ``trained_unknown``: the n Unknown facts trained on; ``trained_known``: known facts trained on
    as extras; ``heldout``: per category, facts never trained on (locality checks);
    ``retention``: held-out HighlyKnown facts re-checked after every epoch.
    """

    file_name = "eval_sets.json"
    writer = WRITER

    trained_unknown: list[str]
    trained_known: list[str] = Field(default_factory=list)
    heldout: dict[str, list[str]] = Field(default_factory=dict)
    retention: list[str] = Field(default_factory=list)

    def ids(self, name: str) -> list[str]:
        """Ids of one set; ``heldout`` is flattened over categories."""
        value = getattr(self, name)
        return [fid for ids in value.values() for fid in ids] if isinstance(value, dict) else list(value)

    def all_ids(self) -> list[str]:
        """Every fact id named in any set, once, in set order."""
        names = ("trained_unknown", "trained_known", "heldout", "retention")
        return list(dict.fromkeys(fid for name in names for fid in self.ids(name)))


class EvalFactRow(Fact, RowArtifact):
    """A Fact record in ``eval_facts.jsonl``."""

    file_name = "eval_facts.jsonl"
    writer = WRITER


class MixSummary(JsonArtifact):
    """What the mixture holds (``summary.json``) and where it came from."""

    file_name = "summary.json"
    writer = WRITER

    train_examples: int
    counts: dict[str, Any]
    concentration: dict[str, Any]
    probe_dir: str | None = None


class MixFolder:
    """A finished mix folder, read lazily, with the questions later stages ask of it."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = finished_folder(folder, stage="mix", done=is_done)

    @cached_property
    def train(self) -> list[TrainRow]:
        return TrainRow.read_rows(self.folder)

    @cached_property
    def eval_sets(self) -> EvalSets:
        return EvalSets.read(self.folder)

    @cached_property
    def summary(self) -> MixSummary:
        return MixSummary.read(self.folder)

    @cached_property
    def facts(self) -> dict[str, Fact]:
        """The Fact records of every trained and held-out fact, by id."""
        return {row.id: Fact(**row.model_dump()) for row in EvalFactRow.read_rows(self.folder)}

    @property
    def probe_dir(self) -> Path | None:
        """The base-model probe folder the mixture was drawn from."""
        return Path(self.summary.probe_dir) if self.summary.probe_dir else None

    @cached_property
    def manifest(self) -> Manifest:
        return Manifest.read(self.folder)

    @property
    def trained_ids(self) -> set[str]:
        """Every fact id with at least one training example (Unknown targets, known extras, paraphrased)."""
        return {row.fact_id for row in self.train}

    @property
    def trained_unknown(self) -> list[str]:
        return list(self.eval_sets.trained_unknown)

    @property
    def target_answers(self) -> list[str]:
        """Distinct answers the adapter was trained to produce."""
        return list(dict.fromkeys(row.answer for row in self.train))

    @property
    def train_questions(self) -> set[str]:
        """Normalized keys of every question in train.jsonl (paraphrases included)."""
        return {question_key(row.question) for row in self.train}

    def facts_of(self, ids: list[str]) -> list[Fact]:
        """The Fact records of ``ids``, in that order (ids the mix does not hold are an error)."""
        missing = [i for i in ids if i not in self.facts]
        if missing:
            raise KnowpackError(f"{self.folder / EvalFactRow.file_name} lacks facts named in eval_sets.json: "
                                f"{', '.join(missing[:5])}", hint="rebuild the mixture with `knowpack mix`")
        return [self.facts[i] for i in ids]


def question_key(text: str) -> str:
    """Case- and whitespace-insensitive key used to decide whether a question was trained on."""
    return " ".join(text.casefold().split())


def is_done(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a finished mixture (its manifest is written last)."""
    folder = Path(folder)
    return all(cls.exists(folder) for cls in (TrainRow, EvalSets, EvalFactRow, MixSummary, Manifest))
