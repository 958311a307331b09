"""Write fact files atomically — and never over something knowpack did not write.

The format follows the extension (.jsonl/.ndjson, .csv, .parquet; no extension: a ``datasets``
folder). An existing output path is replaced only when it already holds a fact file *in the
layout knowpack writes* — every fact column, in the canonical order — so rerunning a build onto
its own output works while a user's notes, a hand-written fact file with fewer columns, a file
of another format or a folder of other things is refused with a clear message. An empty file
or folder (``touch facts.jsonl``) loses nothing and may be written over.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.facts.readers import LIST_FIELDS, MAX_LINE_BYTES, bounded_lines
from knowpack.facts.schema import FACT_COLUMNS, Fact
from knowpack.io import atomic_dir, atomic_path, check_replaceable, write_jsonl

_WRITERS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", "": "datasets"}
# What Dataset.save_to_disk writes for one unsplit dataset: nothing else may be in a folder we replace.
_DATASET_FILES = ("dataset_info.json", "state.json")


def fact_records(facts: Iterable[Fact]) -> Iterator[dict[str, Any]]:
    """Facts as plain JSON-ready dicts in the canonical column order."""
    for fact in facts:
        yield fact.model_dump(mode="json")


def write_facts(path: str | os.PathLike, facts: Iterable[Fact]) -> Path:
    """Write facts atomically; the format follows the extension (.jsonl, .csv, .parquet).

    A path without an extension becomes a ``datasets`` folder (``save_to_disk``). An existing path
    that is not a fact file knowpack wrote is refused (see the module docstring).
    """
    path = Path(path)
    kind = check_fact_output(path)
    records = list(fact_records(facts))
    if kind == "datasets":
        _write_datasets(path, records)
    elif kind == "jsonl":
        write_jsonl(path, records)
    elif kind == "csv":
        _write_csv(path, records)
    else:
        _write_parquet(path, records)
    return path


def check_fact_output(path: str | os.PathLike) -> str:
    """Raise :class:`KnowpackError` unless facts may be written to ``path``; return its format.

    Commands call it before building anything, so a refused ``--out`` costs no work.
    """
    path = Path(path)
    kind = _WRITERS.get(path.suffix.lower())
    if kind is None:
        raise KnowpackError(f"cannot write facts as {path.name}",
                            hint="use a .jsonl, .csv or .parquet file, or a folder name")
    _check_parent(path)
    if kind == "datasets":
        check_replaceable(path, _is_knowpack_fact_dataset)
    else:
        _refuse_foreign_file(path, kind)
    return kind


def _check_parent(path: Path) -> None:
    """The nearest existing ancestor must be a folder (``notes.txt/facts.jsonl`` cannot be made)."""
    ancestor = next((p for p in path.absolute().parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise KnowpackError(f"cannot write {path}: {ancestor} is a file, not a folder",
                            hint="choose an output path inside a folder")


def _refuse_foreign_file(path: Path, kind: str) -> None:
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink():
        raise KnowpackError(f"refusing to write facts over {path}: it is a symbolic link",
                            hint="write to a new path, or remove the link yourself")
    if path.is_dir():
        raise KnowpackError(f"refusing to write facts over {path}: it is a folder",
                            hint="write to a new file path")
    if not _is_knowpack_fact_file(path, kind):
        raise KnowpackError(f"refusing to overwrite {path}: it exists and is not a {kind} fact file "
                            "written by knowpack",
                            hint="write to a new path, or move the existing file away first")


def _is_knowpack_fact_file(path: Path, kind: str) -> bool:
    """Whether ``path`` holds facts in knowpack's own layout (or nothing at all)."""
    try:
        if path.stat().st_size == 0:
            return True
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.read_schema(path).names == list(FACT_COLUMNS)
        with open(path, "rb") as fh:
            first = next((raw for _, raw, _ in bounded_lines(fh, MAX_LINE_BYTES) if raw is None or raw.strip()),
                         None)
        if first is None:
            return False
        text = first.decode("utf-8").removeprefix("\ufeff").strip()
        if kind == "csv":
            return text == ",".join(FACT_COLUMNS)
        record = json.loads(text)
        return isinstance(record, dict) and list(record) == list(FACT_COLUMNS)
    except Exception:  # unreadable, not UTF-8, not JSON, not Parquet …: not ours
        return False


def _is_knowpack_fact_dataset(path: Path) -> bool:
    """Whether a folder is a ``datasets`` save of fact columns and holds nothing else."""
    try:
        names = {p.name for p in path.iterdir()}
        arrow = {n for n in names if n.startswith("data-") and n.endswith(".arrow")}
        if names - arrow - set(_DATASET_FILES) or not set(_DATASET_FILES) <= names or not arrow:
            return False
        info = json.loads((path / "dataset_info.json").read_text(encoding="utf-8"))
        return list(info.get("features", {})) == list(FACT_COLUMNS)
    except Exception:  # unreadable or malformed: not ours
        return False


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    import pandas as pd

    rows = [{k: (json.dumps(v, ensure_ascii=False) if k in LIST_FIELDS else v) for k, v in r.items()}
            for r in records]
    frame = pd.DataFrame(rows, columns=list(FACT_COLUMNS))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")


def arrow_table(records: list[dict[str, Any]]):
    """Fact records as a pyarrow table with a fixed schema (lists of strings, float popularity)."""
    import pyarrow as pa

    schema = pa.schema([(c, pa.list_(pa.string()) if c in LIST_FIELDS
                         else pa.float64() if c == "popularity" else pa.string())
                        for c in FACT_COLUMNS])
    return pa.Table.from_pylist(records, schema=schema)


def _write_parquet(path: Path, records: list[dict[str, Any]]) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(arrow_table(records), tmp)


def _write_datasets(path: Path, records: list[dict[str, Any]]) -> None:
    import datasets

    with atomic_dir(path, replace=_is_knowpack_fact_dataset) as tmp:
        datasets.Dataset(arrow_table(records)).save_to_disk(str(tmp))
