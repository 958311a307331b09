"""Which few-shot exemplars each probe prompt uses: fixed shot sets (the paper) or same-relation shots (SliCK)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.probe.config import ProbeConfig
from knowpack.probe.exemplars import EXEMPLAR_POOL_NAME, load_exemplar_pool
from knowpack.probe.prompts import build_shot_sets, group_by_relation, select_spread, shots_for

log = logging.getLogger(__name__)


@dataclass
class ShotPlan:
    """Which facts are probed and which shots each of the N prompts uses."""

    facts: list[Fact]
    held_out: list[Fact] = field(default_factory=list)
    shot_sets: list[list[Fact]] | None = None
    pool_by_relation: dict[str, list[Fact]] | None = None
    # Where the exemplars come from: "held_out" (facts of the probed file, not probed), "given"
    # (the caller's shot pool), "relation" (other facts of the same relation) or a packaged pool.
    exemplars: str = "held_out"

    def shots(self, fact: Fact, config: ProbeConfig) -> list[list[Fact]]:
        return shots_for(fact, config, self.shot_sets, self.pool_by_relation)


def plan_shots(config: ProbeConfig, facts: list[Fact], shot_pool: list[Fact] | None = None) -> ShotPlan:
    """Decide the shot sets; raises KnowpackError before any work when the pool is too small.

    ``fixed`` without ``shot_pool``: N×S facts are held out of ``facts`` (seeded, spread over
    relations) as shots and are not probed — unless that is more than half the file, then the
    shots come from the packaged exemplar pool and every fact is probed. With ``shot_pool``: shots come from it and any fact
    of the pool is not probed (it would be its own shot). ``relation``: shots are other facts of
    the same relation, from ``shot_pool`` or else from ``facts``.
    """
    if config.shot_pool == "relation":
        plan = ShotPlan(facts=list(facts), pool_by_relation=group_by_relation(shot_pool or facts),
                        exemplars="relation")
        for fact in plan.facts:  # validate every fact now: fail before writing anything
            plan.shots(fact, config)
        return plan
    if config.shots == 0:
        return ShotPlan(facts=list(facts), shot_sets=[[] for _ in range(config.prompts)], exemplars="none")
    needed = config.prompts * config.shots
    if shot_pool is None and 2 * needed > len(facts):
        return _packaged_plan(config, facts, needed)
    if shot_pool is None:
        pool = select_spread(facts, needed, config.seed)
    else:
        pool = list(shot_pool)
    shot_sets = build_shot_sets(pool, config)
    used = {f.id for s in shot_sets for f in s}
    pool_ids = used if shot_pool is None else {f.id for f in shot_pool}
    return ShotPlan(facts=[f for f in facts if f.id not in pool_ids],
                    held_out=[f for f in facts if f.id in pool_ids], shot_sets=shot_sets,
                    exemplars="held_out" if shot_pool is None else "given")


def _packaged_plan(config: ProbeConfig, facts: list[Fact], needed: int) -> ShotPlan:
    """Shots from the packaged exemplar pool, for a file too small to give up ``needed`` facts.

    Holding out N×S facts of a file that is at most twice that size would probe fewer facts
    than it spends as shots (and a file of N×S facts could not be probed at all), so the shots
    come from a separate dataset, as the paper's did. Pool facts that share a question or an id
    with a probed fact are left out, so no fact is ever its own shot.
    """
    probed_ids = {f.id for f in facts}
    probed_questions = {f.question.strip().casefold() for f in facts}
    pool = [f for f in load_exemplar_pool()
            if f.id not in probed_ids and f.question.strip().casefold() not in probed_questions]
    if needed > len(pool):
        raise KnowpackError(
            f"{config.prompts} prompts × {config.shots} shots need {needed} exemplars, but the fact file "
            f"has only {len(facts)} facts and the packaged exemplar pool {len(pool)}",
            hint="lower --prompts/--shots, pass more facts, or use --shot-pool relation")
    log.info("%d facts are too few to hold %d out as few-shot exemplars: shots come from the packaged "
             "pool %s", len(facts), needed, EXEMPLAR_POOL_NAME)
    return ShotPlan(facts=list(facts), shot_sets=build_shot_sets(pool, config), exemplars=EXEMPLAR_POOL_NAME)
