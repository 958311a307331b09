"""Base classes for what knowpack reads from users and from its own folders.

* :class:`StrictModel` — every stage config. Unknown keys are an error (a typo must not be
  silently ignored), numbers must be finite (``--lr inf`` would train NaN weights) and a boolean
  is never a number (YAML's ``epochs: true`` would otherwise become 1).
* :class:`JsonArtifact` — a JSON file a stage writes into its output folder and other stages read
  back. It owns its file name, writes atomically, stamps a format version, tolerates keys it does
  not know (a newer knowpack may add some) and turns a missing file or a missing required key into
  one clear error that names the folder and the command that writes it.
* :class:`RowArtifact` — the same for one row of a JSONL file (``categories.jsonl``,
  ``train.jsonl``): rows carry no version of their own, their folder's manifest does.
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from knowpack.errors import KnowpackError
from knowpack.io import dumps_line, write_json, write_text

A = TypeVar("A", bound="JsonArtifact")
M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound="RowArtifact")


def _numeric(annotation: Any) -> bool:
    """Whether a field annotation admits int or float but not bool (``int``, ``float | None`` …)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return bool not in args and any(a in (int, float) for a in args)
    return False


class StrictModel(BaseModel):
    """A config model: unknown keys forbidden, finite numbers only, booleans are not numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info) -> Any:
        if isinstance(value, bool) and info.field_name and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number, got a boolean")
        return value


def validation_problems(error: ValidationError, prefix: str = "",
                        rename: Callable[[str], str] | None = None) -> list[str]:
    """Turn a pydantic error into ``key.path: message`` lines (``prefix``: the section's own path;
    ``rename``: how the first key is spelled where the user wrote it, e.g. as a CLI option).

    The one place where validation errors become text, so every command words them alike.
    """
    lines = []
    for item in error.errors():
        parts = [str(p) for p in item["loc"]]
        if rename is not None and parts:
            parts[0] = rename(parts[0])
        loc = ".".join([*([prefix] if prefix else []), *parts])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif item["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def validate_config(cls: type[M], data: dict[str, Any], path: str) -> tuple[M | None, list[str]]:
    """Validate one config section; returns (config or None, problem lines named by full key path)."""
    try:
        return cls.model_validate(data), []
    except ValidationError as exc:
        return None, validation_problems(exc, path)


def invalid(what: str, error: ValidationError, *, hint: str, prefix: str = "",
            rename: Callable[[str], str] | None = None) -> KnowpackError:
    """A user error for a config that failed validation: one line per problem, one hint."""
    problems = validation_problems(error, prefix, rename)
    if len(problems) == 1:
        return KnowpackError(f"invalid {what}: {problems[0]}", hint=hint)
    return KnowpackError(f"invalid {what}:\n" + "\n".join(f"  {p}" for p in problems), hint=hint)


def read_json_file(path: Path, *, what: str, hint: str) -> Any:
    """Parse a JSON file knowpack reads back; unreadable or malformed files are a user error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KnowpackError(f"{path} not found", hint=hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowpackError(f"cannot read {what} {path}: {exc}", hint=hint) from None
    except json.JSONDecodeError as exc:
        raise KnowpackError(f"{what} {path} is damaged (bad JSON at line {exc.lineno}: {exc.msg})",
                            hint=hint) from None


class _StageFile(BaseModel):
    """A file with a fixed name in a stage's output folder, and the command that writes it."""

    # Unknown keys are dropped on read: files written by another knowpack version still load.
    model_config = ConfigDict(extra="ignore")

    file_name: ClassVar[str]
    writer: ClassVar[str]  # the command that writes it, for error messages: "knowpack probe"

    @classmethod
    def path(cls, folder: str | os.PathLike) -> Path:
        """Where this file lives in ``folder``."""
        return Path(folder) / cls.file_name

    @classmethod
    def exists(cls, folder: str | os.PathLike) -> bool:
        """Whether ``folder`` holds this file."""
        return cls.path(folder).is_file()


class JsonArtifact(_StageFile):
    """One JSON file in a stage's output folder (subclasses set ``file_name`` and ``writer``)."""

    version: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        """The file's content: the fields plus the format version first."""
        return {"format_version": self.version, **self.model_dump(mode="json")}

    def write(self, folder: str | os.PathLike) -> Path:
        """Write the file atomically into ``folder`` (readers never see half of it)."""
        path = self.path(folder)
        write_json(path, self.to_json())
        return path

    @classmethod
    def read(cls: type[A], folder: str | os.PathLike) -> A:
        """Read and validate the file; a clear error names what is missing and who writes it."""
        path = cls.path(folder)
        hint = f"pass a folder written by `{cls.writer}`"
        data = read_json_file(path, what=cls.file_name, hint=hint)
        if not isinstance(data, dict):
            raise KnowpackError(f"{path} is not a {cls.file_name} (expected a JSON object)", hint=hint)
        found = data.pop("format_version", 1)
        if not isinstance(found, int) or found > cls.version:
            raise KnowpackError(f"{path} has format version {found!r}; this knowpack reads up to {cls.version}",
                                hint="upgrade knowpack, or rerun the stage with this version")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc))
            raise KnowpackError(f"{path} is incomplete or damaged: {problems}", hint=hint) from None


class RowArtifact(_StageFile):
    """One row of a JSONL file knowpack writes (field order = declaration order, as written)."""

    @classmethod
    def write_rows(cls, folder: str | os.PathLike, rows: Iterable[R]) -> Path:
        """Write every row as one JSON line, atomically."""
        path = cls.path(folder)
        write_text(path, "".join(dumps_line(row.model_dump(mode="json")) for row in rows))
        return path

    @classmethod
    def read_rows(cls: type[R], folder: str | os.PathLike) -> list[R]:
        """Read and validate every row; the first bad line is named with its number."""
        path = cls.path(folder)
        hint = f"pass a folder written by `{cls.writer}`"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise KnowpackError(f"{path} not found", hint=hint) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KnowpackError(f"cannot read {path}: {exc}", hint=hint) from None
        rows = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(cls.model_validate_json(line))
            except ValidationError as exc:
                problems = "; ".join(validation_problems(exc))
                raise KnowpackError(f"{path}:{number} is damaged: {problems}", hint=hint) from None
        return rows
