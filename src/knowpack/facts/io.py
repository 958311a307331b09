"""Read, validate and write fact files: JSONL, CSV, Parquet and local HF ``datasets`` folders.

Validation collects *every* problem in a file (with file, line/row and field) before raising one
:class:`~knowpack.errors.ValidationFailed`, so a user fixes a broken file in one pass.

CSV list columns (``aliases``, ``paraphrases``): a cell that starts with ``[`` is read as a JSON
array of strings; any other non-empty cell is split on ``|`` (``Paris|Lutetia``); an empty cell is
an empty list. :func:`write_facts` always writes JSON arrays, which round-trip any text.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from knowpack.errors import KnowpackError, ValidationFailed
from knowpack.facts.schema import FACT_COLUMNS, REQUIRED_COLUMNS, TIERS, Fact
from knowpack.io import atomic_dir, atomic_path, sha256_file, sha256_text, write_jsonl

DEFAULT_NAME = "default"
LIST_FIELDS = ("aliases", "paraphrases")
STRING_FIELDS = ("id", "subject", "relation", "question", "answer")
_OPTIONAL_STRING_FIELDS = ("domain",)
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
# (where, record or None when the line could not be read, problems found while reading it)
Row = tuple[str, "dict[str, Any] | None", list[str]]
_FORMATS = "JSONL (.jsonl/.ndjson), CSV (.csv), Parquet (.parquet) or a datasets folder"


def read_facts(path: str | os.PathLike) -> list[Fact]:
    """Read and validate a fact file; ``"default"`` means the built-in default set.

    Raises :class:`KnowpackError` for a missing or unsupported file and
    :class:`ValidationFailed` listing every problem for invalid content.
    """
    if str(path) == DEFAULT_NAME:
        from knowpack.facts.default_set import load_default_facts

        path = load_default_facts()
    path = Path(path)
    rows, problems = _load_rows(path)
    facts = _validate_rows(rows, problems)
    if problems:
        raise ValidationFailed(problems, what=str(path))
    return facts


def check_facts(path: str | os.PathLike) -> tuple[list[Fact], list[str]]:
    """Validate a fact file without raising for content problems: ``(valid facts, problems)``."""
    path = Path(path)
    rows, problems = _load_rows(path)
    facts = _validate_rows(rows, problems)
    return facts, problems


def _load_rows(path: Path) -> tuple[list[Row], list[str]]:
    """Return the file's rows (see ``Row``) plus file-level problems, by file format."""
    if not path.exists():
        raise KnowpackError(
            f"fact file not found: {path}",
            hint="pass an existing file (" + _FORMATS + "), or `default` for the built-in set; "
                 "build one with `knowpack facts build --out facts.jsonl`")
    if path.is_dir():
        if not any((path / m).is_file() for m in _HF_MARKERS):
            raise KnowpackError(f"{path} is a folder but not a saved `datasets` dataset",
                                hint="save it with Dataset.save_to_disk(), or pass a file")
        return _rows_from_hf(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _rows_from_jsonl(path)
    if suffix == ".csv":
        return _rows_from_csv(path)
    if suffix == ".parquet":
        return _rows_from_parquet(path)
    raise KnowpackError(f"unsupported fact file type: {path.name}", hint="use " + _FORMATS)


def _rows_from_jsonl(path: Path) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    problems: list[str] = []
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            where = f"{path}:{number}"
            line_start, offset = offset, offset + len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                rows.append((where, None, [f"not valid UTF-8 (byte {exc.start} of the line, "
                                           f"byte offset {line_start + exc.start} in the file)"]))
                continue
            if not text.strip():
                continue  # blank lines carry no record
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                rows.append((where, None, [f"bad JSON ({exc.msg} at column {exc.colno})"]))
                continue
            if not isinstance(record, dict):
                rows.append((where, None, [f"expected a JSON object, got {_type_name(record)}"]))
                continue
            rows.append((where, record, []))
    return rows, problems


def _utf8_problem(path: Path) -> str | None:
    """Describe the first non-UTF-8 byte of a text file (line and byte offset), if any."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"{path}:{line}: not valid UTF-8 (byte offset {exc.start} in the file)"
    return None


def _rows_from_csv(path: Path) -> tuple[list[Row], list[str]]:
    import pandas as pd

    if (problem := _utf8_problem(path)) is not None:
        return [], [problem]
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        return [], [f"{path}: cannot parse CSV ({str(exc).strip()})"]
    problems = _missing_columns(path, list(frame.columns))
    rows = []
    for index, record in enumerate(frame.to_dict(orient="records")):
        # Row 1 is the first data row, on line 2 after the header (unless a cell spans lines).
        where = f"{path}: row {index + 1}"
        cell_problems: list[str] = []
        rows.append((where, _decode_csv_record(record, cell_problems), cell_problems))
    return rows, problems


def _decode_csv_record(record: dict[str, str], problems: list[str]) -> dict[str, Any]:
    """Turn CSV text cells into typed values; empty optional cells mean "not given"."""
    out: dict[str, Any] = {}
    for key, cell in record.items():
        if key in LIST_FIELDS:
            out[key] = _split_list_cell(cell, key, problems)
        elif key == "popularity":
            if cell.strip() == "":
                out[key] = None
            else:
                try:
                    out[key] = float(cell)
                except ValueError:
                    out[key] = cell  # reported as a wrong type by the common checks
        elif key in ("tier", "domain") and cell.strip() == "":
            out[key] = None
        else:
            out[key] = cell
    return out


def _split_list_cell(cell: str, key: str, problems: list[str]) -> Any:
    text = cell.strip()
    if text == "":
        return []
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(f"field '{key}': bad JSON array ({exc.msg})")
            return []
    return cell.split("|")


def _rows_from_parquet(path: Path) -> tuple[list[Row], list[str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        return [], [f"{path}: cannot read Parquet ({exc})"]
    return _rows_from_records(path, table.column_names, table.to_pylist(), "row")


def _rows_from_hf(path: Path) -> tuple[list[Row], list[str]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError/ValueError/… for broken folders
        return [], [f"{path}: cannot load the datasets folder ({exc})"]
    if isinstance(loaded, datasets.DatasetDict):
        rows: list[Row] = []
        problems: list[str] = []
        for split in sorted(loaded):
            part_rows, part_problems = _rows_from_records(
                path, loaded[split].column_names, loaded[split].to_list(), f"split {split} row")
            rows += part_rows
            problems += part_problems
        return rows, problems
    return _rows_from_records(path, loaded.column_names, loaded.to_list(), "row")


def _rows_from_records(path: Path, columns: list[str], records: list[dict], label: str
                       ) -> tuple[list[Row], list[str]]:
    problems = _missing_columns(path, columns)
    rows = []
    for index, record in enumerate(records):
        # Columnar formats store absent optional values as null/NaN; treat both as "not given".
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
        for key in LIST_FIELDS:
            if key in clean and clean[key] is None:
                clean[key] = []
        rows.append((f"{path}: {label} {index + 1}", clean, []))
    return rows, problems


def _missing_columns(path: Path, columns: list[str]) -> list[str]:
    return [f"{path}: missing required column '{c}'" for c in REQUIRED_COLUMNS if c not in columns]


def _validate_rows(rows: list[Row], problems: list[str]) -> list[Fact]:
    """Check every record in file order, append problems, and return the facts that passed."""
    facts: list[Fact] = []
    first_seen: dict[str, str] = {}
    # A column missing from a CSV/Parquet/datasets file is reported once, not on every row.
    absent = {c for p in problems for c in REQUIRED_COLUMNS if p.endswith(f"missing required column '{c}'")}
    for where, record, record_problems in rows:
        if record is None:  # unreadable line: only its reading problem is known
            problems.extend(f"{where}: {p}" for p in record_problems)
            continue
        record_problems = record_problems + [
            p for p in _record_problems(record)
            if not any(p == f"missing required field '{c}'" for c in absent)]
        fact_id = record.get("id")
        if isinstance(fact_id, str) and fact_id.strip():
            if fact_id in first_seen:
                record_problems.append(f"duplicate id '{fact_id}' (first at {first_seen[fact_id]})")
            else:
                first_seen[fact_id] = where
        if record_problems or absent:
            problems.extend(f"{where}: {p}" for p in record_problems)
            continue
        try:
            facts.append(Fact(**record))
        except ValidationError as exc:  # anything the explicit checks above did not name
            problems.extend(f"{where}: field '{'.'.join(map(str, e['loc']))}': {e['msg']}"
                            for e in exc.errors())
    return facts


def _record_problems(record: dict[str, Any]) -> list[str]:
    """Every problem of one raw record, phrased for a person fixing the file."""
    problems = [f"unknown field '{k}' (allowed: {', '.join(FACT_COLUMNS)})"
                for k in record if k not in FACT_COLUMNS]
    for key in STRING_FIELDS:
        if key not in record or record[key] is None:
            if key in REQUIRED_COLUMNS:
                problems.append(f"missing required field '{key}'")
            continue
        value = record[key]
        if not isinstance(value, str):
            problems.append(f"field '{key}': expected a string, got {_type_name(value)}")
        elif not value.strip():
            problems.append(f"field '{key}': empty {'answer' if key == 'answer' else 'string'}")
    for key in _OPTIONAL_STRING_FIELDS:
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            problems.append(f"field '{key}': expected a string, got {_type_name(value)}")
    for key in LIST_FIELDS:
        problems += _list_problems(key, record.get(key, []))
    popularity = record.get("popularity")
    if popularity is not None and (isinstance(popularity, bool)
                                   or not isinstance(popularity, (int, float))):
        problems.append(f"field 'popularity': expected a number, got {_type_name(popularity)}")
    tier = record.get("tier")
    if tier is not None and tier not in TIERS:
        problems.append(f"field 'tier': unknown tier {tier!r} (allowed: {', '.join(TIERS)})")
    return problems


def _list_problems(key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        return [f"field '{key}': expected a list of strings, got {_type_name(value)}"]
    problems = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            problems.append(f"field '{key}[{i}]': expected a string, got {_type_name(item)}")
        elif not item.strip():
            problems.append(f"field '{key}[{i}]': empty string")
    return problems


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number",
            float: "a number", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)


def fact_records(facts: Iterable[Fact]) -> Iterator[dict[str, Any]]:
    """Facts as plain JSON-ready dicts in the canonical column order."""
    for fact in facts:
        yield fact.model_dump(mode="json")


def write_facts(path: str | os.PathLike, facts: Iterable[Fact]) -> Path:
    """Write facts atomically; the format follows the extension (.jsonl, .csv, .parquet).

    A path without an extension becomes a ``datasets`` folder (``save_to_disk``).
    """
    path = Path(path)
    records = list(fact_records(facts))
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        write_jsonl(path, records)
    elif suffix == ".csv":
        _write_csv(path, records)
    elif suffix == ".parquet":
        _write_parquet(path, records)
    elif suffix == "":
        _write_hf(path, records)
    else:
        raise KnowpackError(f"cannot write facts as {path.name}",
                            hint="use a .jsonl, .csv or .parquet file, or a folder name")
    return path


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    import pandas as pd

    rows = [{k: (json.dumps(v, ensure_ascii=False) if k in LIST_FIELDS else v) for k, v in r.items()}
            for r in records]
    frame = pd.DataFrame(rows, columns=list(FACT_COLUMNS))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")


def _arrow_table(records: list[dict[str, Any]]):
    import pyarrow as pa

    schema = pa.schema([(c, pa.list_(pa.string()) if c in LIST_FIELDS
                         else pa.float64() if c == "popularity" else pa.string())
                        for c in FACT_COLUMNS])
    return pa.Table.from_pylist(records, schema=schema)


def _write_parquet(path: Path, records: list[dict[str, Any]]) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(_arrow_table(records), tmp)


def _write_hf(path: Path, records: list[dict[str, Any]]) -> None:
    import datasets

    with atomic_dir(path) as tmp:
        datasets.Dataset(_arrow_table(records)).save_to_disk(str(tmp))


def facts_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a fact file's bytes (of every file, in name order, for a datasets folder)."""
    if str(path) == DEFAULT_NAME:
        from knowpack.facts.default_set import load_default_facts

        path = load_default_facts()
    path = Path(path)
    if not path.exists():
        raise KnowpackError(f"fact file not found: {path}")
    if path.is_file():
        return sha256_file(path)
    parts = [f"{p.relative_to(path).as_posix()}:{sha256_file(p)}"
             for p in sorted(path.rglob("*")) if p.is_file()]
    return sha256_text("\n".join(parts))
