"""Read, validate and write fact files by path — or by the name ``default`` for the built-in set.

This module sits above both the file formats (:mod:`knowpack.facts.readers`,
:mod:`knowpack.facts.writers`, :mod:`knowpack.facts.checks`) and the default set
(:mod:`knowpack.facts.default_set`); it is the one place the name ``default`` is resolved, so
neither of those needs the other's caller and no import cycle exists.

Validation collects *every* problem in a file (with file, line/row and field) before raising one
:class:`~knowpack.errors.ValidationFailed`, so a user fixes a broken file in one pass. A file with
no facts at all is a problem too: every stage reads through :func:`read_facts`.
"""

from __future__ import annotations

import os
from pathlib import Path

from knowpack.errors import KnowpackError, ValidationFailed
from knowpack.facts.checks import validate_rows
from knowpack.facts.default_set import load_default_facts
from knowpack.facts.readers import load_rows
from knowpack.facts.schema import Fact
from knowpack.facts.writers import fact_records, write_facts
from knowpack.io import sha256_file, sha256_text

DEFAULT_NAME = "default"

__all__ = ["DEFAULT_NAME", "check_fact_list", "check_facts", "fact_records", "facts_hash", "read_facts", "resolve_facts_path",
           "write_facts"]


def resolve_facts_path(path: str | os.PathLike) -> Path:
    """The file behind a fact-file argument: ``default`` is the cached default set (built once)."""
    if str(path) == DEFAULT_NAME:
        return load_default_facts()
    return Path(path)


def read_facts(path: str | os.PathLike) -> list[Fact]:
    """Read and validate a fact file; ``"default"`` means the built-in default set.

    Raises :class:`KnowpackError` for a missing, unreadable or unsupported file and
    :class:`ValidationFailed` listing every problem for invalid content (or no facts at all).
    """
    path = resolve_facts_path(path)
    facts, problems = check_facts(path)
    if problems:
        raise ValidationFailed(problems, what=str(path))
    return facts


def check_facts(path: str | os.PathLike) -> tuple[list[Fact], list[str]]:
    """Validate a fact file without raising for content problems: ``(valid facts, problems)``.

    Never writes anything (not even the default-set cache: pass its path, or build it in memory).
    """
    rows, problems = load_rows(Path(path))
    facts = validate_rows(rows, problems)
    return facts, problems


def check_fact_list(facts: list[Fact], name: str) -> tuple[list[Fact], list[str]]:
    """Apply the file checks to facts built in memory (``name`` labels them in problems)."""
    rows = [(f"{name}: fact {i} ({fact.id})", record, []) for i, (fact, record)
            in enumerate(zip(facts, fact_records(facts)), start=1)]
    problems: list[str] = [] if rows else [f"{name}: no facts"]
    return validate_rows(rows, problems), problems


def facts_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a fact file's bytes (of every file, in name order, for a datasets folder)."""
    path = resolve_facts_path(path)
    if not path.exists():
        raise KnowpackError(f"fact file not found: {path}")
    if path.is_file():
        return sha256_file(path)
    parts = [f"{p.relative_to(path).as_posix()}:{sha256_file(p)}"
             for p in sorted(path.rglob("*")) if p.is_file()]
    return sha256_text("\n".join(parts))
