"""The Fact record: one question/answer fact with aliases, relation and popularity tier."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Tier = Literal["head", "torso", "tail"]
TIERS: tuple[str, ...] = ("head", "torso", "tail")


class Fact(BaseModel):
    """A question/answer fact: what every stage reads, from a user file or the default set.

    ``aliases`` always starts with ``answer``; matching accepts any alias.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    relation: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    popularity: float | None = None
    tier: Tier | None = None
    paraphrases: list[str] = Field(default_factory=list)
    domain: str | None = None

    @field_validator("id", "subject", "relation", "question", "answer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty or whitespace")
        return value

    @field_validator("aliases", "paraphrases")
    @classmethod
    def _no_empty_strings(cls, values: list[str]) -> list[str]:
        for i, value in enumerate(values):
            if not value.strip():
                raise ValueError(f"item {i} is an empty string")
        return values

    @model_validator(mode="after")
    def _answer_first_alias(self) -> "Fact":
        # Contract: aliases lists the answer first. Accept files that omit it and put it there.
        if not self.aliases or self.aliases[0] != self.answer:
            rest = [a for a in self.aliases if a != self.answer]
            object.__setattr__(self, "aliases", [self.answer, *rest])
        return self

    @property
    def all_answers(self) -> list[str]:
        """Every acceptable answer string (answer first)."""
        return list(self.aliases)


FACT_COLUMNS: tuple[str, ...] = tuple(Fact.model_fields)
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "subject", "relation", "question", "answer")
