"""Stage folders for tests, written through the real artifact classes (never by hand).

A test that needs "a probe folder with these categories" gets one that every reader accepts, so
fakes cannot drift from what the stages write.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from knowpack.facts.schema import Fact
from knowpack.manifest import stamp
from knowpack.probe.artifacts import CategoryRow, ProbeSummary, ShotSets
from knowpack.probe.config import ProbeConfig
from knowpack.probe.slick import CATEGORIES


def category_row(fact_id: str, category: str, *, prompts: int = 2, refused: bool = False) -> CategoryRow:
    """A consistent categories.jsonl row for ``category`` (greedy answers agree with it)."""
    correct = {"HighlyKnown": [True] * prompts, "MaybeKnown": [True] + [False] * (prompts - 1)}.get(
        category, [False] * prompts)
    return CategoryRow(id=fact_id, category=category, p_greedy=sum(correct) / prompts,
                       p_sample=1.0 if category == "WeaklyKnown" else 0.0,
                       greedy_answers=["gold" if c else "wrong" for c in correct], greedy_correct=correct,
                       sampled_correct=1 if category == "WeaklyKnown" else 0,
                       samples=1 if category == "WeaklyKnown" else 0, refused=refused)


def write_probe_folder(folder: Path, rows: list[CategoryRow | dict], *, config: ProbeConfig | None = None,
                       shot_sets: list[list[Fact]] | None = None, model_hash: str = "fake-model") -> Path:
    """A finished probe folder holding ``rows`` (dicts are validated as CategoryRow)."""
    config = config or ProbeConfig(prompts=2, shots=0, samples=0)
    rows = [r if isinstance(r, CategoryRow) else CategoryRow(**r) for r in rows]
    folder.mkdir(parents=True, exist_ok=True)
    CategoryRow.write_rows(folder, rows)
    shots = ShotSets(mode="fixed", sets=shot_sets or [[] for _ in range(config.prompts)], held_out_ids=[])
    shots.write(folder)
    counts = Counter(r.category for r in rows)
    ProbeSummary(n=len(rows), counts={c: counts.get(c, 0) for c in CATEGORIES},
                 shares={c: counts.get(c, 0) / max(len(rows), 1) for c in CATEGORIES}, refusal_rate=0.0,
                 per_relation={}, per_tier={}, greedy_generations=0, sampled_generations=0, held_out_ids=[],
                 config=config.model_dump(mode="json"), model_hash=model_hash, run_key="fake",
                 exemplars="held_out").write(folder)
    stamp(folder, stage="probe", config=config, key="fake", inputs={"model": model_hash})
    return folder


def write_mix_folder(folder: Path, train: list[dict], eval_sets: dict, facts: list[Fact], *,
                     probe_dir: Path | None = None) -> Path:
    """A finished mix folder with these training rows, eval sets and fact records."""
    from knowpack.mix.artifacts import EvalFactRow, EvalSets, MixSummary, TrainRow

    folder.mkdir(parents=True, exist_ok=True)
    TrainRow.write_rows(folder, [TrainRow(**row) for row in train])
    EvalSets(**eval_sets).write(folder)
    EvalFactRow.write_rows(folder, [EvalFactRow(**f.model_dump()) for f in facts])
    MixSummary(train_examples=len(train), counts={}, concentration={},
               probe_dir=str(probe_dir) if probe_dir else None).write(folder)
    stamp(folder, stage="mix", config={}, key="fake")
    return folder
