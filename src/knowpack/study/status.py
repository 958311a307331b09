"""`study status`: a table of every cell's state, timings and error."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rich.table import Table

from knowpack.study.store import StudyStore

_STYLE = {"done": "green", "running": "yellow", "failed": "red", "interrupted": "magenta", "pending": "dim"}


def status_rows(out_dir: str | Path, keys: list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per cell: key, title, state, seconds, error (cells not yet created are pending)."""
    store = StudyStore(out_dir)
    if keys is None:
        keys = [c.key for c in store.cells()]
    rows = []
    for key in keys:
        cs = store.cell(key)
        if not cs.cell_file.is_file():
            rows.append({"key": key, "title": "", "state": "pending", "stage": "", "seconds": None, "error": ""})
            continue
        status = cs.status()
        rows.append({
            "key": key,
            "title": status.title or cs.record.mixture,
            "state": status.state,
            "stage": (status.stage or "") if status.state != "done" else "",
            "seconds": status.seconds or sum(status.timings.values()) or None,
            "error": status.error or "",
        })
    return rows


def status_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    """Render status rows as a rich table with a per-state count in the caption."""
    counts = Counter(r["state"] for r in rows)
    caption = "  ".join(f"{state}: {n}" for state, n in sorted(counts.items()))
    table = Table(title=title or None, caption=caption)
    for col in ("cell", "config", "state", "time", "error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        style = _STYLE.get(r["state"], "")
        secs = f"{r['seconds']:.0f}s" if r["seconds"] else ""
        state = f"{r['state']} ({r['stage']})" if r.get("stage") else r["state"]
        table.add_row(r["key"], r["title"], f"[{style}]{state}[/]", secs, r["error"])
    return table
