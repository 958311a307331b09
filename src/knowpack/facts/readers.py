"""Turn a fact file of any supported format into raw records, safely, whatever the file holds.

Each reader returns ``(rows, problems)``: one :data:`Row` per record (where it is, the record —
or None when it could not be read — and the problems met while reading it) plus file-level
problems. Nothing here judges a record's content; :mod:`knowpack.facts.checks` does that.

Hostile input is expected: a path may be a folder, a FIFO, a kernel pseudo-file or unreadable;
a ``.jsonl`` may be a JSON array, pretty-printed JSON, a gzip file or hold a 10 MB line; a CSV row
may have more fields than its header. Each case becomes one clear message instead of a traceback,
a wrong record or an attempt to load gigabytes.

CSV list columns (``aliases``, ``paraphrases``): a cell that starts with ``[`` is read as a JSON
array of strings; any other non-empty cell is split on ``|`` (``Paris|Lutetia``); an empty cell is
an empty list; a cell starting with ``{`` is an error (a JSON object is not a list).
"""

from __future__ import annotations

import csv
import json
import math
import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from knowpack.errors import KnowpackError
from knowpack.facts.schema import REQUIRED_COLUMNS

LIST_FIELDS = ("aliases", "paraphrases")
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
FORMATS = "JSONL (.jsonl/.ndjson), CSV (.csv), Parquet (.parquet) or a datasets folder"
# A fact line is a few hundred bytes (the longest default fact is under 1.5 KB). A line beyond this
# is not a fact: it is skipped unread, so a 10 MB line never reaches the JSON parser or the probe.
MAX_LINE_BYTES = 1 << 20
# Whole-file shape detection (a JSON array saved as .jsonl) reads the file at once: only when small.
_MAX_SHAPE_BYTES = 64 << 20
_SNIFF_BYTES = 8192
# Kernel and device file systems: their "files" are endless, blocking or change on every read.
_PSEUDO_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
# Leading bytes of binary formats people save under a text extension by mistake.
_MAGIC = ((b"PAR1", "a Parquet file (name it .parquet)"), (b"\x1f\x8b", "a gzip archive (unpack it first)"),
          (b"PK\x03\x04", "a zip archive (unpack it first)"), (b"BZh", "a bzip2 archive (unpack it first)"),
          (b"\xfd7zXZ", "an xz archive (unpack it first)"), (b"\x28\xb5\x2f\xfd", "a zstd archive (unpack it first)"),
          (b"SQLite format 3", "an SQLite database"), (b"\x89PNG", "a PNG image"), (b"%PDF", "a PDF document"))

# (where, record or None when the line could not be read, problems found while reading it)
Row = tuple[str, "dict[str, Any] | None", list[str]]


def load_rows(path: Path) -> tuple[list[Row], list[str]]:
    """Return the file's rows plus file-level problems; an unusable path is one :class:`KnowpackError`."""
    if "\x00" in str(path):
        raise KnowpackError(f"invalid fact file path {str(path)!r}: it contains a NUL character")
    try:
        _check_readable(path)
        rows, problems = _read_by_format(path)
    except PermissionError:
        raise KnowpackError(f"cannot read {path}: permission denied",
                            hint="make it readable (chmod u+r) or pass a copy you can read") from None
    except OSError as exc:  # I/O errors, files vanishing mid-read, ...
        raise KnowpackError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not rows and not problems:
        problems.append(f"{path}: no facts in it ({_why_empty(path)})")
    return rows, problems


def _why_empty(path: Path) -> str:
    if path.is_dir():
        return "the dataset has 0 rows"
    if path.stat().st_size == 0:
        return "the file is empty"
    return {".csv": "only a header row", ".parquet": "the table has 0 rows"}.get(
        path.suffix.lower(), "only blank lines")


def _read_by_format(path: Path) -> tuple[list[Row], list[str]]:
    if path.is_dir():
        return _rows_from_hf(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _rows_from_jsonl(path)
    if suffix == ".csv":
        return _rows_from_csv(path)
    if suffix == ".parquet":
        return _rows_from_parquet(path)
    raise KnowpackError(f"unsupported fact file type: {path.name}", hint="use " + FORMATS)


def _check_readable(path: Path) -> None:
    """Refuse, with one clear message, every path that is not a readable fact file or datasets folder."""
    if not path.exists():
        raise KnowpackError(
            f"fact file not found: {path}",
            hint="pass an existing file (" + FORMATS + "), or `default` for the built-in set; "
                 "build one with `knowpack facts build --out facts.jsonl`")
    resolved = path.resolve()
    if any(resolved == root or root in resolved.parents for root in _PSEUDO_ROOTS):
        raise KnowpackError(f"{path} is a kernel or device file, not a fact file",
                            hint="pass a fact file (" + FORMATS + ")")
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise KnowpackError(f"cannot read folder {path}: permission denied")
        if not any((path / m).is_file() for m in HF_MARKERS):
            raise KnowpackError(f"{path} is a folder but not a saved `datasets` dataset "
                                f"(none of {', '.join(HF_MARKERS)} in it)",
                                hint="save it with Dataset.save_to_disk(), or pass a fact file")
        return
    if not stat.S_ISREG(mode):  # FIFO, socket, device: reading may block forever or never end
        raise KnowpackError(f"{path} is not a regular file", hint="pass a fact file (" + FORMATS + ")")
    if not os.access(path, os.R_OK):
        raise KnowpackError(f"cannot read {path}: permission denied",
                            hint="make it readable (chmod u+r) or pass a copy you can read")


def _binary_kind(path: Path) -> str | None:
    """What a text-format file really is when its first bytes are binary (None for text)."""
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "a binary file" if b"\x00" in head else None


def _refuse_binary(path: Path, expected: str) -> None:
    if (kind := _binary_kind(path)) is not None:
        raise KnowpackError(f"{path} is {kind}, not {expected} text",
                            hint="pass a UTF-8 text file in that format, or a file with the right extension")


def bounded_lines(fh: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield ``(line number, raw bytes, byte offset)`` per line; bytes is None for a line over ``limit``.

    An over-long line is skipped in chunks, so memory stays bounded whatever the file holds.
    """
    number = offset = 0
    while raw := fh.readline(limit + 1):
        number += 1
        start, offset = offset, offset + len(raw)
        if len(raw) > limit and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(limit)
                offset += len(raw)
            yield number, None, start
        else:
            yield number, raw, start


def parse_json_object(text: str) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse one JSON object; duplicate keys (JSON keeps only the last) are reported, not merged."""
    repeated: list[str] = []

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        record = dict(pairs)
        if len(record) != len(pairs):  # rare: only then look for which keys repeat
            counts = Counter(key for key, _ in pairs)
            repeated.extend(k for k, n in counts.items() if n > 1 and k not in repeated)
        return record

    try:
        record = json.loads(text, object_pairs_hook=keep_pairs)
    except json.JSONDecodeError as exc:
        return None, [f"bad JSON ({exc.msg} at column {exc.colno})"]
    except RecursionError:
        return None, ["bad JSON (nested too deeply)"]
    if not isinstance(record, dict):
        return None, [f"expected a JSON object, got {type_name(record)} (JSONL holds one fact object per line)"]
    return record, [f"key '{k}' appears more than once in the object (JSON would keep only the last value)"
                    for k in repeated]


def _rows_from_jsonl(path: Path) -> tuple[list[Row], list[str]]:
    _refuse_binary(path, "JSONL")
    rows: list[Row] = []
    first_bad_utf8: str | None = None
    bad_utf8_lines = 0
    with open(path, "rb") as fh:
        for number, raw, start in bounded_lines(fh):
            where = f"{path}:{number}"
            if raw is None:
                rows.append((where, None, [f"line longer than {MAX_LINE_BYTES:,} bytes, not read "
                                           "(a fact is one short JSON object per line)"]))
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad_utf8_lines += 1
                first_bad_utf8 = first_bad_utf8 or (
                    f"{where}: not valid UTF-8 (byte {exc.start} of the line, byte offset "
                    f"{start + exc.start} in the file)")
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
            if text.strip():  # blank lines carry no record
                record, problems = parse_json_object(text)
                rows.append((where, record, problems))
    problems = []
    if first_bad_utf8:
        more = f"; {bad_utf8_lines - 1} more line(s) are not UTF-8 either" if bad_utf8_lines > 1 else ""
        problems.append(f"{first_bad_utf8}{more} — save the file as UTF-8")
    if (shape := _json_shape_problem(path, rows)) is not None:
        return [], [*problems, shape]
    return rows, problems


def _json_shape_problem(path: Path, rows: list[Row]) -> str | None:
    """One message when unreadable lines are really a JSON array or pretty-printed objects."""
    if not any(record is None for _, record, _ in rows) or path.stat().st_size > _MAX_SHAPE_BYTES:
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return None
    decoder = json.JSONDecoder()
    values, spans_lines, position = [], False, 0
    try:
        while (position := _skip_space(text, position)) < len(text):
            value, end = decoder.raw_decode(text, position)
            spans_lines |= "\n" in text[position:end].strip()
            values.append(value)
            position = end
    except (json.JSONDecodeError, RecursionError):
        return None
    fix = "JSONL needs one JSON object per line"
    if len(values) == 1 and isinstance(values[0], list):
        return (f"{path}: the file is one JSON array of {len(values[0])} item(s), not JSON Lines — {fix} "
                f"(e.g. `jq -c '.[]' {path.name} > facts.jsonl`)")
    if spans_lines:
        return (f"{path}: the file holds {len(values)} JSON value(s) written over several lines "
                f"(pretty-printed), not JSON Lines — {fix} (e.g. `jq -c . {path.name} > facts.jsonl`)")
    return None


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _first_non_utf8(path: Path) -> str | None:
    """Where the first non-UTF-8 byte of a text file is (line and byte offset), if any."""
    with open(path, "rb") as fh:
        for number, raw, start in bounded_lines(fh):
            try:
                (raw or b"").decode("utf-8")
            except UnicodeDecodeError as exc:
                return (f"{path}:{number}: not valid UTF-8 (byte offset {start + exc.start} in the file) "
                        "— save the file as UTF-8")
    return None


def _rows_from_csv(path: Path) -> tuple[list[Row], list[str]]:
    _refuse_binary(path, "CSV")
    if (problem := _first_non_utf8(path)) is not None:
        return [], [problem]
    rows: list[Row] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        problems: list[str] = []
        end = 0  # the line the previous record ended on: a quoted cell may span lines
        try:
            for cells in reader:
                start, end = end + 1, reader.line_num
                if not cells:
                    continue  # blank line
                if header is None:
                    header, problems = cells, _header_problems(path, cells)
                    continue
                rows.append(_csv_row(f"{path}:{start}", header, cells))
        except csv.Error as exc:
            problems.append(f"{path}:{end + 1}: cannot parse CSV from this line on ({exc})")
    return rows, problems


def _header_problems(path: Path, header: list[str]) -> list[str]:
    problems = missing_columns(path, header)
    seen: set[str] = set()
    for index, name in enumerate(header, start=1):
        if not name.strip():
            problems.append(f"{path}: header column {index} has no name")
        elif name in seen:
            problems.append(f"{path}: column '{name}' appears more than once in the header")
        seen.add(name)
    return problems


def _csv_row(where: str, header: list[str], cells: list[str]) -> Row:
    """One CSV record; a row whose field count differs from the header's is not guessed at."""
    if len(cells) != len(header):
        more_or_fewer = "more" if len(cells) > len(header) else "fewer"
        return where, None, [f"{len(cells)} fields but the header has {len(header)} ({more_or_fewer} "
                             "than the header; quote any value that contains a comma)"]
    problems: list[str] = []
    record = decode_csv_record(dict(zip(header, cells)), problems)
    return where, record, problems


def decode_csv_record(record: dict[str, str], problems: list[str]) -> dict[str, Any]:
    """Turn CSV text cells into typed values; empty optional cells mean "not given"."""
    out: dict[str, Any] = {}
    for key, cell in record.items():
        if key in LIST_FIELDS:
            out[key] = _split_list_cell(cell, key, problems)
        elif key == "popularity":
            out[key] = _number_cell(cell)
        elif key in ("tier", "domain") and cell.strip() == "":
            out[key] = None
        else:
            out[key] = cell
    return out


def _number_cell(cell: str) -> Any:
    if cell.strip() == "":
        return None
    try:
        return float(cell)  # "nan"/"inf" parse here and are refused as non-finite by the checks
    except ValueError:
        return cell  # reported as a wrong type by the checks


def _split_list_cell(cell: str, key: str, problems: list[str]) -> Any:
    text = cell.strip()
    if text == "":
        return []
    if text.startswith("{"):
        problems.append(f"field '{key}': a JSON object is not a list (write a JSON array of strings "
                        "or `|`-separated text)")
        return []
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(f"field '{key}': bad JSON array ({exc.msg})")
            return []
        except RecursionError:
            problems.append(f"field '{key}': bad JSON array (nested too deeply)")
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

    if _saved_without_data(path):
        return [], []  # datasets cannot load its own save of 0 rows; it holds no facts either way
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


def _saved_without_data(path: Path) -> bool:
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("_data_files") == []


def _rows_from_records(path: Path, columns: list[str], records: list[dict], label: str
                       ) -> tuple[list[Row], list[str]]:
    problems = missing_columns(path, columns)
    rows = []
    for index, record in enumerate(records):
        # Columnar formats store absent optional values as null/NaN; treat both as "not given".
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
        for key in LIST_FIELDS:
            if key in clean and clean[key] is None:
                clean[key] = []
        rows.append((f"{path}: {label} {index + 1}", clean, []))
    return rows, problems


def missing_columns(path: Path, columns: list[str]) -> list[str]:
    """A file-level problem per required column the file's header or schema lacks."""
    return [f"{path}: missing required column '{c}'" for c in REQUIRED_COLUMNS if c not in columns]


def type_name(value: Any) -> str:
    """A value's JSON type in words ("a string", "null"), for messages."""
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number",
            float: "a number", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)
