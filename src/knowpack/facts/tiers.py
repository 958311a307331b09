"""Popularity → head/torso/tail tiers by the Head-to-Tail rule (cumulative thirds of popularity).

Head-to-Tail (Sun et al. 2024) sorts entities by popularity and cuts the cumulative popularity
mass into thirds: the most popular entities holding the first third of the mass are ``head``, the
next third ``torso``, the rest ``tail``. Cut points are popularity *values*, so entities with equal
popularity always share a tier (as in the released Head-to-Tail script).

With heavy-tailed signals such as city populations the head can shrink to one or two entities, or
vanish when a single entity holds more than a third of the mass. Because a stratified experiment
needs every tier, :func:`h2t_tiers` then moves the empty tier's cut to the nearest distinct
popularity value, so each tier keeps at least one entity whenever there are three or more distinct
values. This is the only deviation from the plain rule and only happens when a tier would be empty.
"""

from __future__ import annotations

from collections.abc import Sequence

from knowpack.facts.schema import TIERS


def h2t_cutpoints(popularities: Sequence[float]) -> tuple[float, float]:
    """Return ``(tail_max, torso_max)``: values ≤ tail_max are tail, ≤ torso_max torso, else head.

    Follows the released Head-to-Tail code: sort ascending, take the cumulative sum, and read the
    values at the first positions where the cumulative share reaches 1/3 and 2/3.
    """
    values = sorted(float(p) for p in popularities)
    if not values:
        raise ValueError("cannot compute tiers of an empty popularity list")
    if any(v < 0 for v in values):
        raise ValueError("popularity must not be negative")
    total = sum(values)
    if total == 0:
        return values[-1], values[-1]
    cut_tail = cut_torso = None
    running = 0.0
    for value in values:
        running += value
        if cut_tail is None and running >= total / 3:
            cut_tail = value
        if running >= 2 * total / 3:
            cut_torso = value
            break
    assert cut_tail is not None and cut_torso is not None
    return _ensure_nonempty(values, cut_tail, cut_torso)


def _ensure_nonempty(values: list[float], cut_tail: float, cut_torso: float) -> tuple[float, float]:
    """Shift cut points to neighbouring distinct values so no tier is empty (needs ≥ 3 values)."""
    distinct = sorted(set(values))
    if len(distinct) < 3:
        return cut_tail, cut_torso
    if cut_torso >= distinct[-1]:  # nothing above the torso cut: the head would be empty
        cut_torso = distinct[-2]
    if cut_tail >= cut_torso:  # the torso would be empty: move the tail cut one value down
        cut_tail = max(v for v in distinct if v < cut_torso)
    return cut_tail, cut_torso


def tier_of(popularity: float, cuts: tuple[float, float]) -> str:
    """The tier of one popularity value given :func:`h2t_cutpoints`."""
    tail_max, torso_max = cuts
    if popularity <= tail_max:
        return "tail"
    if popularity <= torso_max:
        return "torso"
    return "head"


def h2t_tiers(popularities: Sequence[float]) -> list[str]:
    """Tier of every popularity value (same order as the input) by the Head-to-Tail rule."""
    if not popularities:
        return []
    cuts = h2t_cutpoints(popularities)
    return [tier_of(float(p), cuts) for p in popularities]


def tier_counts(tiers: Sequence[str]) -> dict[str, int]:
    """Count tiers in the canonical order head, torso, tail (zeros included)."""
    return {t: sum(1 for x in tiers if x == t) for t in TIERS}
