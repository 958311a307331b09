"""Content checks of raw fact records: every problem of every record, phrased for a person.

Beyond types and required fields, a fact must be *usable* by the rest of the pipeline:

* **Matchable answers.** The probe compares the first line of a generation with each alias after
  :func:`knowpack.probe.matching.normalize` (case, accents, punctuation and the articles a/an/the
  ignored). An answer or alias that normalizes to nothing (``!!!``, ``The``) or spans several lines
  can never match, so a fact the model knows would be categorized Unknown and then trained on as
  new knowledge. Both are errors.
* **One-line text.** A question or paraphrase is put on the ``Question:`` line of a prompt; a line
  break in it would split the prompt's turn structure. Line breaks are errors in every text field.
* **No invisible or control characters** (U+200B, a BOM, bidi marks, private-use or unassigned
  code points, lone surrogates): they make equal-looking strings differ, so an id would not match
  itself in a later stage's file or folder name and an alias would never match a generation.
  The zero-width (non-)joiners U+200C/U+200D are allowed: Persian, Indic scripts and emoji need them.
* **Sane sizes** (:data:`MAX_CHARS`, :data:`MAX_LIST_ITEMS`): a fact is one short question with a
  short answer; a 100,000-character question would make the probe allocate hundreds of gigabytes.
* **Finite popularity**, and **ids unique** even up to case, surrounding or repeated whitespace and
  invisible characters (ids become keys and folder names later).
"""

from __future__ import annotations

import functools
import math
import unicodedata
from typing import Any

from pydantic import ValidationError

from knowpack.facts.readers import LIST_FIELDS, Row, type_name
from knowpack.facts.schema import FACT_COLUMNS, REQUIRED_COLUMNS, TIERS, Fact
from knowpack.probe.matching import normalize

STRING_FIELDS = ("id", "subject", "relation", "question", "answer")
OPTIONAL_STRING_FIELDS = ("domain",)
# Longest accepted text per field, in characters. The default set's longest values are 62 (id),
# 45 (subject), 81 (question), 97 (paraphrase) and 69 (alias): the limits leave wide room for real
# facts while keeping every probe prompt a few hundred tokens at most.
MAX_CHARS = {"id": 200, "subject": 300, "relation": 100, "question": 2000, "answer": 300,
             "aliases": 300, "paraphrases": 2000, "domain": 100}
# Most items per list field (the default set has at most 10 aliases and 3 paraphrases).
MAX_LIST_ITEMS = {"aliases": 100, "paraphrases": 50}
_JOINERS = {"\u200c", "\u200d"}
_MATCHED = ("answer", "aliases")


def validate_rows(rows: list[Row], problems: list[str]) -> list[Fact]:
    """Check every record in file order, append its problems, and return the facts that passed."""
    facts: list[Fact] = []
    first_seen: dict[str, tuple[str, str]] = {}
    # A column missing from a CSV/Parquet/datasets file is reported once, not on every row.
    absent = {c for p in problems for c in REQUIRED_COLUMNS if p.endswith(f"missing required column '{c}'")}
    for where, record, record_problems in rows:
        if record is None:  # unreadable line: only its reading problem is known
            problems.extend(f"{where}: {p}" for p in record_problems)
            continue
        record_problems = record_problems + [
            p for p in record_problems_of(record)
            if not any(p == f"missing required field '{c}'" for c in absent)]
        record_problems += _duplicate_id(record.get("id"), where, first_seen)
        if record_problems or absent:
            problems.extend(f"{where}: {p}" for p in record_problems)
            continue
        try:
            facts.append(Fact(**record))
        except ValidationError as exc:  # anything the explicit checks above did not name
            problems.extend(f"{where}: field '{'.'.join(map(str, e['loc']))}': {e['msg']}"
                            for e in exc.errors())
    return facts


def id_key(fact_id: str) -> str:
    """The form two ids are compared in: ids equal here are the same id to a person."""
    text = unicodedata.normalize("NFKC", fact_id).casefold()
    if not text.isprintable():
        text = "".join(ch for ch in text if not _is_invisible(ch))
    return " ".join(text.split())


def _duplicate_id(fact_id: Any, where: str, first_seen: dict[str, tuple[str, str]]) -> list[str]:
    if not isinstance(fact_id, str) or not fact_id.strip():
        return []
    key = id_key(fact_id)
    if key not in first_seen:
        first_seen[key] = (fact_id, where)
        return []
    earlier, earlier_where = first_seen[key]
    if earlier == fact_id:
        return [f"duplicate id '{fact_id}' (first at {earlier_where})"]
    return [f"duplicate id {fact_id!r}: the same as {earlier!r} at {earlier_where} up to case, "
            "whitespace or invisible characters"]


def record_problems_of(record: dict[str, Any]) -> list[str]:
    """Every problem of one raw record, phrased for a person fixing the file."""
    problems = [f"unknown field '{k}' (allowed: {', '.join(FACT_COLUMNS)})"
                for k in record if k not in FACT_COLUMNS]
    for key in STRING_FIELDS:
        if key not in record or record[key] is None:
            if key in REQUIRED_COLUMNS:
                problems.append(f"missing required field '{key}'")
            continue
        problems += _string_problems(key, key, record[key])
    for key in OPTIONAL_STRING_FIELDS:
        if record.get(key) is not None:
            problems += _string_problems(key, key, record[key])
    for key in LIST_FIELDS:
        problems += _list_problems(key, record.get(key, []))
    problems += _popularity_problems(record.get("popularity"))
    tier = record.get("tier")
    if tier is not None and tier not in TIERS:
        problems.append(f"field 'tier': unknown tier {tier!r} (allowed: {', '.join(TIERS)})")
    return problems


def _string_problems(field: str, label: str, value: Any) -> list[str]:
    """Problems of one text value; ``field`` picks the rules, ``label`` names it (``aliases[2]``)."""
    if not isinstance(value, str):
        return [f"field '{label}': expected a string, got {type_name(value)}"]
    if not value.strip():
        return [f"field '{label}': empty {'answer' if field == 'answer' else 'string'}"]
    problems = []
    if len(value) > MAX_CHARS[field]:
        problems.append(f"field '{label}': {len(value):,} characters, over the limit of "
                        f"{MAX_CHARS[field]:,} (a fact is a short question with a short answer)")
    # isprintable() is one C-speed pass that is True for almost every value: no line break, no
    # "other"-category character; only the rare rest needs the slower look at each character.
    if not value.isprintable() and (problem := _unprintable_problem(field, value)) is not None:
        problems.append(f"field '{label}': {problem}")
    elif field in _MATCHED and not _matchable(value):
        problems.append(f"field '{label}': {value!r} can never match an answer (nothing is left once "
                        "case, accents, punctuation and the articles a/an/the are ignored)")
    return problems


def _unprintable_problem(field: str, value: str) -> str | None:
    """A line break or an invisible/control character in ``value`` (None: only spaces such as NBSP)."""
    if len(value.splitlines()) > 1:
        why = ("only the first line of a generation is compared, so it can never match"
               if field in _MATCHED else "every text field must be one line")
        return f"contains a line break ({why})"
    for position, ch in enumerate(value):
        if _is_invisible(ch):
            return (f"contains the invisible or control character U+{ord(ch):04X} "
                    f"({unicodedata.name(ch, 'unnamed')}) at position {position + 1}")
    return None


def _is_invisible(ch: str) -> bool:
    # Unicode "other" categories: control (Cc), format (Cf), surrogate (Cs), private use (Co),
    # unassigned (Cn). Line breaks are Cc too but get their own message.
    return unicodedata.category(ch)[0] == "C" and ch not in _JOINERS


@functools.lru_cache(maxsize=1 << 16)
def _matchable(text: str) -> bool:
    # Answers repeat across facts (country names, numbers): cache the normalization verdict.
    return bool(normalize(text))


def _list_problems(key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        return [f"field '{key}': expected a list of strings, got {type_name(value)}"]
    if len(value) > MAX_LIST_ITEMS[key]:
        return [f"field '{key}': {len(value):,} items, over the limit of {MAX_LIST_ITEMS[key]}"]
    return [problem for i, item in enumerate(value) for problem in _string_problems(key, f"{key}[{i}]", item)]


def _popularity_problems(popularity: Any) -> list[str]:
    if popularity is None:
        return []
    if isinstance(popularity, bool) or not isinstance(popularity, (int, float)):
        return [f"field 'popularity': expected a number, got {type_name(popularity)}"]
    try:
        finite = math.isfinite(popularity)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        shown = popularity if isinstance(popularity, float) else "an integer too large for a float"
        return [f"field 'popularity': must be a finite number, got {shown}"]
    return []
