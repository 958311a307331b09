"""Where knowpack keeps its caches (the converted default model, default facts, probe and benchmark caches)."""

from __future__ import annotations

import os
from pathlib import Path


def knowpack_home() -> Path:
    """Root of knowpack's caches (``$KNOWPACK_HOME``, default ``~/.cache/knowpack``)."""
    return Path(os.environ.get("KNOWPACK_HOME", Path.home() / ".cache" / "knowpack")).expanduser()
