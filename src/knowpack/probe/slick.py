"""SliCK knowledge categories and the early-exit rules that provably keep them unchanged."""

from __future__ import annotations

from typing import Literal, get_args

# The four SliCK categories, in the order every table and matrix uses.
Category = Literal["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
CATEGORIES: tuple[str, ...] = get_args(Category)
HIGHLY_KNOWN, MAYBE_KNOWN, WEAKLY_KNOWN, UNKNOWN = CATEGORIES


def categorize(greedy_correct: list[bool], sampled_correct: int, samples: int) -> str:
    """SliCK category from the greedy outcomes and the sampled-answer counts.

    HighlyKnown: every greedy answer correct. MaybeKnown: some. WeaklyKnown: no greedy answer
    correct but at least one sample. Unknown: nothing correct.
    """
    if sampled_correct > samples:
        raise ValueError(f"sampled_correct={sampled_correct} exceeds samples={samples}")
    if greedy_correct and all(greedy_correct):
        return HIGHLY_KNOWN
    if any(greedy_correct):
        return MAYBE_KNOWN
    return WEAKLY_KNOWN if sampled_correct > 0 else UNKNOWN


def greedy_settled(greedy_correct: list[bool]) -> bool:
    """Further greedy prompts cannot change the category once one right and one wrong were seen.

    With both outcomes present 0 < P_greedy < 1 whatever the remaining prompts give (MaybeKnown),
    and samples are never consulted for a fact that has a correct greedy answer.
    """
    return any(greedy_correct) and not all(greedy_correct)


def needs_samples(greedy_correct: list[bool], prompts: int) -> bool:
    """Samples only matter when all N greedy answers were computed and all are wrong."""
    return len(greedy_correct) == prompts and not any(greedy_correct)


def p_share(correct: int, total: int) -> float:
    """Share correct, 0.0 when nothing was drawn."""
    return correct / total if total else 0.0
