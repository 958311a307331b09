"""Atomic file writing, JSONL helpers, hashing and run manifests shared by every stage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError

_TRACKED_PACKAGES = (
    "knowpack", "torch", "transformers", "peft", "accelerate", "datasets", "lm-eval",
    "pydantic", "numpy", "pandas", "safetensors", "gguf",
)


def _new_temp_file(path: Path) -> Path:
    """An empty, new file beside ``path`` with the mode a plain ``open()`` gives (the umask applied).

    Not ``mkstemp``: its 0600 would hide results, reports and caches from the team sharing the folder.
    """
    while True:
        candidate = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue  # another writer's temporary name: draw again
        return candidate


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    Readers never see a half-written file: a crash leaves the old file (or none) in place.
    A folder at ``path`` is never replaced by a file (one clear error instead).
    """
    path = Path(path)
    _refuse_folder_target(path)
    _make_parent(path)
    tmp_path = _new_temp_file(path)
    try:
        yield tmp_path
        _refuse_folder_target(path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _refuse_folder_target(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        raise KnowpackError(f"cannot write the file {path}: a folder of that name exists",
                            hint="choose another output path")


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise KnowpackError(f"cannot write {path}: a part of its parent path is a file, not a folder",
                            hint="choose an output path inside a folder") from None
    except PermissionError:
        raise KnowpackError(f"cannot write {path}: permission denied for {path.parent}",
                            hint="choose an output path you can write to") from None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool | Callable[[Path], bool] = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it takes the place of ``path`` whole.

    The folder twin of ``atomic_path``: an interrupted writer leaves no half-filled folder behind.
    Because no command may delete what it did not create, what already is at ``path`` decides:

    * nothing, or an empty folder: written;
    * a non-empty folder: replaced only when the caller owns it — ``replace=True`` for a path only
      knowpack writes (a cache under ``KNOWPACK_HOME``, a stage's own sub-folder such as
      ``adapter/`` inside an output folder the stage has already claimed), or a callable that
      recognises the caller's own earlier output from its content; otherwise refused;
    * a file, a symbolic link, the current folder or one of its parents: always refused.

    The check runs before the caller's work (fail fast) and again just before the swap. The old
    folder is moved aside and deleted only after the new one is in place.
    """
    path = Path(path)
    check_replaceable(path, replace)
    _make_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes 0700 folders; outputs and caches are meant to be shared
        check_replaceable(path, replace)
        _swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_replaceable(path: Path, replace: bool | Callable[[Path], bool] = False) -> None:
    """Raise :class:`KnowpackError` unless :func:`atomic_dir` may write ``path`` (its rule, no writing).

    Lets a command refuse a bad output path before it spends minutes computing what goes there.
    """
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise KnowpackError(f"refusing to replace {path}: it is the current folder or one of its parents",
                            hint="name a new folder to write into")
    if path.is_symlink():
        raise KnowpackError(f"refusing to replace {path}: it is a symbolic link",
                            hint="choose another output path, or remove the link yourself")
    if not path.exists():
        return
    if not path.is_dir():
        raise KnowpackError(f"refusing to replace {path}: a file of that name exists",
                            hint="choose another output path, or move the file away first")
    if not any(path.iterdir()):
        return
    owned = replace(path) if callable(replace) else replace
    if not owned:
        raise KnowpackError(f"refusing to replace {path}: the folder exists and was not written by this step",
                            hint="choose a new output path, or move the folder away first")


def _swap_in(tmp: Path, path: Path) -> None:
    """Put ``tmp`` at ``path``; an old folder there is renamed aside first and deleted last."""
    aside = None
    if path.exists() and any(path.iterdir()):
        aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
        os.replace(path, aside / path.name)
    try:
        os.replace(tmp, path)  # rename(2) replaces an empty folder
    except OSError:
        if aside is not None:  # put the old folder back rather than lose it
            os.replace(aside / path.name, path)
            aside.rmdir()
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def dumps_line(obj: Any) -> str:
    """One canonical JSON line (stable key order) for JSONL outputs."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=False, separators=(", ", ": ")) + "\n"


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    """Write rows (dicts or pydantic models) as JSONL atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            if hasattr(row, "model_dump"):
                row = row.model_dump(mode="json")
            fh.write(dumps_line(row))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file written by knowpack (trusted input: no per-line error reporting)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short content hash of a JSON-serialisable object (used for content-addressed folders)."""
    payload = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return sha256_text(payload)[:length]


def package_versions(names: Iterable[str] = _TRACKED_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _strict_yaml_loader():
    """A safe YAML loader that refuses a key given twice in one mapping (YAML lets the last win)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def load_yaml(text: str) -> Any:
    """Parse YAML safely, refusing duplicate keys (raises ``yaml.YAMLError``)."""
    import yaml

    return yaml.load(text, Loader=_strict_yaml_loader())  # noqa: S506 - a SafeLoader subclass
