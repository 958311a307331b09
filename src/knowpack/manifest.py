"""Every output folder's ``manifest.json`` and the rule for who may write into a folder.

The manifest says what produced a folder — stage, config, seed, the hashes of its inputs, package
versions, time and command — and the stage's *key*: everything that decides the folder's results.
It is written last, so a folder with a manifest is finished. ``inputs["model"]`` is the base
model's content hash in every stage's manifest (probe, mix, train, evaluate), which is what lets
an adapter be refused on a model it was not trained on.

:func:`claim_folder` is the one rule every stage follows before it writes: a folder is reused
when it holds this very run (same stage and key), resumed when it holds this run unfinished,
refused when it holds another run or files knowpack did not write, and created otherwise. No
stage ever deletes or overwrites what it did not make.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from knowpack.errors import KnowpackError
from knowpack.io import package_versions
from knowpack.schema import JsonArtifact

CLAIM_FILE = ".knowpack-run.json"


class Manifest(JsonArtifact):
    """Provenance of one output folder (written last: its presence marks the folder finished)."""

    file_name = "manifest.json"
    writer = "knowpack"

    stage: str
    config: Any = None
    seed: int | None = None
    key: Any = None
    inputs: dict[str, str | None] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    packages: dict[str, str] = Field(default_factory=dict)
    python: str = ""
    platform: str = ""
    created: str = ""
    command: str = ""

    @property
    def model_hash(self) -> str | None:
        """Content hash of the base model the folder was made with (every stage records it)."""
        return self.inputs.get("model")


def stamp(folder: str | os.PathLike, *, stage: str, config: Any, key: Any = None, seed: int | None = None,
          inputs: dict[str, str | None] | None = None, details: dict[str, Any] | None = None) -> Manifest:
    """Write ``folder/manifest.json`` for a finished stage and drop the folder's claim file."""
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    manifest = Manifest(
        stage=stage, config=config, seed=seed, key=key, inputs=dict(inputs or {}), details=dict(details or {}),
        packages=package_versions(), python=sys.version.split()[0], platform=platform.platform(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), command=" ".join(sys.argv))
    manifest.write(folder)
    (Path(folder) / CLAIM_FILE).unlink(missing_ok=True)
    return manifest


class _Claim(JsonArtifact):
    """Which run an unfinished folder belongs to (removed when the manifest is written)."""

    file_name = CLAIM_FILE
    writer = "knowpack"

    stage: str
    key: Any = None


def _is_knowpack_file(path: Path) -> bool:
    # Hidden files are knowpack's temporaries and claims; anything else may be the user's.
    return path.name.startswith(".") or path.name == Manifest.file_name


def refuse_foreign(folder: str | os.PathLike, *, marker: str, command: str) -> None:
    """Refuse a folder that exists, is not empty and does not hold ``marker`` (knowpack's own file).

    For folders that are entered again and again with changing settings (a study's ``out``),
    where :func:`claim_folder`'s one-run rule does not apply but foreign files must still be safe.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise KnowpackError(f"output folder {folder} is a file", hint=f"choose another folder for `{command}`")
    if folder.is_dir() and not (folder / marker).exists() and any(not _is_knowpack_file(p) for p in folder.iterdir()):
        raise KnowpackError(f"{folder} exists and holds files knowpack did not write",
                            hint=f"choose a new or empty folder for `{command}`")


def folder_state(folder: str | os.PathLike, *, stage: str, key: Any,
                 command: str) -> Literal["new", "resume", "finished"]:
    """What :func:`claim_folder` would decide, without creating or claiming anything.

    Lets a stage refuse a folder, or return a finished run, before it loads a model — and load
    the model (which may fail) before it creates the folder, so a failed start leaves nothing.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise KnowpackError(f"output folder {folder} is a file", hint=f"choose another --out for `{command}`")
    if Manifest.exists(folder):
        manifest = Manifest.read(folder)
        if manifest.stage == stage and manifest.key == key:
            return "finished"
        what = f"a finished {manifest.stage} run" + (" with other settings" if manifest.stage == stage else "")
        raise KnowpackError(f"{folder} already holds {what}",
                            hint=f"rerun `{command}` with the same settings to reuse it, or choose another --out")
    if _Claim.exists(folder):
        claim = _Claim.read(folder)
        if claim.stage == stage and claim.key == key:
            return "resume"
        raise KnowpackError(f"{folder} holds an unfinished {claim.stage} run with other settings",
                            hint="rerun that command to finish it, or choose another --out")
    if folder.is_dir() and any(not _is_knowpack_file(p) for p in folder.iterdir()):
        raise KnowpackError(f"{folder} exists and holds files knowpack did not write",
                            hint=f"choose a new or empty --out folder for `{command}`")
    return "new"


def claim_folder(folder: str | os.PathLike, *, stage: str, key: Any,
                 command: str) -> Literal["new", "resume", "finished"]:
    """Decide whether ``stage`` may write into ``folder`` for the run identified by ``key``.

    ``finished``: the folder holds this run, done (the caller returns its results).
    ``resume``: it holds this run, unfinished (the caller continues it). ``new``: it is empty or
    absent and now belongs to this run. Anything else — another stage's or another setting's run,
    or files knowpack did not write — is refused with a message saying how to proceed.
    """
    state = folder_state(folder, stage=stage, key=key, command=command)
    if state == "new":
        Path(folder).mkdir(parents=True, exist_ok=True)
        _Claim(stage=stage, key=key).write(folder)
    return state


def finished_folder(folder: str | os.PathLike, *, stage: str, done: Callable[[Path], bool]) -> Path:
    """``folder`` as a Path when ``done(folder)`` says the ``stage`` run in it finished, else the
    one error every reader of a stage folder gives (the folder and the command that makes it)."""
    folder = Path(folder)
    if not done(folder):
        raise KnowpackError(f"{folder} is not a finished {stage} folder",
                            hint=f"pass the --out folder of a finished `knowpack {stage}` run")
    return folder
