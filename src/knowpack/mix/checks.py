"""Checks on a built mixture: no fact twice, no leakage into held-out sets, answer concentration."""

from __future__ import annotations

from collections import Counter

from knowpack.errors import KnowpackError
from knowpack.probe.matching import normalize
from knowpack.probe.slick import CATEGORIES


def check_categories(categories: list[dict], fact_ids: set[str]) -> dict[str, str]:
    """Map fact id → category; every problem (bad name, unknown id, duplicate) is reported."""
    problems, result = [], {}
    for i, row in enumerate(categories, start=1):
        fid, cat = str(row.get("id", "")), row.get("category")
        if cat not in CATEGORIES:
            problems.append(f"row {i} ({fid}): category {cat!r} is not one of {', '.join(CATEGORIES)}")
        elif fid not in fact_ids:
            problems.append(f"row {i}: fact id {fid!r} is not in the fact file")
        elif fid in result:
            problems.append(f"row {i}: fact id {fid!r} appears twice")
        else:
            result[fid] = cat
    if problems:
        raise KnowpackError(f"categories do not match the facts ({len(problems)} problem(s)): "
                            + "; ".join(problems[:5]),
                            hint="pass the fact file the probe was run on (--facts) with its probe folder")
    return result


def check_disjoint(training_fact_ids: list[str], heldout: dict[str, list[str]]) -> None:
    """Training facts appear once and never in a held-out set (internal invariant of the builder)."""
    counts = Counter(training_fact_ids)
    twice = sorted(fid for fid, n in counts.items() if n > 1)
    held = {fid for ids in heldout.values() for fid in ids}
    leaked = sorted(held & set(counts))
    if twice or leaked:
        raise AssertionError(f"mixture invariant broken: repeated {twice[:5]}, leaked {leaked[:5]}")


def answer_concentration(examples: list[dict]) -> dict:
    """The most frequent (normalized) training answer and its share of the examples.

    A high share warns that the adapter may collapse other answers onto it (the paper's
    "exploded" answers).
    """
    counts = Counter(normalize(e["answer"]) or e["answer"] for e in examples)
    if not counts:
        return {"top_answer": None, "count": 0, "share": 0.0, "distinct_answers": 0}
    top, count = counts.most_common(1)[0]
    return {"top_answer": top, "count": count, "share": round(count / len(examples), 4),
            "distinct_answers": len(counts)}
