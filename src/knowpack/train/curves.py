"""Learning curves: few-shot greedy reliability and retention after every epoch, and early stopping.

Reliability = mean over (trained Unknown fact, few-shot prompt) of greedy correctness, as the
paper's per-epoch curves; retention = the same on a held-out sample of HighlyKnown facts (1.0 for
the base model by definition, so any drop is forgetting caused by the adapter).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from knowpack.io import write_text

CURVE_COLUMNS = ("epoch", "loss", "reliability", "retention", "seconds")


def greedy_answers(facts: list, model, probe_config, shot_sets) -> dict[str, list[str]]:
    """The probe's greedy few-shot answers per fact id (one per prompt)."""
    from knowpack.probe.runner import greedy_answers_for

    return greedy_answers_for(facts, model, probe_config, shot_sets)


def greedy_accuracy(facts: list, model, probe_config, shot_sets) -> float | None:
    """Share of (fact, prompt) greedy answers that are correct; ``None`` when there are no facts."""
    if not facts:
        return None
    from knowpack.probe.matching import is_correct

    answers = greedy_answers(facts, model, probe_config, shot_sets)
    mode = getattr(probe_config, "match", "word")
    hits = total = 0
    for fact in facts:
        for generation in answers[fact.id]:
            hits += bool(is_correct(generation, fact.aliases, mode=mode))
            total += 1
    return hits / total if total else None


def write_curve(path: Path, rows: list[dict]) -> None:
    """Rewrite ``curve.csv`` atomically with every epoch so far."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else _fmt(row[k])) for k in CURVE_COLUMNS})
    write_text(path, buf.getvalue())


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


@dataclass
class StopRule:
    """Early stopping: reliability plateau or retention below a threshold."""

    patience: int
    retention_threshold: float

    def check(self, rows: list[dict]) -> str | None:
        """Reason to stop after the last row of ``rows``, or ``None`` to go on."""
        last = rows[-1]
        if last.get("retention") is not None and last["retention"] < self.retention_threshold:
            return (f"retention {last['retention']:.3f} fell below {self.retention_threshold} "
                    f"after epoch {last['epoch']}")
        values = [r["reliability"] for r in rows if r.get("reliability") is not None]
        if values and values[-1] >= 1.0:
            return f"reliability reached 1.0 after epoch {last['epoch']}"
        if len(values) > self.patience:
            best_before = max(values[: -self.patience])
            if max(values[-self.patience:]) <= best_before:
                return (f"reliability plateaued at {best_before:.3f}: no gain in the last "
                        f"{self.patience} epoch(s)")
        return None


def format_progress(row: dict, epochs: int) -> str:
    """One progress line per epoch."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['loss']:.4f}"]
    if row.get("reliability") is not None:
        parts.append(f"reliability {row['reliability']:.3f}")
    if row.get("retention") is not None:
        parts.append(f"retention {row['retention']:.3f}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)
