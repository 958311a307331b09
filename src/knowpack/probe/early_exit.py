"""Probing one chunk of facts with early exit: requests are released only while they can still matter.

Early exit never changes a category: greedy prompts stop for a fact once it has a right and a
wrong answer (MaybeKnown whatever comes next); samples are drawn only for facts whose N greedy
answers are all wrong, and stop after the prompt that gave the first correct sample (WeaklyKnown
whatever comes next). A streaming backend may compute requests ahead of need to keep its batch
full; answers early exit would not have asked for are dropped, so the records are the same
either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from knowpack.facts.schema import Fact
from knowpack.io import stable_hash
from knowpack.probe.backends.base import Request, run_feed
from knowpack.probe.config import ProbeConfig
from knowpack.probe.matching import answer_span, exact_match, is_correct
from knowpack.probe.prompts import fewshot_prompt
from knowpack.probe.refusal import is_refusal
from knowpack.probe.shots import ShotPlan
from knowpack.probe.slick import categorize, greedy_settled, needs_samples, p_share


def _seed(config: ProbeConfig, fact_id: str, prompt: int) -> int:
    return int(stable_hash(["sample", config.seed, fact_id, prompt], length=15), 16)

@dataclass
class _FactState:
    fact: Fact
    greedy: list[str] = field(default_factory=list)
    greedy_correct: list[bool] = field(default_factory=list)
    sampled: int = 0
    sampled_correct: int = 0
    generations: list[dict] = field(default_factory=list)

    def add(self, config: ProbeConfig, prompt: int, kind: str, text: str, sample: int | None = None) -> bool:
        correct = is_correct(text, self.fact.aliases, config.match)
        self.generations.append({"id": self.fact.id, "prompt": prompt, "kind": kind, "sample": sample,
                                 "text": text, "answer": answer_span(text), "correct": correct,
                                 "exact": exact_match(text, self.fact.aliases),
                                 "refusal": is_refusal(text)})
        if kind == "greedy":
            self.greedy.append(text)
            self.greedy_correct.append(correct)
        else:
            self.sampled += 1
            self.sampled_correct += int(correct)
        return correct

    def record(self) -> dict:
        greedy_refusals = [g["refusal"] for g in self.generations if g["kind"] == "greedy"]
        return {
            "id": self.fact.id,
            "category": categorize(self.greedy_correct, self.sampled_correct, self.sampled),
            "p_greedy": p_share(sum(self.greedy_correct), len(self.greedy_correct)),
            "p_sample": p_share(self.sampled_correct, self.sampled),
            "greedy_answers": [answer_span(t) for t in self.greedy],
            "greedy_correct": list(self.greedy_correct),
            "sampled_correct": self.sampled_correct,
            "samples": self.sampled,
            # Refused: some greedy answer declines and none is right (the paper only looked at
            # the first answer, and only for the word "information", which misses "I cannot verify").
            "refused": any(greedy_refusals) and not any(self.greedy_correct),
        }


def probe_chunk(facts: list[Fact], backend: Any, config: ProbeConfig, plan: ShotPlan) -> list[dict]:
    """Probe a few facts together; returns per fact ``{"record": categories row, "generations": [...]}``
    (early exit as the module docstring says, when ``config.early_exit``)."""
    feed = _ChunkFeed(facts, backend, config, plan)
    run_feed(backend, feed, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
             top_k=config.top_k)
    return feed.items()


class _ChunkFeed:
    """The requests of one chunk, released as the early-exit rules make them needed.

    Per fact and prompt j, a request is *needed* when the answers before it leave the category
    open, *unneeded* when they settle it, and *speculative* while answers before it are pending.
    """

    def __init__(self, facts: list[Fact], backend: Any, config: ProbeConfig, plan: ShotPlan):
        self.config, self.facts = config, facts
        self.requests: list[dict[tuple[str, int], Request]] = []
        for index, fact in enumerate(facts):
            mine = {}
            for j, shots in enumerate(plan.shots(fact, config)):
                prompt, prefix = fewshot_prompt(backend, fact, shots)
                followup = None
                if config.samples:
                    followup = mine[("sample", j)] = Request(prompt, samples=config.samples, prefix=prefix,
                                                             seed=_seed(config, fact.id, j), tag=(index, "sample", j))
                mine[("greedy", j)] = Request(prompt, prefix=prefix, followup=followup, tag=(index, "greedy", j))
            self.requests.append(mine)
        self.answers: list[dict[tuple[str, int], list[str]]] = [{} for _ in facts]
        self.correct: list[dict[tuple[str, int], bool]] = [{} for _ in facts]
        self.taken: list[set[tuple[str, int]]] = [set() for _ in facts]

    # -- the early-exit rules, on the answers so far ---------------------------------------
    def _flags(self, index: int, kind: str) -> list[bool]:
        """Correctness of the contiguous answers from prompt 0 (greedy: per answer; samples:
        any correct per prompt)."""
        correct, flags = self.correct[index], []
        while (kind, len(flags)) in correct:
            flags.append(correct[(kind, len(flags))])
        return flags

    def _status(self, index: int, kind: str, j: int) -> str:
        """``needed``, ``speculative``, ``unneeded`` or ``blocked`` (samples of a prompt whose
        greedy answer is still pending)."""
        if not self.config.early_exit:
            return "needed"
        greedy = self._flags(index, "greedy")
        if kind == "greedy":
            if greedy_settled(greedy[:j]):
                return "unneeded"
            return "needed" if len(greedy) >= j else "speculative"
        if any(greedy):
            return "unneeded"
        sampled = self._flags(index, "sample")
        if any(sampled[:j]):
            return "unneeded"
        if needs_samples(greedy, self.config.prompts) and len(sampled) >= j:
            return "needed"
        # Once greedy prompt j is under way its samples may start, retracing its path, while the
        # fact's other greedy prompts still run.
        return "speculative" if ("greedy", j) in self.taken[index] else "blocked"

    # -- the RequestFeed protocol ------------------------------------------------------------
    def take(self, rows: int, speculative: bool) -> list:
        taken, used = [], 0
        passes = [("needed", ("greedy", "sample"))]
        if speculative:  # greedy requests first: samples of a prompt start from its greedy answer
            passes += [("speculative", ("greedy",)), ("speculative", ("sample",))]
        for status, kinds in passes:
            for j in range(self.config.prompts):  # breadth first: every fact's prompt j, then j + 1
                for index, mine in enumerate(self.requests):
                    for kind in kinds:
                        key = (kind, j)
                        if key not in mine or key in self.taken[index] or self._status(index, *key) != status:
                            continue
                        if taken and used + mine[key].rows > rows:
                            return taken
                        taken.append(mine[key])
                        used += mine[key].rows
                        self.taken[index].add(key)
        return taken

    def finish(self, request, texts: list[str]) -> None:
        index, kind, j = request.tag
        self.answers[index][(kind, j)] = list(texts)
        aliases = self.facts[index].aliases
        self.correct[index][(kind, j)] = any(is_correct(t, aliases, self.config.match) for t in texts)

    def wanted(self, request) -> bool:
        index, kind, j = request.tag
        return self._status(index, kind, j) != "unneeded"

    # -- results -----------------------------------------------------------------------------
    def items(self) -> list[dict]:
        """The records, replaying exactly the answers early exit asks for, in prompt order."""
        config, out = self.config, []
        for index, fact in enumerate(self.facts):
            state, answers = _FactState(fact), self.answers[index]
            for j in range(config.prompts):
                if config.early_exit and greedy_settled(state.greedy_correct):
                    break
                state.add(config, j, "greedy", answers[("greedy", j)][0])
            if config.samples and (not config.early_exit or needs_samples(state.greedy_correct, config.prompts)):
                for j in range(config.prompts):
                    if config.early_exit and state.sampled_correct:
                        break
                    for i, text in enumerate(answers[("sample", j)]):
                        state.add(config, j, "sample", text, sample=i)
            out.append({"record": state.record(), "generations": state.generations})
        return out
